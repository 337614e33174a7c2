//! A test identity provider: an OAuth 2 token endpoint on loopback that
//! grants `client_credentials` to one client and answers everyone else with
//! `401 invalid_client`, as a real OpenID Connect provider does.
//!
//! Its tokens are unsecured JWTs (`"alg": "none"`), the kind Apache Kafka's
//! default OAUTHBEARER validator accepts on a test listener; what is under
//! test is eddy's side: that every client it makes fetches a token with the
//! configured credentials and scope, and says so when it cannot.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the endpoint answered one request with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The client id the request authenticated as (Basic auth).
    pub client_id: String,
    /// The scope asked for, if any.
    pub scope: Option<String>,
    /// Whether a token was issued.
    pub granted: bool,
}

/// A running token endpoint; stops when dropped.
pub struct IdentityProvider {
    /// The token endpoint's URL (`http://127.0.0.1:PORT/token`).
    pub url: String,
    grants: Arc<Mutex<Vec<Grant>>>,
    stop: Arc<AtomicBool>,
    address: std::net::SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IdentityProvider {
    /// Starts an endpoint that grants `client_id` with `secret` tokens for
    /// subject `subject`, valid for `lifetime`.
    pub fn start(
        client_id: &str,
        secret: &str,
        subject: &str,
        lifetime: Duration,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let grants = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let expected = format!("Basic {}", STANDARD.encode(format!("{client_id}:{secret}")));
        let subject = subject.to_owned();
        let thread = {
            let (grants, stop) = (grants.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    if let Ok(grant) = answer(stream, &expected, &subject, lifetime) {
                        grants.lock().unwrap_or_else(|e| e.into_inner()).push(grant);
                    }
                }
            })
        };
        Ok(Self {
            url: format!("http://{address}/token"),
            grants,
            stop,
            address,
            thread: Some(thread),
        })
    }

    /// Every request answered so far.
    pub fn grants(&self) -> Vec<Grant> {
        self.grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one HTTP/1.1 request from `stream` and answers it.
fn answer(
    stream: TcpStream,
    expected_auth: &str,
    subject: &str,
    lifetime: Duration,
) -> anyhow::Result<Grant> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let (mut length, mut authorization) = (0usize, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse()?,
                "authorization" => authorization = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length.min(64 << 10)];
    reader.read_exact(&mut body)?;
    let form = String::from_utf8_lossy(&body).into_owned();
    let field = |name: &str| {
        form.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.replace("%20", " ").replace('+', " "))
    };
    let client_id = authorization
        .strip_prefix("Basic ")
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| pair.split_once(':').map(|(id, _)| id.to_owned()))
        .unwrap_or_default();
    let scope = field("scope");
    let granted = request_line.starts_with("POST /token ")
        && authorization == expected_auth
        && field("grant_type").as_deref() == Some("client_credentials");
    let (status, body) = if granted {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let mut claims = serde_json::json!({
            "sub": subject,
            "iat": now,
            "exp": now + lifetime.as_secs(),
        });
        if let Some(scope) = &scope {
            claims["scope"] = serde_json::Value::String(scope.clone());
        }
        let token = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let body = serde_json::json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": lifetime.as_secs(),
        });
        ("200 OK", body.to_string())
    } else {
        (
            "401 Unauthorized",
            r#"{"error":"invalid_client","error_description":"client authentication failed"}"#
                .to_owned(),
        )
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    Ok(Grant {
        client_id,
        scope,
        granted,
    })
}

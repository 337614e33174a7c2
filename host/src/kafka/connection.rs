//! How eddy connects to a Kafka cluster: the security protocol, SASL
//! credentials, TLS files, and any other librdkafka property the operator
//! needs (the `[kafka]` table of the daemon's configuration).
//!
//! Every consumer, producer and admin client eddy creates starts from the
//! same resolved [`Connection`], so a secured cluster is reached the same
//! way by the tasks, the changelogs, the registry and the metadata queries.
//! Secrets are read from files (or the environment) once at start, and
//! never printed: [`Connection`]'s `Debug` redacts them.

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The `[kafka]` table as the operator writes it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConnectionConfig {
    /// How the connection to every broker is made.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// Credentials, for `sasl-plaintext` and `sasl-ssl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslConfig>,
    /// Certificates, for `ssl` and `sasl-ssl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Further librdkafka properties (`"socket.keepalive.enable" =
    /// "true"`), passed to every client. Those eddy sets itself, for its
    /// guarantees, are refused by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// Kafka's `security.protocol`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityProtocol {
    /// Neither encrypted nor authenticated.
    #[default]
    Plaintext,
    /// TLS; with a client certificate, mutual TLS.
    Ssl,
    /// SASL credentials over an unencrypted connection.
    SaslPlaintext,
    /// SASL credentials over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// SASL credentials.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// The user eddy authenticates as.
    pub username: String,
    /// A file holding the password (a trailing newline is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The password itself: better kept out of the file, in
    /// `EDDY_KAFKA__SASL__PASSWORD`, or in `password-file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// The SASL mechanisms eddy's librdkafka speaks without extra libraries.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    /// The password in the clear (over TLS only, sensibly).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS files, in PEM.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsConfig {
    /// The CA certificates the brokers' certificates are checked against;
    /// unset: the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// eddy's own certificate, for brokers that require one (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert-file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// A file holding the password of an encrypted `key-file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_password_file: Option<PathBuf>,
    /// Whether a broker's certificate must name the host eddy connected
    /// to. Turning it off lets anyone with a certificate from the CA
    /// impersonate a broker.
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

fn yes() -> bool {
    true
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            cert_file: None,
            key_file: None,
            key_password_file: None,
            verify_hostname: true,
        }
    }
}

/// Why the `[kafka]` table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The table contradicts itself or names a property eddy owns.
    #[error("kafka.{key}: {why}")]
    Invalid {
        /// The offending key, as written in the table.
        key: String,
        /// What is wrong and what to do.
        why: String,
    },
    /// A file the table names could not be read.
    #[error("kafka.{key}: could not read {}: {source}", path.display())]
    Unreadable {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Properties eddy sets itself: changing them would break a guarantee (a
/// consumer that commits on its own loses records; one that reads
/// uncommitted ones breaks exactly-once) or the routing of keys.
const OWNED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "group.instance.id",
    "group.protocol",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "isolation.level",
    "enable.partition.eof",
    "enable.idempotence",
    "transactional.id",
    "transaction.timeout.ms",
    "acks",
    "request.required.acks",
    "partitioner",
    "message.max.bytes",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "allow.auto.create.topics",
    "message.timeout.ms",
];

/// Properties the typed keys of the table set, and which key sets each.
const TYPED: &[(&str, &str)] = &[
    ("security.protocol", "security-protocol"),
    ("sasl.mechanism", "sasl.mechanism"),
    ("sasl.mechanisms", "sasl.mechanism"),
    ("sasl.username", "sasl.username"),
    ("sasl.password", "sasl.password-file"),
    ("ssl.ca.location", "tls.ca-file"),
    ("ssl.certificate.location", "tls.cert-file"),
    ("ssl.key.location", "tls.key-file"),
    ("ssl.key.password", "tls.key-password-file"),
    (
        "ssl.endpoint.identification.algorithm",
        "tls.verify-hostname",
    ),
];

const REDACTED: &str = "<redacted>";

/// The librdkafka properties every client eddy creates starts from,
/// resolved from a [`ConnectionConfig`]: files read, secrets held.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Connection {
    properties: Vec<(String, String)>,
}

impl Connection {
    /// Checks `config` and reads the files it names, so that a typo or a
    /// missing file fails at start, by name.
    pub fn resolve(config: &ConnectionConfig) -> Result<Self, ConnectionError> {
        let invalid = |key: &str, why: String| ConnectionError::Invalid {
            key: key.to_owned(),
            why,
        };
        let protocol = config.security_protocol;
        let mut properties = vec![("security.protocol".to_owned(), protocol.name().to_owned())];
        match (&config.sasl, protocol.uses_sasl()) {
            (Some(sasl), true) => {
                if sasl.username.is_empty() {
                    return Err(invalid("sasl.username", "is empty".into()));
                }
                let password = match (&sasl.password, &sasl.password_file) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "sasl.password-file",
                            "and sasl.password (or EDDY_KAFKA__SASL__PASSWORD) are both set: \
                             give the password one way"
                                .into(),
                        ));
                    }
                    (Some(password), None) => password.clone(),
                    (None, Some(file)) => read_secret("sasl.password-file", file)?,
                    (None, None) => {
                        return Err(invalid(
                            "sasl",
                            "has no password: set sasl.password-file, or \
                             EDDY_KAFKA__SASL__PASSWORD"
                                .into(),
                        ));
                    }
                };
                if password.is_empty() {
                    return Err(invalid(
                        "sasl.password-file",
                        "holds an empty password".into(),
                    ));
                }
                properties.extend([
                    (
                        "sasl.mechanism".to_owned(),
                        sasl.mechanism.name().to_owned(),
                    ),
                    ("sasl.username".to_owned(), sasl.username.clone()),
                    ("sasl.password".to_owned(), password),
                ]);
            }
            (None, true) => {
                return Err(invalid(
                    "security-protocol",
                    format!(
                        "`{}` needs credentials: add a [kafka.sasl] table with mechanism, \
                         username and password-file",
                        protocol.name().replace('_', "-")
                    ),
                ));
            }
            (Some(_), false) => {
                return Err(invalid(
                    "sasl",
                    format!(
                        "credentials are given but security-protocol is `{}`, which sends \
                         none: set security-protocol = \"sasl-ssl\" (or \"sasl-plaintext\")",
                        protocol.name()
                    ),
                ));
            }
            (None, false) => {}
        }
        match (&config.tls, protocol.uses_tls()) {
            (Some(tls), true) => {
                for (key, file, property) in [
                    ("tls.ca-file", &tls.ca_file, "ssl.ca.location"),
                    ("tls.cert-file", &tls.cert_file, "ssl.certificate.location"),
                    ("tls.key-file", &tls.key_file, "ssl.key.location"),
                ] {
                    if let Some(file) = file {
                        readable(key, file)?;
                        properties.push((property.to_owned(), file.display().to_string()));
                    }
                }
                if tls.cert_file.is_some() != tls.key_file.is_some() {
                    return Err(invalid(
                        "tls",
                        "cert-file and key-file go together: a client certificate needs its \
                         private key"
                            .into(),
                    ));
                }
                if let Some(file) = &tls.key_password_file {
                    let password = read_secret("tls.key-password-file", file)?;
                    properties.push(("ssl.key.password".to_owned(), password));
                }
                let algorithm = if tls.verify_hostname { "https" } else { "none" };
                properties.push((
                    "ssl.endpoint.identification.algorithm".to_owned(),
                    algorithm.to_owned(),
                ));
            }
            (Some(_), false) => {
                return Err(invalid(
                    "tls",
                    format!(
                        "certificates are given but security-protocol is `{}`, which does \
                         not use TLS: set security-protocol = \"ssl\" (or \"sasl-ssl\")",
                        protocol.name()
                    ),
                ));
            }
            (None, _) => {}
        }
        for (key, value) in &config.properties {
            let key_lower = key.to_ascii_lowercase();
            if OWNED.contains(&key_lower.as_str()) {
                return Err(invalid(
                    &format!("properties.\"{key}\""),
                    "is set by eddy itself for its delivery guarantees and may not be \
                     changed"
                        .into(),
                ));
            }
            if let Some((_, typed)) = TYPED.iter().find(|(p, _)| *p == key_lower) {
                return Err(invalid(
                    &format!("properties.\"{key}\""),
                    format!("is set through kafka.{typed}; set that instead"),
                ));
            }
            properties.push((key.clone(), value.clone()));
        }
        let connection = Self { properties };
        // librdkafka's own check of every name and value, so that a typo
        // fails at start, naming the property, not at the first client.
        let mut probe = ClientConfig::new();
        connection.apply(&mut probe);
        probe
            .create_native_config()
            .map_err(|e| invalid("properties", e.to_string()))?;
        Ok(connection)
    }

    /// Sets these properties on `config`.
    pub fn apply(&self, config: &mut ClientConfig) {
        for (key, value) in &self.properties {
            config.set(key, value);
        }
    }

    /// Whether this connection sends anything beyond plaintext defaults.
    pub fn is_default(&self) -> bool {
        self.properties
            .iter()
            .all(|(k, v)| k == "security.protocol" && v == "plaintext")
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.properties {
            if is_secret(key) {
                map.entry(key, &REDACTED);
            } else {
                map.entry(key, value);
            }
        }
        map.finish()
    }
}

/// A client context that remembers why connections to the brokers were
/// last refused, so that "could not reach Kafka" can say whether the
/// cluster refused eddy's credentials or its certificate, and what to
/// change.
#[derive(Default)]
pub(super) struct ConnectionWatch {
    refused: std::sync::Mutex<Option<(RDKafkaErrorCode, String, std::time::Instant)>>,
}

/// How long a refusal explains a failure: a broker that refused eddy's
/// certificate a day ago says nothing about why it is unreachable now.
const REFUSAL_RECENT: std::time::Duration = std::time::Duration::from_secs(120);

impl ConnectionWatch {
    /// Why the brokers refused eddy's connections lately and what to do, as
    /// a sentence to append (starting with "; "), or empty when they did
    /// not.
    pub(super) fn explain(&self) -> String {
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match refused {
            Some((code, reason, at)) if at.elapsed() < REFUSAL_RECENT => {
                format!("; {reason}{}", connection_advice(code))
            }
            _ => String::new(),
        }
    }
}

impl ClientContext for ConnectionWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "Kafka client error");
        // Only refusals explain anything; "all brokers are down" follows
        // every one of them and would hide it.
        if let Some(code) = error.rdkafka_error_code()
            && !connection_advice(code).is_empty()
        {
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((code, reason.to_owned(), std::time::Instant::now()));
        }
    }
}

impl ConsumerContext for ConnectionWatch {}

/// What to change for a connection that failed with `code`.
fn connection_advice(code: RDKafkaErrorCode) -> &'static str {
    match code {
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
            ": the cluster refused eddy's credentials. Check [kafka.sasl]: the mechanism must \
             be one the listener enables, and username and password those of a user the \
             cluster knows (for SCRAM, `kafka-configs.sh --alter --add-config \
             'SCRAM-SHA-512=[password=...]' --entity-type users --entity-name USER`)"
        }
        RDKafkaErrorCode::SSL => {
            ": the TLS handshake failed. Check [kafka.tls]: ca-file must hold the CA that \
             signed the brokers' certificates, each broker's certificate must name the host \
             eddy connects to (the one in brokers, then the one it advertises), and the \
             listener must speak TLS (security-protocol ssl or sasl-ssl)"
        }
        RDKafkaErrorCode::UnsupportedSASLMechanism => {
            ": the listener does not enable kafka.sasl.mechanism; use one in its \
             sasl.enabled.mechanisms"
        }
        _ => "",
    }
}

/// Whether a librdkafka property holds a secret (`sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`, ...).
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret") || key.ends_with(".pem")
}

fn readable(key: &'static str, path: &Path) -> Result<(), ConnectionError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| ConnectionError::Unreadable {
            key,
            path: path.to_owned(),
            source,
        })
}

fn read_secret(key: &'static str, path: &Path) -> Result<String, ConnectionError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConnectionError::Unreadable {
        key,
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn secret_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        write!(file, "{text}").expect("write");
        file
    }

    fn property<'a>(c: &'a Connection, key: &str) -> Option<&'a str> {
        c.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_default_is_plaintext_and_nothing_else() {
        let c = Connection::resolve(&ConnectionConfig::default()).expect("valid");
        assert!(c.is_default());
        assert_eq!(property(&c, "security.protocol"), Some("plaintext"));
    }

    #[test]
    fn sasl_ssl_sets_credentials_and_certificates_and_debug_hides_the_password() {
        let password = secret_file("s3cr3t\n");
        let ca = secret_file("not checked until a client connects");
        let config = ConnectionConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl: Some(SaslConfig {
                mechanism: SaslMechanism::ScramSha256,
                username: "eddy".into(),
                password_file: Some(password.path().to_owned()),
                password: None,
            }),
            tls: Some(TlsConfig {
                ca_file: Some(ca.path().to_owned()),
                ..TlsConfig::default()
            }),
            properties: [("socket.keepalive.enable".into(), "true".into())].into(),
        };
        let c = Connection::resolve(&config).expect("valid");
        assert_eq!(property(&c, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(property(&c, "sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(property(&c, "sasl.password"), Some("s3cr3t"));
        assert_eq!(
            property(&c, "ssl.endpoint.identification.algorithm"),
            Some("https")
        );
        assert_eq!(property(&c, "socket.keepalive.enable"), Some("true"));
        let shown = format!("{c:?} {config:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
    }

    #[test]
    fn contradictions_owned_and_unknown_properties_are_refused_by_name() {
        let error = |config: ConnectionConfig| {
            Connection::resolve(&config)
                .expect_err("invalid")
                .to_string()
        };
        let sasl = Some(SaslConfig {
            username: "eddy".into(),
            password: Some("pw".into()),
            ..SaslConfig::default()
        });
        let no_credentials = error(ConnectionConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            ..ConnectionConfig::default()
        });
        assert!(no_credentials.contains("[kafka.sasl]"), "{no_credentials}");
        let unused = error(ConnectionConfig {
            sasl: sasl.clone(),
            ..ConnectionConfig::default()
        });
        assert!(unused.contains("security-protocol"), "{unused}");
        let tls_unused = error(ConnectionConfig {
            security_protocol: SecurityProtocol::SaslPlaintext,
            sasl: sasl.clone(),
            tls: Some(TlsConfig::default()),
            ..ConnectionConfig::default()
        });
        assert!(tls_unused.starts_with("kafka.tls"), "{tls_unused}");
        let missing = error(ConnectionConfig {
            security_protocol: SecurityProtocol::Ssl,
            tls: Some(TlsConfig {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..TlsConfig::default()
            }),
            ..ConnectionConfig::default()
        });
        assert!(
            missing.contains("tls.ca-file") && missing.contains("/nonexistent/ca.pem"),
            "{missing}"
        );
        let with = |key: &str, value: &str| ConnectionConfig {
            properties: [(key.to_owned(), value.to_owned())].into(),
            ..ConnectionConfig::default()
        };
        let owned = error(with("isolation.level", "read_uncommitted"));
        assert!(owned.contains("isolation.level") && owned.contains("set by eddy"));
        let typed = error(with("sasl.password", "x"));
        assert!(typed.contains("sasl.password-file"), "{typed}");
        let unknown = error(with("socket.keepalive.enabled", "true"));
        assert!(unknown.contains("socket.keepalive.enabled"), "{unknown}");
        let bad_value = error(with("socket.timeout.ms", "soon"));
        assert!(bad_value.contains("socket.timeout.ms"), "{bad_value}");
    }
}

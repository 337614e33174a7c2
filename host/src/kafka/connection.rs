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
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`.
    pub mechanism: SaslMechanism,
    /// The user eddy authenticates as (PLAIN and SCRAM).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// A file holding the password (a trailing newline is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The password itself: better kept out of the file, in
    /// `EDDY_KAFKA__SASL__PASSWORD`, or in `password-file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Where OAUTHBEARER's tokens come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("oidc", &self.oidc)
            .finish()
    }
}

/// OAuth 2 client credentials at an OpenID Connect identity provider, for
/// `OAUTHBEARER`: librdkafka fetches a token from the token endpoint and
/// fetches the next before it expires, so no password reaches Kafka and a
/// revoked client stops at its token's expiry.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OidcConfig {
    /// The identity provider's token endpoint: `https://`, or `http://`
    /// on loopback only, since the client secret travels in the request.
    pub token_endpoint_url: String,
    /// eddy's client id at the identity provider.
    pub client_id: String,
    /// A file holding the client secret (a trailing newline is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// The client secret itself: better in
    /// `EDDY_KAFKA__SASL__OIDC__CLIENT_SECRET` or `client-secret-file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The scope the token is requested for, if the provider needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// SASL extensions sent beside the token (Confluent Cloud's
    /// `logicalCluster` and `identityPoolId`, for instance).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
    /// The CA certificates the token endpoint's certificate is checked
    /// against; unset: the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("token_endpoint_url", &self.token_endpoint_url)
            .field("client_id", &self.client_id)
            .field("client_secret_file", &self.client_secret_file)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| REDACTED),
            )
            .field("scope", &self.scope)
            .field("extensions", &self.extensions)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The SASL mechanisms eddy's librdkafka speaks.
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
    /// A bearer token from an identity provider ([`OidcConfig`]).
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
}

impl SaslMechanism {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OAuthBearer => "OAUTHBEARER",
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
    ("sasl.oauthbearer.method", "sasl.oidc"),
    (
        "sasl.oauthbearer.token.endpoint.url",
        "sasl.oidc.token-endpoint-url",
    ),
    ("sasl.oauthbearer.client.id", "sasl.oidc.client-id"),
    (
        "sasl.oauthbearer.client.credentials.client.id",
        "sasl.oidc.client-id",
    ),
    (
        "sasl.oauthbearer.client.secret",
        "sasl.oidc.client-secret-file",
    ),
    (
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oidc.client-secret-file",
    ),
    ("sasl.oauthbearer.scope", "sasl.oidc.scope"),
    ("sasl.oauthbearer.extensions", "sasl.oidc.extensions"),
    ("https.ca.location", "sasl.oidc.ca-file"),
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
        let protocol = config.security_protocol;
        let mut properties = vec![("security.protocol".to_owned(), protocol.name().to_owned())];
        match (&config.sasl, protocol.uses_sasl()) {
            (Some(sasl), true) => properties.extend(sasl_properties(sasl)?),
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
                         private key",
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
                     changed",
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

fn invalid(key: &str, why: impl Into<String>) -> ConnectionError {
    ConnectionError::Invalid {
        key: key.to_owned(),
        why: why.into(),
    }
}

/// The librdkafka properties of `[kafka.sasl]`.
fn sasl_properties(sasl: &SaslConfig) -> Result<Vec<(String, String)>, ConnectionError> {
    let mechanism = (
        "sasl.mechanism".to_owned(),
        sasl.mechanism.name().to_owned(),
    );
    if sasl.mechanism == SaslMechanism::OAuthBearer {
        if !sasl.username.is_empty() || sasl.password.is_some() || sasl.password_file.is_some() {
            return Err(invalid(
                "sasl",
                "OAUTHBEARER takes no username or password: the token names the principal. \
                 Give the identity provider's client credentials in [kafka.sasl.oidc]",
            ));
        }
        let Some(oidc) = &sasl.oidc else {
            return Err(invalid(
                "sasl",
                "OAUTHBEARER needs a [kafka.sasl.oidc] table: token-endpoint-url, client-id \
                 and client-secret-file",
            ));
        };
        let mut properties = vec![mechanism];
        properties.extend(oidc_properties(oidc)?);
        return Ok(properties);
    }
    if sasl.oidc.is_some() {
        return Err(invalid(
            "sasl.oidc",
            format!(
                "is for mechanism OAUTHBEARER, not {}",
                sasl.mechanism.name()
            ),
        ));
    }
    if sasl.username.is_empty() {
        return Err(invalid(
            "sasl.username",
            format!(
                "is missing: {} needs the user eddy authenticates as",
                sasl.mechanism.name()
            ),
        ));
    }
    let password = one_secret(
        ("sasl.password-file", &sasl.password_file),
        (
            "sasl.password (or EDDY_KAFKA__SASL__PASSWORD)",
            &sasl.password,
        ),
    )?
    .ok_or_else(|| {
        invalid(
            "sasl",
            "has no password: set sasl.password-file, or EDDY_KAFKA__SASL__PASSWORD",
        )
    })?;
    Ok(vec![
        mechanism,
        ("sasl.username".to_owned(), sasl.username.clone()),
        ("sasl.password".to_owned(), password),
    ])
}

/// The librdkafka properties of `[kafka.sasl.oidc]`.
fn oidc_properties(oidc: &OidcConfig) -> Result<Vec<(String, String)>, ConnectionError> {
    let url: http::Uri = oidc.token_endpoint_url.parse().map_err(|e| {
        invalid(
            "sasl.oidc.token-endpoint-url",
            format!("`{}` is not a URL: {e}", oidc.token_endpoint_url),
        )
    })?;
    let loopback = url
        .host()
        .map(|h| {
            h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
        .unwrap_or(false);
    match url.scheme_str() {
        Some("https") => {}
        Some("http") if loopback => {}
        _ => {
            return Err(invalid(
                "sasl.oidc.token-endpoint-url",
                format!(
                    "`{}` must be an https:// URL (http:// only on loopback): the client \
                     secret travels in the request",
                    oidc.token_endpoint_url
                ),
            ));
        }
    }
    if oidc.client_id.is_empty() {
        return Err(invalid("sasl.oidc.client-id", "is empty"));
    }
    let secret = one_secret(
        ("sasl.oidc.client-secret-file", &oidc.client_secret_file),
        (
            "sasl.oidc.client-secret (or EDDY_KAFKA__SASL__OIDC__CLIENT_SECRET)",
            &oidc.client_secret,
        ),
    )?
    .ok_or_else(|| {
        invalid(
            "sasl.oidc",
            "has no client secret: set client-secret-file, or \
             EDDY_KAFKA__SASL__OIDC__CLIENT_SECRET",
        )
    })?;
    let mut properties = vec![
        ("sasl.oauthbearer.method".to_owned(), "oidc".to_owned()),
        (
            "sasl.oauthbearer.token.endpoint.url".to_owned(),
            oidc.token_endpoint_url.clone(),
        ),
        (
            "sasl.oauthbearer.client.id".to_owned(),
            oidc.client_id.clone(),
        ),
        ("sasl.oauthbearer.client.secret".to_owned(), secret),
    ];
    if let Some(scope) = &oidc.scope {
        properties.push(("sasl.oauthbearer.scope".to_owned(), scope.clone()));
    }
    // Kafka's rule for extension names and values (RFC 7628); a comma
    // would split librdkafka's list.
    let mut extensions = Vec::new();
    for (key, value) in &oidc.extensions {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) || key == "auth" {
            return Err(invalid(
                &format!("sasl.oidc.extensions.{key}"),
                "an extension's name is letters only, and not `auth`",
            ));
        }
        if value.is_empty()
            || !value
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(invalid(
                &format!("sasl.oidc.extensions.{key}"),
                "an extension's value is printable ASCII without spaces or commas",
            ));
        }
        extensions.push(format!("{key}={value}"));
    }
    if !extensions.is_empty() {
        properties.push((
            "sasl.oauthbearer.extensions".to_owned(),
            extensions.join(","),
        ));
    }
    if let Some(file) = &oidc.ca_file {
        readable("sasl.oidc.ca-file", file)?;
        properties.push(("https.ca.location".to_owned(), file.display().to_string()));
    }
    Ok(properties)
}

/// A secret given at most one way, as a file or as the value itself;
/// `None` when neither.
fn one_secret(
    file: (&'static str, &Option<PathBuf>),
    value: (&str, &Option<String>),
) -> Result<Option<String>, ConnectionError> {
    let secret = match (file.1, value.1) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                file.0,
                format!("and {} are both set: give the secret one way", value.0),
            ));
        }
        (Some(path), None) => read_secret(file.0, path)?,
        (None, Some(secret)) => secret.clone(),
        (None, None) => return Ok(None),
    };
    if secret.is_empty() {
        return Err(invalid(file.0, "holds an empty secret"));
    }
    Ok(Some(secret))
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
                format!("; {reason}{}", connection_advice(code, &reason))
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
            && !connection_advice(code, reason).is_empty()
        {
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((code, reason.to_owned(), std::time::Instant::now()));
        }
    }
}

impl ConsumerContext for ConnectionWatch {}

/// What to change for a connection that failed with `code`.
fn connection_advice(code: RDKafkaErrorCode, reason: &str) -> &'static str {
    match code {
        RDKafkaErrorCode::Authentication if reason.contains("OAUTHBEARER token") => {
            ": eddy could not get a token from the identity provider. Check \
             [kafka.sasl.oidc]: token-endpoint-url must be the provider's token endpoint, \
             reachable from this host (with ca-file holding its CA if it is private), and \
             client-id and the client secret those of a client allowed the \
             client_credentials grant"
        }
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
            ": the cluster refused eddy's credentials. Check [kafka.sasl]: the mechanism must \
             be one the listener enables, and username and password those of a user the \
             cluster knows (for OAUTHBEARER: a token the brokers accept, its subject and \
             scope included) (for SCRAM, `kafka-configs.sh --alter --add-config \
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
                oidc: None,
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

    fn oidc() -> OidcConfig {
        OidcConfig {
            token_endpoint_url: "https://idp.example.com/oauth2/token".into(),
            client_id: "eddy".into(),
            client_secret: Some("cl13nt".into()),
            scope: Some("kafka".into()),
            extensions: [("logicalCluster".into(), "lkc-1".into())].into(),
            ..OidcConfig::default()
        }
    }

    fn oauthbearer(oidc: OidcConfig) -> ConnectionConfig {
        ConnectionConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl: Some(SaslConfig {
                mechanism: SaslMechanism::OAuthBearer,
                oidc: Some(oidc),
                ..SaslConfig::default()
            }),
            ..ConnectionConfig::default()
        }
    }

    #[test]
    fn oauthbearer_fetches_tokens_by_oidc_client_credentials_and_debug_hides_the_secret() {
        let config = oauthbearer(oidc());
        let c = Connection::resolve(&config).expect("valid");
        assert_eq!(property(&c, "sasl.mechanism"), Some("OAUTHBEARER"));
        assert_eq!(property(&c, "sasl.oauthbearer.method"), Some("oidc"));
        assert_eq!(
            property(&c, "sasl.oauthbearer.client.secret"),
            Some("cl13nt")
        );
        assert_eq!(property(&c, "sasl.oauthbearer.scope"), Some("kafka"));
        assert_eq!(
            property(&c, "sasl.oauthbearer.extensions"),
            Some("logicalCluster=lkc-1")
        );
        assert_eq!(property(&c, "sasl.username"), None);
        let shown = format!("{c:?} {config:?}");
        assert!(!shown.contains("cl13nt"), "{shown}");
        // Plain HTTP is for a provider on this host only.
        let local = OidcConfig {
            token_endpoint_url: "http://127.0.0.1:8080/token".into(),
            ..oidc()
        };
        Connection::resolve(&oauthbearer(local)).expect("loopback http is allowed");
    }

    #[test]
    fn oauthbearer_tables_that_cannot_work_are_refused_by_name() {
        let error = |config: ConnectionConfig| {
            Connection::resolve(&config)
                .expect_err("invalid")
                .to_string()
        };
        let remote_http = error(oauthbearer(OidcConfig {
            token_endpoint_url: "http://idp.example.com/token".into(),
            ..oidc()
        }));
        assert!(remote_http.contains("https://"), "{remote_http}");
        let no_secret = error(oauthbearer(OidcConfig {
            client_secret: None,
            ..oidc()
        }));
        assert!(no_secret.contains("client-secret-file"), "{no_secret}");
        let bad_extension = error(oauthbearer(OidcConfig {
            extensions: [("pool".into(), "a,b".into())].into(),
            ..oidc()
        }));
        assert!(bad_extension.contains("extensions.pool"), "{bad_extension}");
        let mut with_password = oauthbearer(oidc());
        if let Some(sasl) = &mut with_password.sasl {
            sasl.username = "eddy".into();
        }
        assert!(error(with_password).contains("takes no username"));
        let oidc_for_scram = error(ConnectionConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl: Some(SaslConfig {
                username: "eddy".into(),
                password: Some("pw".into()),
                oidc: Some(oidc()),
                ..SaslConfig::default()
            }),
            ..ConnectionConfig::default()
        });
        assert!(
            oidc_for_scram.starts_with("kafka.sasl.oidc"),
            "{oidc_for_scram}"
        );
        let typed = error(ConnectionConfig {
            properties: [("sasl.oauthbearer.client.secret".into(), "x".into())].into(),
            ..ConnectionConfig::default()
        });
        assert!(typed.contains("sasl.oidc.client-secret-file"), "{typed}");
    }
}

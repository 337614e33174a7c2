//! The daemon's configuration: defaults, then a TOML file, then `EDDY_*`
//! environment variables, then command-line flags, each overriding the last.
//!
//! Unknown keys in the file are errors, so a typo never silently falls back
//! to a default. Durations are written as `"10s"`, `"500ms"`.

use crate::kafka::ConnectionConfig;
use anyhow::Context as _;
pub use eddy_spec::LimitsConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `eddy serve` can be told.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeConfig {
    /// Where modules, pipeline specs and state live.
    pub data_dir: PathBuf,
    /// The gRPC control plane's address: `HOST:PORT`, or `unix:PATH` for a
    /// Unix socket that only this user may open.
    pub listen: ListenAddr,
    /// Kafka bootstrap servers; empty runs an embedded broker in-process.
    pub brokers: String,
    /// Topics to create in the embedded broker, as `NAME:PARTITIONS`.
    pub topics: Vec<String>,
    /// How much each partition of the embedded broker keeps, in bytes
    /// (oldest data is deleted beyond it, as retention would).
    pub embedded_retention_bytes: u64,
    /// Consumer group session timeout: how long a dead daemon keeps its
    /// partitions before the group moves them.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Consumer groups are named `<group-prefix><pipeline>`.
    pub group_prefix: String,
    /// The URL other daemons reach this one's control plane at (state
    /// queries are forwarded to the owner of a key). Empty: `http://` and
    /// the listen address, with 127.0.0.1 for an unspecified one; set it
    /// when daemons run on several machines.
    #[serde(default)]
    pub advertise: String,
    /// Guest limits: the defaults for pipelines and the ceilings they may
    /// only tighten.
    pub limits: LimitsConfig,
    /// How much of this daemon tenants may take: modules, pipelines, tasks.
    #[serde(default)]
    pub quotas: QuotasConfig,
    /// Memory for every pipeline's state store together, in bytes: one
    /// RocksDB block cache with the write buffers charged to it (up to
    /// half). Raise it when state reads miss the cache; it does not grow
    /// with the number of pipelines.
    #[serde(default = "default_state_memory_bytes")]
    pub state_memory_bytes: u64,
    /// How often memory the C and C++ libraries (RocksDB, librdkafka)
    /// freed is returned to the kernel, which glibc's malloc would keep for
    /// reuse; `"0s"` leaves it kept. See docs/performance.md, "Memory".
    #[serde(default = "default_heap_trim_interval", with = "humantime_serde")]
    pub heap_trim_interval: Duration,
    /// A file holding the secret every daemon of the cluster shares, with
    /// which registry records are signed and checked (the secret itself
    /// may instead be in `EDDY_CLUSTER_SECRET`). Unset: records are not
    /// signed, and anyone who can write to the registry topic can steer
    /// the daemons.
    #[serde(default)]
    pub cluster_secret_file: Option<PathBuf>,
    /// How long a module upload may send nothing before it is cut off.
    #[serde(default = "default_upload_idle_timeout", with = "humantime_serde")]
    pub upload_idle_timeout: Duration,
    /// Who may use the control plane: bearer tokens, each with a role.
    /// None: anyone who reaches `listen` may do anything, so the daemon
    /// refuses to listen beyond loopback without them.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Who may use the control plane by client certificate (mutual TLS),
    /// each with a role: a certificate from the CA that names none of
    /// these is refused. None: every certificate from the CA is an admin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_certificates: Vec<ClientCertificateConfig>,
    /// Serve a control plane without tokens on an address beyond loopback,
    /// where anyone who reaches it may do anything: only on a network
    /// nobody else reaches.
    #[serde(default)]
    pub anonymous_control_plane: bool,
    /// Run guests that failed a call in a worker process of their own
    /// (`eddy guest-worker`, started when a guest first fails), where they
    /// cannot slow the daemon's healthy guests down; `false` keeps them in
    /// the daemon's process. See docs/operating.md, "Hostile guests".
    #[serde(default = "default_guest_worker")]
    pub guest_worker: bool,
    /// How to connect to Kafka: security protocol, SASL credentials, TLS
    /// files and further librdkafka properties (docs/security.md).
    #[serde(default)]
    pub kafka: ConnectionConfig,
    /// TLS on the control plane: this daemon's certificate, and the CA its
    /// clients' (mutual TLS) and the other daemons' certificates are
    /// checked against. Unset: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_tls: Option<ControlTlsConfig>,
}

/// Where the control plane listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket's path: reachable only on this machine, by whoever
    /// the file's permissions let in (only this user, as eddy makes it).
    Unix(PathBuf),
}

impl ListenAddr {
    /// Whether only this machine can reach it.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Tcp(addr) => addr.ip().is_loopback(),
            Self::Unix(_) => true,
        }
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(
                    "`unix:` needs the socket's path, as in unix:/run/eddy/eddy.sock".into(),
                );
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse().map(Self::Tcp).map_err(|_| {
            format!("`{s}` is neither HOST:PORT (such as 127.0.0.1:50051) nor unix:PATH")
        })
    }
}

impl From<ListenAddr> for String {
    fn from(addr: ListenAddr) -> Self {
        addr.to_string()
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// TLS on the control plane (`[control-tls]`), in PEM files.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControlTlsConfig {
    /// This daemon's certificate chain. It must name the host clients and
    /// the other daemons connect to (the `advertise` URL's).
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
    /// The CA that signed the daemons' certificates: the other daemons'
    /// are checked against it when a state query is forwarded (unset:
    /// the system's CAs), and with `require-client-cert` clients' too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: only clients with a certificate from `ca-file` connect.
    #[serde(default)]
    pub require_client_cert: bool,
}

/// One bearer token of the control plane. The token itself is not kept,
/// only its SHA-256, so the configuration is no secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenConfig {
    /// Who holds it, for the logs.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The token's SHA-256, in hex (`printf %s TOKEN | sha256sum`).
    pub sha256: String,
    /// A deployer's pipelines must start with this; none: any name.
    #[serde(default)]
    pub pipeline_prefix: Option<String>,
    /// The topics a deployer's pipelines may read and write: names, or
    /// prefixes ending in `*`; empty: any topic.
    #[serde(default)]
    pub topics: Vec<String>,
}

/// A client certificate the control plane knows, by a name it carries, and
/// what its holder may do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClientCertificateConfig {
    /// Who holds it, for the logs.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// A subject alternative name of the certificate, DNS name or URI
    /// (`ci.team-a.example.com`, `spiffe://example.com/team-a/ci`),
    /// matched exactly. The CA must be one that signs such a name only for
    /// its holder.
    pub san: String,
    /// A deployer's pipelines must start with this; none: any name.
    #[serde(default)]
    pub pipeline_prefix: Option<String>,
    /// The topics a deployer's pipelines may read and write: names, or
    /// prefixes ending in `*`; empty: any topic.
    #[serde(default)]
    pub topics: Vec<String>,
}

/// What a token may do; each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Status and state queries.
    Reader,
    /// Modules and pipelines too, within its prefix and topics.
    Deployer,
    /// Everything.
    Admin,
}

fn default_upload_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_heap_trim_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_state_memory_bytes() -> u64 {
    crate::state::StateMemory::DEFAULT_BUDGET
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("eddy-data"),
            listen: ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 50051))),
            brokers: String::new(),
            topics: Vec::new(),
            embedded_retention_bytes: crate::kafka::DEFAULT_RETENTION_BYTES,
            session_timeout: Duration::from_secs(30),
            group_prefix: "eddy.".into(),
            advertise: String::new(),
            limits: LimitsConfig::default(),
            quotas: QuotasConfig::default(),
            state_memory_bytes: default_state_memory_bytes(),
            heap_trim_interval: default_heap_trim_interval(),
            cluster_secret_file: None,
            upload_idle_timeout: default_upload_idle_timeout(),
            tokens: Vec::new(),
            client_certificates: Vec::new(),
            anonymous_control_plane: false,
            guest_worker: true,
            kafka: ConnectionConfig::default(),
            control_tls: None,
        }
    }
}

pub use eddy_registry::MAX_MODULE_BYTES;

/// How much of a daemon its clients may take (the `[quotas]` table). A
/// request over one is refused with RESOURCE_EXHAUSTED; a task over one
/// waits, its status saying why.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct QuotasConfig {
    /// Most modules stored.
    pub max_modules: u32,
    /// Most bytes of modules stored, all together.
    pub max_module_store_bytes: u64,
    /// Most pipelines in the cluster, as this daemon counts them.
    pub max_pipelines: u32,
    /// Most tasks (input partitions of pipeline steps) running on this
    /// daemon: below the 1000 guest instances its engines hold, so a task
    /// can always be given one.
    pub max_tasks: u32,
    /// Most tasks one pipeline may run on this daemon, so that one
    /// pipeline with many partitions cannot take every slot.
    pub max_pipeline_tasks: u32,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self {
            max_modules: 1000,
            max_module_store_bytes: 4 << 30,
            max_pipelines: 500,
            max_tasks: 900,
            max_pipeline_tasks: 300,
        }
    }
}

fn default_guest_worker() -> bool {
    true
}

/// Top-level keys read from `EDDY_*` variables. Other `EDDY_*` variables
/// (such as the client's `EDDY_SERVER`) belong to other commands.
const ENV_KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "brokers",
    "topics",
    "embedded_retention_bytes",
    "session_timeout",
    "group_prefix",
    "advertise",
    "limits",
    "quotas",
    "state_memory_bytes",
    "heap_trim_interval",
    "cluster_secret_file",
    "upload_idle_timeout",
    "anonymous_control_plane",
    "guest_worker",
    "kafka",
    "control_tls",
];

impl ServeConfig {
    /// Layers the sources in order. `overrides` holds the flags that were
    /// given, already shaped like the configuration.
    pub fn load(file: Option<&Path>, overrides: serde_json::Value) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(ServeConfig::default()));
        if let Some(file) = file {
            anyhow::ensure!(
                file.exists(),
                "configuration file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed("EDDY_")
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                ENV_KEYS
                    .iter()
                    .any(|k| key == *k || key.starts_with(&format!("{k}__")))
            })
            .map(|key| key.as_str().replace('_', "-").replace("--", ".").into());
        figment = figment.merge(env).merge(Serialized::defaults(overrides));
        let config: ServeConfig = figment
            .extract()
            .context("invalid configuration (defaults < file < EDDY_* environment < flags)")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        anyhow::ensure!(
            l.memory_bytes >= 1 << 20,
            "limits.memory-bytes must be at least 1 MiB"
        );
        anyhow::ensure!(
            !l.call_timeout.is_zero(),
            "limits.call-timeout must be positive"
        );
        anyhow::ensure!(
            l.max_batch_records > 0,
            "limits.max-batch-records must be positive"
        );
        anyhow::ensure!(
            l.max_call_state_bytes >= 1 << 20 && l.commit_state_bytes >= 1 << 20,
            "limits.max-call-state-bytes and limits.commit-state-bytes must be at least 1 MiB \
             (a state value may be 1 MiB)"
        );
        anyhow::ensure!(
            l.max_timers > 0 && l.max_counters > 0 && l.log_bytes_per_second >= 1024,
            "limits.max-timers and limits.max-counters must be positive, and \
             limits.log-bytes-per-second at least 1024"
        );
        let q = &self.quotas;
        anyhow::ensure!(
            q.max_modules > 0 && q.max_pipelines > 0 && q.max_pipeline_tasks > 0,
            "quotas.max-modules, quotas.max-pipelines and quotas.max-pipeline-tasks must be positive"
        );
        anyhow::ensure!(
            (1..=crate::runtime::MAX_INSTANCES - 100).contains(&q.max_tasks),
            "quotas.max-tasks must be between 1 and {}: each task holds one of the {} guest \
             instances a daemon's engine has, and renewals need some to spare",
            crate::runtime::MAX_INSTANCES - 100,
            crate::runtime::MAX_INSTANCES
        );
        anyhow::ensure!(
            self.state_memory_bytes >= 8 << 20,
            "state-memory-bytes must be at least 8 MiB"
        );
        anyhow::ensure!(
            self.session_timeout >= Duration::from_secs(1),
            "session-timeout must be at least 1s"
        );
        for (i, token) in self.tokens.iter().enumerate() {
            anyhow::ensure!(
                token.sha256.len() == 64 && token.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "tokens[{i}] ({}): sha256 must be the token's SHA-256 in 64 hex digits \
                 (printf %s TOKEN | sha256sum)",
                token.name
            );
            anyhow::ensure!(
                !self.tokens[..i]
                    .iter()
                    .any(|t| t.sha256.eq_ignore_ascii_case(&token.sha256)),
                "tokens[{i}] ({}): the same token is configured twice",
                token.name
            );
        }
        for (i, client) in self.client_certificates.iter().enumerate() {
            anyhow::ensure!(
                !client.san.trim().is_empty(),
                "client-certificates[{i}] ({}): san is empty: give a DNS name or URI the \
                 certificate carries as a subject alternative name",
                client.name
            );
            anyhow::ensure!(
                !self.client_certificates[..i]
                    .iter()
                    .any(|c| c.san == client.san),
                "client-certificates[{i}] ({}): san `{}` is configured twice",
                client.name,
                client.san
            );
        }
        if !self.client_certificates.is_empty() {
            anyhow::ensure!(
                self.control_tls
                    .as_ref()
                    .is_some_and(|t| t.require_client_cert),
                "client-certificates need mutual TLS: set [control-tls] with ca-file and \
                 require-client-cert = true, or clients present no certificate to match"
            );
        }
        if let Some(tls) = &self.control_tls {
            anyhow::ensure!(
                !matches!(self.listen, ListenAddr::Unix(_)),
                "control-tls is for a TCP listen address: on a Unix socket, the socket's \
                 permissions decide who connects"
            );
            anyhow::ensure!(
                !tls.require_client_cert || tls.ca_file.is_some(),
                "control-tls.require-client-cert needs control-tls.ca-file: the CA client \
                 certificates must come from"
            );
        }
        anyhow::ensure!(
            !self.upload_idle_timeout.is_zero(),
            "upload-idle-timeout must be positive"
        );
        anyhow::ensure!(
            l.max_module_bytes <= MAX_MODULE_BYTES,
            "limits.max-module-bytes must be at most {} MiB: the registry carries no larger \
             module to the other daemons",
            MAX_MODULE_BYTES >> 20
        );
        Ok(())
    }

    /// Where uploaded modules are stored.
    pub fn modules_dir(&self) -> PathBuf {
        self.data_dir.join("modules")
    }

    /// Where compiled modules are kept, so a restart need not compile again.
    pub fn compiled_dir(&self) -> PathBuf {
        self.data_dir.join("compiled")
    }

    /// Where pipeline specs are stored.
    pub fn pipelines_dir(&self) -> PathBuf {
        self.data_dir.join("pipelines")
    }

    /// Where task state lives (kept apart, so deleting it keeps the specs).
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("state")
    }

    /// Where the embedded broker keeps its topics, logs and committed
    /// offsets (without `--brokers`), so a restart resumes where it stopped.
    pub fn broker_dir(&self) -> PathBuf {
        self.data_dir.join("broker")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn file_then_flags_override_defaults_and_unknown_keys_fail() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            file,
            "brokers = \"kafka:9092\"\nsession-timeout = \"6s\"\n[limits]\ncall-timeout = \"2s\""
        )
        .expect("write");
        let config = ServeConfig::load(
            Some(file.path()),
            serde_json::json!({ "brokers": "flag:9092" }),
        )
        .expect("valid");
        assert_eq!(config.brokers, "flag:9092");
        assert_eq!(config.session_timeout, Duration::from_secs(6));
        assert_eq!(config.limits.call_timeout, Duration::from_secs(2));
        assert_eq!(config.limits.max_batch_records, 1024);
        assert_eq!(config.state_memory_bytes, 64 << 20);
        assert_eq!(config.heap_trim_interval, Duration::from_secs(10));

        let mut bad = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(bad, "brokerz = \"x\"").expect("write");
        let err =
            ServeConfig::load(Some(bad.path()), serde_json::json!({})).expect_err("unknown key");
        assert!(format!("{err:#}").contains("brokerz"), "{err:#}");
    }

    #[test]
    fn heap_trimming_turns_off_with_zero_and_a_bad_interval_names_its_key() {
        let mut off = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(off, "heap-trim-interval = \"0s\"").expect("write");
        let config = ServeConfig::load(Some(off.path()), serde_json::json!({})).expect("valid");
        assert!(config.heap_trim_interval.is_zero());

        let mut bad = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(bad, "heap-trim-interval = 5").expect("write");
        let err = ServeConfig::load(Some(bad.path()), serde_json::json!({}))
            .expect_err("a number is not a duration");
        assert!(format!("{err:#}").contains("heap-trim-interval"), "{err:#}");
    }

    #[test]
    fn listen_takes_tcp_or_unix_and_tls_only_on_tcp() {
        let parse = |s: &str| ListenAddr::try_from(s.to_owned());
        assert_eq!(
            parse("unix:/run/eddy.sock"),
            Ok(ListenAddr::Unix("/run/eddy.sock".into()))
        );
        assert!(parse("unix:/run/eddy.sock").is_ok_and(|a| a.is_local()));
        assert!(parse("0.0.0.0:1").is_ok_and(|a| !a.is_local()));
        assert!(parse("localhost").is_err_and(|e| e.contains("unix:PATH")));
        assert!(parse("unix:").is_err());
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            file,
            "listen = \"unix:/tmp/e.sock\"\n[control-tls]\ncert-file = \"c\"\nkey-file = \"k\""
        )
        .expect("write");
        let err = ServeConfig::load(Some(file.path()), serde_json::json!({})).expect_err("refused");
        assert!(format!("{err:#}").contains("TCP"), "{err:#}");
    }
}

//! The broker a test runs against, in its own process: `eddy dev-broker` (the
//! patched librdkafka mock eddy embeds; quick to start) or Apache Kafka itself
//! (`tests/kafka/kafka.sh`, the reference), chosen for the whole run by
//! `EDDY_TEST_BROKER=dev|kafka`.
//!
//! A test asks for topics and options the same way on both; the harness turns
//! them into `dev-broker` flags or into CreateTopics requests and topic
//! configs, so a test never knows which broker it has unless it asks.

use crate::{eddy_bin, read_until};
use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which broker the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// `eddy dev-broker`: librdkafka's mock cluster with eddy's patch.
    Dev,
    /// Apache Kafka, the version `tests/kafka/pom.xml` pins.
    Kafka,
}

impl BrokerKind {
    /// The kind `EDDY_TEST_BROKER` names (`dev`, the default, or `kafka`).
    ///
    /// # Panics
    /// On any other value: a typo must not silently test the wrong broker.
    pub fn from_env() -> Self {
        match std::env::var("EDDY_TEST_BROKER").as_deref() {
            Err(_) | Ok("" | "dev") => Self::Dev,
            Ok("kafka") => Self::Kafka,
            Ok(other) => panic!("EDDY_TEST_BROKER={other}: expected `dev` or `kafka`"),
        }
    }
}

/// What a test may ask of its broker beyond topics.
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    /// The client port; a free one if `None`.
    pub port: Option<u16>,
    /// Bytes each partition of the test's topics keeps before the oldest
    /// records are deleted (retention by size, checked every second).
    pub retention_bytes: Option<u64>,
    /// Broker settings (`server.properties` lines) for Apache Kafka, such as
    /// what makes compaction happen within a test; the dev broker refuses
    /// them, having no such settings.
    pub kafka_configs: Vec<(String, String)>,
    /// Apache Kafka only: also a SASL_SSL listener with SCRAM-SHA-512
    /// credentials and a certificate from a CA of its own
    /// (`kafka.sh --secure`); see [`Broker::secured`].
    pub secure: bool,
}

/// How a daemon reaches a broker's SASL_SSL listener.
#[derive(Clone, Debug)]
pub struct Secured {
    /// The listener's bootstrap address.
    pub bootstrap: String,
    /// A daemon configuration (`eddy serve --config`) with `brokers` and
    /// the `[kafka]` table that reaches the listener.
    pub config: std::path::PathBuf,
    /// The folder with the CA (`ca.pem`), the password (`password`) and
    /// the rest of what `kafka.sh --secure` made.
    pub dir: std::path::PathBuf,
}

/// A broker in its own process (group); killed on drop.
pub struct Broker {
    kind: BrokerKind,
    child: Child,
    bootstrap: String,
    secure: bool,
    /// Apache Kafka's data folder, removed with the broker.
    _data: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts a broker of the kind `EDDY_TEST_BROKER` names, with these
    /// topics (`(name, partitions)`).
    pub fn start(topics: &[(&str, i32)]) -> anyhow::Result<Self> {
        Self::start_with(topics, &BrokerOptions::default())
    }

    /// Starts a broker with these topics and options.
    pub fn start_with(topics: &[(&str, i32)], options: &BrokerOptions) -> anyhow::Result<Self> {
        Self::start_on(BrokerKind::from_env(), topics, options)
    }

    /// Starts a broker of `kind` whatever `EDDY_TEST_BROKER` says: for tests
    /// of what only one of them has (compaction is Apache Kafka's alone).
    pub fn start_on(
        kind: BrokerKind,
        topics: &[(&str, i32)],
        options: &BrokerOptions,
    ) -> anyhow::Result<Self> {
        match kind {
            BrokerKind::Dev => Self::start_dev(topics, options),
            BrokerKind::Kafka => Self::start_kafka(topics, options),
        }
    }

    /// Starts Apache Kafka whatever `EDDY_TEST_BROKER` says, with these
    /// topics and broker settings: for what only it has (compaction,
    /// settings to get wrong).
    pub fn kafka(topics: &[(&str, i32)], settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let options = BrokerOptions {
            kafka_configs: settings
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            ..BrokerOptions::default()
        };
        Self::start_on(BrokerKind::Kafka, topics, &options)
    }

    /// The broker's bootstrap address.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The SASL_SSL listener, for a broker started with
    /// [`BrokerOptions::secure`].
    pub fn secured(&self) -> anyhow::Result<Secured> {
        let data = self
            ._data
            .as_ref()
            .filter(|_| self.secure)
            .context("this broker was not started with BrokerOptions::secure")?;
        let dir = data.path().join("secure");
        let bootstrap = std::fs::read_to_string(dir.join("bootstrap"))
            .context("kafka.sh --secure wrote no bootstrap file")?
            .trim()
            .to_owned();
        Ok(Secured {
            bootstrap,
            config: dir.join("eddy.toml"),
            dir,
        })
    }

    /// Which broker this is.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// Creates topics on the running broker, each with these partitions and
    /// topic configs, and waits until every partition has a leader.
    pub fn create_topics(
        &self,
        topics: &[(&str, i32)],
        configs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        create_topics(&self.bootstrap, topics, configs)
    }

    /// Deletes topics and waits until the broker no longer lists them.
    pub fn delete_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()?;
        let results = crate::block_on(admin.delete_topics(
            topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!("could not delete topic {topic}: {code}");
            }
        }
        for topic in topics {
            crate::wait_for(&format!("{topic} gone"), Duration::from_secs(30), || {
                Ok(crate::watermarks(&self.bootstrap, topic)?
                    .is_empty()
                    .then_some(()))
            })?;
        }
        Ok(())
    }

    fn start_dev(topics: &[(&str, i32)], options: &BrokerOptions) -> anyhow::Result<Self> {
        if options.secure {
            bail!("the dev broker has no SASL_SSL listener; start Apache Kafka for this test");
        }
        if !options.kafka_configs.is_empty() {
            bail!(
                "the dev broker has no settings {:?}; start Apache Kafka for this test",
                options.kafka_configs
            );
        }
        let mut command = Command::new(eddy_bin());
        command.arg("dev-broker");
        if let Some(port) = options.port {
            command.arg("--port").arg(port.to_string());
        }
        if let Some(bytes) = options.retention_bytes {
            command.arg("--retention").arg(bytes.to_string());
        }
        for (name, partitions) in topics {
            command.arg("--topic").arg(format!("{name}:{partitions}"));
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("could not start eddy dev-broker")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let bootstrap = read_until(stdout, Duration::from_secs(20), |l| {
            Some(l.trim().to_owned())
        })?;
        Ok(Self {
            kind: BrokerKind::Dev,
            child,
            bootstrap,
            secure: false,
            _data: None,
        })
    }

    fn start_kafka(topics: &[(&str, i32)], options: &BrokerOptions) -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka/kafka.sh");
        let data = tempfile::Builder::new().prefix("eddy-kafka-").tempdir()?;
        let log = data.path().join("kafka.log");
        let mut command = Command::new("bash");
        command
            .arg(&script)
            .args(["--port", &options.port.unwrap_or(0).to_string()])
            .arg("--data")
            .arg(data.path());
        for (key, value) in &options.kafka_configs {
            command.arg("--config").arg(format!("{key}={value}"));
        }
        if options.secure {
            command.arg("--secure");
        }
        let mut child = std::os::unix::process::CommandExt::process_group(&mut command, 0)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("could not run {}", script.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let started = read_until(stdout, Duration::from_secs(180), |l| {
            Some(l.trim().to_owned())
        });
        // From here the broker is killed on drop, whatever fails next.
        let mut broker = Self {
            kind: BrokerKind::Kafka,
            child,
            bootstrap: String::new(),
            secure: options.secure,
            _data: Some(data),
        };
        broker.bootstrap = started
            .with_context(|| format!("Apache Kafka did not start; see {}", log.display()))?;
        let mut configs = Vec::new();
        let retention;
        if let Some(bytes) = options.retention_bytes {
            retention = bytes.to_string();
            // Segments of 1 MiB (Kafka's smallest) so whole segments fall
            // out as retention is exceeded.
            configs.extend([
                ("retention.bytes", retention.as_str()),
                ("segment.bytes", "1048576"),
            ]);
        }
        broker.create_topics(topics, &configs)?;
        Ok(broker)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.kind == BrokerKind::Kafka {
            // The script and its JVM share a process group of their own.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates topics through the Admin API and waits until each partition has
/// a leader (Apache Kafka answers CreateTopics before leaders are elected).
fn create_topics(
    bootstrap: &str,
    topics: &[(&str, i32)],
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            configs.iter().fold(
                NewTopic::new(name, *partitions, TopicReplication::Fixed(1)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let results = crate::block_on(admin.create_topics(
        &new_topics,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))?;
    for result in results {
        if let Err((topic, code)) = result {
            bail!("could not create topic {topic}: {code}");
        }
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, partitions) in topics {
        loop {
            let metadata = consumer.fetch_metadata(Some(name), Duration::from_secs(10))?;
            let ready = metadata.topics().iter().any(|t| {
                t.name() == *name
                    && t.error().is_none()
                    && t.partitions().len() == usize::try_from(*partitions).unwrap_or(0)
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                bail!("topic {name} has no leader for every partition after 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

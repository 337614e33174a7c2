//! Kafka I/O: client settings shared by every consumer and producer eddy
//! creates, a partition's fetched records taken a batch at a time, records
//! produced with their acknowledgements counted per commit, the embedded
//! broker, topic metadata, and why the cluster refuses writes.

mod admin;
mod advice;
mod broker;
mod connection;
mod delivery_thread;
mod fetch;
mod partitioner;
mod produce;
mod replicas;
mod topics;
mod within;

pub use admin::{InternalTopic, delete_topics, ensure_topic};
pub use advice::advice;
pub use broker::{DEFAULT_RETENTION_BYTES, EmbeddedBroker};
pub use connection::{
    Connection, ConnectionConfig, ConnectionError, OidcConfig, SaslConfig, SaslMechanism,
    SecurityProtocol, TlsConfig,
};
pub use fetch::{FetchQueue, Fetched};
pub use partitioner::{murmur2_hash, murmur2_partition};
pub use produce::{AckState, Acks, Deliveries, Outgoing, OutgoingHeaders, Producer, Topic};
pub use replicas::refused_writes;
pub use topics::{KafkaMetadata, TopicError, TopicSpec, group_offsets, group_offsets_with};
pub(crate) use within::{Unanswered, call_within};

use rdkafka::ClientConfig;
use std::time::Duration;

/// How eddy reaches Kafka.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group session timeout.
    pub session_timeout: Duration,
    /// Largest record producers accept; eddy checks guest outputs against
    /// it first, so a record too large fails with the guest's error.
    pub max_record_bytes: u64,
    /// This daemon's id, which makes its consumers static group members
    /// ([`KafkaSettings::group_member`]); `None` for clients of no daemon.
    pub daemon_id: Option<String>,
    /// Security and further properties every client starts from.
    pub connection: Connection,
}

impl KafkaSettings {
    /// Settings for `brokers` with the default session timeout, for clients
    /// that join no group.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            session_timeout: Duration::from_secs(30),
            max_record_bytes: 1_000_000,
            daemon_id: None,
            connection: Connection::default(),
        }
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        self.connection.apply(&mut config);
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "eddy")
            // Keep librdkafka's own logs quiet unless something is wrong.
            .set("log_level", "4");
        config
    }

    /// A consumer in `group` that never commits on its own and never jumps
    /// to another offset silently: a position out of the log is an error.
    pub fn consumer(&self, group: &str) -> ClientConfig {
        let session_ms = self.session_timeout.as_millis().max(1000);
        let heartbeat_ms = (session_ms / 3).clamp(100, 3000);
        let mut config = self.base();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", session_ms.to_string())
            .set("heartbeat.interval.ms", heartbeat_ms.to_string())
            .set("allow.auto.create.topics", "false")
            // Bounds the records prefetched per partition: a task that falls
            // behind holds at most this much in memory.
            .set("queued.max.messages.kbytes", "8192");
        config
    }

    /// A consumer that joins `group` (see [`KafkaSettings::consumer`]) as a
    /// static member: its `group.instance.id` is the group's name and the
    /// daemon id, so it is unique per consumer and the same after a
    /// restart. A daemon killed and restarted within the session timeout
    /// then takes its partitions back at once, without a rebalance, where a
    /// dynamic member's would stay with the dead member until the timeout.
    ///
    /// This holds for the classic group protocol, librdkafka's default,
    /// which eddy keeps: under KIP-848 (`group.protocol=consumer`) Apache
    /// Kafka refuses a member rejoining under its instance id
    /// (UNRELEASED_INSTANCE_ID) until the broker-side session timeout (45 s
    /// at least by default) has passed.
    pub fn group_member(&self, group: &str) -> ClientConfig {
        let mut config = self.consumer(group);
        if let Some(daemon) = &self.daemon_id {
            config.set("group.instance.id", group_instance_id(group, daemon));
        }
        config
    }

    /// An idempotent producer that partitions keyed records with murmur2, as
    /// Java clients do, so keys land where every other Kafka client expects.
    pub fn producer(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "100000")
            // Room for the record overhead around the largest record.
            .set(
                "message.max.bytes",
                (self.max_record_bytes.max(1_000_000) + (64 << 10)).to_string(),
            )
            .set("message.timeout.ms", "60000");
        config
    }

    /// A transactional producer with the stable id `id`: initialising it
    /// fences every earlier producer of that id. The broker aborts a
    /// transaction left open longer than `timeout`.
    pub fn transactional_producer(&self, id: &str, timeout: Duration) -> ClientConfig {
        let mut config = self.producer();
        let timeout_ms = timeout.as_millis().max(1000);
        config
            .set("transactional.id", id)
            .set("transaction.timeout.ms", timeout_ms.to_string())
            // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
            .set("message.timeout.ms", timeout_ms.min(60_000).to_string());
        config
    }

    /// A consumer that reads one changelog partition by assignment, to
    /// restore state: committed records only, and an end-of-partition event
    /// so the restore knows it caught up.
    pub fn restore_consumer(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", "eddy-restore")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("allow.auto.create.topics", "false")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "10485760");
        config
    }

    /// A bare client of the cluster for `eddy produce` and `eddy consume`,
    /// which set what they need themselves.
    pub fn cli_client(&self) -> ClientConfig {
        let mut config = self.base();
        config.set("client.id", "eddy-cli");
        config
    }

    /// A client for metadata and offset queries.
    pub fn metadata_client(&self) -> ClientConfig {
        let mut config = self.base();
        config.set("allow.auto.create.topics", "false");
        config
    }
}

/// `GROUP.DAEMON` in the characters and length Kafka accepts for an
/// instance id (those of a topic name, at most 249).
fn group_instance_id(group: &str, daemon: &str) -> String {
    let id: String = format!("{group}.{daemon}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // The daemon id, the part that makes it unique, is kept whole.
    if id.len() <= 249 {
        return id;
    }
    let keep = 249 - daemon.len().min(200) - 1;
    format!("{}.{}", &id[..keep], &daemon[..daemon.len().min(200)])
}

#[cfg(test)]
mod tests {
    use super::group_instance_id;

    #[test]
    fn instance_ids_are_legal_and_keep_the_daemon_id() {
        assert_eq!(group_instance_id("eddy.wc", "ab12"), "eddy.wc.ab12");
        assert_eq!(group_instance_id("eddy/w c", "ab12"), "eddy_w_c.ab12");
        let long = group_instance_id(&"g".repeat(400), "0123456789abcdef");
        assert_eq!(long.len(), 249);
        assert!(long.ends_with(".0123456789abcdef"));
    }
}

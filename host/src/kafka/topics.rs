//! Topic metadata and consumer-group offsets.

use super::KafkaSettings;
use super::connection::ConnectionWatch;
use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long a metadata or offset query may take before eddy reports the
/// broker unreachable.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A topic to create: `NAME:PARTITIONS` on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic's name.
    pub name: String,
    /// How many partitions it has.
    pub partitions: i32,
}

impl FromStr for TopicSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, partitions) = s.rsplit_once(':').unwrap_or((s, "1"));
        if name.is_empty() {
            return Err(format!("topic `{s}` has no name; write NAME:PARTITIONS"));
        }
        let partitions = partitions
            .parse::<i32>()
            .ok()
            .filter(|p| (1..=10_000).contains(p))
            .ok_or_else(|| {
                format!(
                    "topic `{s}`: partitions must be a number from 1 to 10000 (NAME:PARTITIONS)"
                )
            })?;
        Ok(Self {
            name: name.to_owned(),
            partitions,
        })
    }
}

/// Why a topic's partitions could not be counted.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The broker did not answer.
    #[error("could not reach Kafka at {0}")]
    Unreachable(String),
    /// The broker answered: no such topic.
    #[error(
        "topic `{0}` does not exist: create it first (for the embedded broker, \
         `eddy serve --topic {0}:PARTITIONS`; for a dev broker, \
         `eddy dev-broker --topic {0}:PARTITIONS`)"
    )]
    Missing(String),
    /// An internal topic exists with the wrong number of partitions.
    #[error(
        "topic `{topic}` has {actual} partitions but this pipeline needs {expected} (one per \
         input partition of its step); if the input gained partitions, delete and re-create \
         the pipeline, or delete `{topic}` to rebuild it"
    )]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// What the pipeline needs.
        expected: i32,
        /// What the topic has.
        actual: i32,
    },
    /// An internal topic exists with a cleanup policy that would lose state
    /// or records.
    #[error(
        "topic `{topic}` has cleanup.policy={actual} but eddy needs {expected} (a changelog or \
         registry is compacted so that it keeps every key's last value; a repartition or \
         dead-letter topic is never compacted, which would drop records); set it with \
         `kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config \
         cleanup.policy={expected}`, or delete the topic so eddy creates it"
    )]
    WrongPolicy {
        /// The topic.
        topic: String,
        /// What eddy needs.
        expected: &'static str,
        /// What the topic has.
        actual: String,
    },
    /// The broker refused to create or delete a topic.
    #[error("topic `{topic}`: {error}")]
    CreateFailed {
        /// The topic.
        topic: String,
        /// The broker's answer.
        error: String,
    },
}

impl TopicError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::PartitionMismatch { .. } | Self::WrongPolicy { .. }
        )
    }
}

/// A long-lived client for metadata and watermark queries: creating a
/// client per query would cost a connection (and threads) each time.
pub struct KafkaMetadata {
    client: BaseConsumer<ConnectionWatch>,
    brokers: String,
}

impl KafkaMetadata {
    /// Creates the client; it connects lazily.
    pub fn new(kafka: &KafkaSettings) -> anyhow::Result<Self> {
        Ok(Self {
            client: kafka
                .metadata_client()
                .create_with_context(ConnectionWatch::default())
                .context("could not create a Kafka client")?,
            brokers: kafka.brokers.clone(),
        })
    }

    /// The number of partitions of `topic`.
    pub fn partition_count(&self, topic: &str) -> Result<i32, TopicError> {
        let metadata = self
            .client
            .fetch_metadata(Some(topic), QUERY_TIMEOUT)
            .map_err(|e| self.unreachable(&e))?;
        match metadata.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
            }
            _ => Err(TopicError::Missing(topic.to_owned())),
        }
    }

    /// Why `error` came: the broker in `brokers`, with the reason its last
    /// connection failed (refused credentials, a certificate not trusted).
    fn unreachable(&self, error: &rdkafka::error::KafkaError) -> TopicError {
        // Client errors reach the context only when the client is polled,
        // one event per poll (logs among them); nothing is assigned to this
        // client, so polls serve just those. A fifth of a second drains
        // them after a query that failed after seconds.
        let drained_by = std::time::Instant::now() + Duration::from_millis(200);
        while std::time::Instant::now() < drained_by {
            let _ = self.client.poll(Duration::from_millis(20));
        }
        TopicError::Unreachable(format!(
            "{}: {error}{}",
            self.brokers,
            self.client.context().explain()
        ))
    }

    /// The low and high watermarks of one partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
        self.client
            .fetch_watermarks(topic, partition, QUERY_TIMEOUT)
            .with_context(|| format!("could not read the offsets of {topic}/{partition}"))
    }

    /// [`Self::watermarks`] of a partition whose leader may still be being
    /// elected: a topic just created is listed in metadata before its
    /// leader serves offsets, and until then Kafka answers "not leader".
    /// Those answers are waited out for [`QUERY_TIMEOUT`]; others are not.
    pub fn settled_watermarks(&self, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
        let deadline = Instant::now() + QUERY_TIMEOUT;
        loop {
            match self
                .client
                .fetch_watermarks(topic, partition, QUERY_TIMEOUT)
            {
                Err(e) if is_leader_settling(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                result => {
                    return result.with_context(|| {
                        format!("could not read the offsets of {topic}/{partition}")
                    });
                }
            }
        }
    }
}

/// Whether `error` is Kafka saying a partition's leadership is moving or
/// not yet known, which passes by itself within seconds.
fn is_leader_settling(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::NotLeaderForPartition | Code::LeaderNotAvailable | Code::UnknownTopicOrPartition
        )
    )
}

/// The offsets `group` has committed for `partitions`; `None` where nothing
/// is committed.
pub fn group_offsets(
    kafka: &KafkaSettings,
    group: &str,
    partitions: &[(String, i32)],
) -> anyhow::Result<Vec<Option<i64>>> {
    let consumer: BaseConsumer = kafka
        .consumer(group)
        .create()
        .context("could not create a Kafka client")?;
    group_offsets_with(&consumer, partitions)
        .with_context(|| format!("could not read the offsets of group {group}"))
}

/// [`group_offsets`] through an existing consumer of the group.
pub fn group_offsets_with<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    partitions: &[(String, i32)],
) -> anyhow::Result<Vec<Option<i64>>> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(tpl, QUERY_TIMEOUT)?;
    Ok(partitions
        .iter()
        .map(|(topic, partition)| {
            committed
                .find_partition(topic, *partition)
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_specs_parse_and_reject_nonsense() {
        assert_eq!(
            "words:3".parse::<TopicSpec>(),
            Ok(TopicSpec {
                name: "words".into(),
                partitions: 3
            })
        );
        assert_eq!("w".parse::<TopicSpec>().map(|t| t.partitions), Ok(1));
        assert!("w:0".parse::<TopicSpec>().is_err());
        assert!(":3".parse::<TopicSpec>().is_err());
    }
}

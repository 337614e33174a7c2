//! The topics eddy owns: each step's changelog and the repartition topics
//! between steps. Created with the partitions and cleanup policy the
//! pipeline needs and checked on every start, so a mismatch is an error,
//! never a silent misrouting of state: a changelog the broker deletes by age
//! loses state on the next restore, and a repartition topic it compacts
//! loses records.

use super::{KafkaMetadata, KafkaSettings, TopicError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// A topic eddy creates for a pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalTopic {
    /// Its name.
    pub name: String,
    /// How many partitions it must have.
    pub partitions: i32,
    /// Compacted (changelogs) or deleted by retention (repartition topics).
    pub compacted: bool,
    /// Whether the broker stamps its records on arrival
    /// (`message.timestamp.type=LogAppendTime`) rather than taking the
    /// writer's timestamp: for records whose only timestamp would be the
    /// writing daemon's wall clock, which the broker refuses once it runs
    /// more than `log.message.timestamp.after.max.ms` ahead.
    pub stamped_by_broker: bool,
}

impl InternalTopic {
    /// The `cleanup.policy` the topic must have.
    pub fn cleanup_policy(&self) -> &'static str {
        if self.compacted { "compact" } else { "delete" }
    }

    /// A changelog: compacted, one partition per input partition of its step.
    pub fn changelog(name: &str, partitions: usize) -> Self {
        Self {
            name: name.to_owned(),
            partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
            compacted: true,
            stamped_by_broker: false,
        }
    }

    /// The registry: compacted, one partition, stamped by the broker (a
    /// registry record has no timestamp of its own to carry).
    pub fn registry(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            partitions: 1,
            compacted: true,
            stamped_by_broker: true,
        }
    }

    /// A dead-letter topic.
    pub fn dead_letter(name: &str, partitions: i32) -> Self {
        Self {
            name: name.to_owned(),
            partitions,
            compacted: false,
            stamped_by_broker: false,
        }
    }

    /// A repartition topic between two steps.
    pub fn repartition(name: &str, partitions: i32) -> Self {
        Self {
            name: name.to_owned(),
            partitions,
            compacted: false,
            stamped_by_broker: false,
        }
    }
}

fn admin(kafka: &KafkaSettings) -> Result<AdminClient<DefaultClientContext>, TopicError> {
    kafka
        .metadata_client()
        .create()
        .map_err(|e| TopicError::Unreachable(format!("{}: {e}", kafka.brokers)))
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// Creates `topic` if it does not exist; if it does (made by an earlier
/// start, or by an operator), checks its partitions and cleanup policy.
pub fn ensure_topic(
    kafka: &KafkaSettings,
    metadata: &KafkaMetadata,
    topic: &InternalTopic,
) -> Result<(), TopicError> {
    match metadata.partition_count(&topic.name) {
        Ok(actual) => {
            check_partitions(topic, actual)?;
            return check_policy(kafka, topic);
        }
        Err(TopicError::Missing(_)) => {}
        Err(e) => return Err(e),
    }
    let admin = admin(kafka)?;
    let mut new = NewTopic::new(&topic.name, topic.partitions, TopicReplication::Fixed(-1))
        .set("cleanup.policy", topic.cleanup_policy());
    if topic.stamped_by_broker {
        new = new.set("message.timestamp.type", "LogAppendTime");
    }
    let results = futures::executor::block_on(admin.create_topics([&new], &options()))
        .map_err(|e| TopicError::Unreachable(format!("{}: {e}", kafka.brokers)))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(TopicError::CreateFailed {
                    topic: name,
                    error: code.to_string(),
                });
            }
        }
    }
    // Metadata catches up with a new topic shortly after it is created.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match metadata.partition_count(&topic.name) {
            Ok(actual) => return check_partitions(topic, actual),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn check_partitions(topic: &InternalTopic, actual: i32) -> Result<(), TopicError> {
    if actual == topic.partitions {
        Ok(())
    } else {
        Err(TopicError::PartitionMismatch {
            topic: topic.name.clone(),
            expected: topic.partitions,
            actual,
        })
    }
}

/// Checks that an existing topic's `cleanup.policy` is the one eddy needs.
/// A broker that cannot describe configs (the development broker, which
/// neither compacts nor deletes by age) is taken at its word.
fn check_policy(kafka: &KafkaSettings, topic: &InternalTopic) -> Result<(), TopicError> {
    let Some(actual) = topic_config(kafka, &topic.name, "cleanup.policy")? else {
        return Ok(());
    };
    let policies: Vec<&str> = actual.split(',').map(str::trim).collect();
    if policies == [topic.cleanup_policy()] {
        Ok(())
    } else {
        Err(TopicError::WrongPolicy {
            topic: topic.name.clone(),
            expected: topic.cleanup_policy(),
            actual,
        })
    }
}

/// The value of `topic`'s configuration `key` as the broker applies it (the
/// topic's own setting or the broker's default); `None` from a broker that
/// does not describe configs (the development broker).
pub(super) fn topic_config(
    kafka: &KafkaSettings,
    topic: &str,
    key: &str,
) -> Result<Option<String>, TopicError> {
    let admin = admin(kafka)?;
    let described = futures::executor::block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options()),
    );
    let unsupported = |code: &RDKafkaErrorCode| {
        matches!(
            code,
            RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::UnsupportedFeature
        )
    };
    let resource = match described {
        Ok(mut results) if !results.is_empty() => results.swap_remove(0),
        Ok(_) => return Ok(None),
        Err(KafkaError::AdminOp(code)) if unsupported(&code) => {
            tracing::debug!(topic, key, "the broker does not describe topic configs");
            return Ok(None);
        }
        Err(e) => return Err(TopicError::Unreachable(format!("{}: {e}", kafka.brokers))),
    };
    match resource {
        Ok(resource) => Ok(Some(
            resource
                .get(key)
                .and_then(|entry| entry.value.clone())
                .unwrap_or_default(),
        )),
        Err(code) if unsupported(&code) => Ok(None),
        Err(code) => Err(TopicError::CreateFailed {
            topic: topic.to_owned(),
            error: format!("could not read its configuration: {code}"),
        }),
    }
}

/// Deletes `topics`; missing ones are not an error. Returns once the
/// broker's metadata no longer lists them: Apache Kafka answers DeleteTopics
/// before the deletion is complete, and a topic re-created meanwhile (a
/// pipeline deleted and created again) would be the dying one.
pub fn delete_topics(
    kafka: &KafkaSettings,
    metadata: &KafkaMetadata,
    topics: &[String],
) -> Result<(), TopicError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin = admin(kafka)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let results = futures::executor::block_on(admin.delete_topics(&names, &options()))
        .map_err(|e| TopicError::Unreachable(format!("{}: {e}", kafka.brokers)))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => {
                return Err(TopicError::CreateFailed {
                    topic: name,
                    error: format!("could not delete: {code}"),
                });
            }
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for topic in topics {
        loop {
            match metadata.partition_count(topic) {
                Err(TopicError::Missing(_)) => break,
                Err(e) => return Err(e),
                Ok(_) if std::time::Instant::now() >= deadline => {
                    return Err(TopicError::CreateFailed {
                        topic: topic.clone(),
                        error: "deleted, but still listed by the broker after 30 s".into(),
                    });
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    Ok(())
}

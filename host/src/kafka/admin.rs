//! The topics eddy owns: each step's changelog and the repartition topics
//! between steps. Created with the partitions the pipeline needs and
//! checked on every start, so a mismatch is an error, never a silent
//! misrouting of state.

use super::{KafkaMetadata, KafkaSettings, TopicError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
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
}

impl InternalTopic {
    /// A changelog: compacted, one partition per input partition of its step.
    pub fn changelog(name: &str, partitions: usize) -> Self {
        Self {
            name: name.to_owned(),
            partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
            compacted: true,
        }
    }

    /// A dead-letter topic.
    pub fn dead_letter(name: &str, partitions: i32) -> Self {
        Self {
            name: name.to_owned(),
            partitions,
            compacted: false,
        }
    }

    /// A repartition topic between two steps.
    pub fn repartition(name: &str, partitions: i32) -> Self {
        Self {
            name: name.to_owned(),
            partitions,
            compacted: false,
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

/// Creates `topic` if it does not exist; if it does, checks its partitions.
pub fn ensure_topic(
    kafka: &KafkaSettings,
    metadata: &KafkaMetadata,
    topic: &InternalTopic,
) -> Result<(), TopicError> {
    match metadata.partition_count(&topic.name) {
        Ok(actual) => return check_partitions(topic, actual),
        Err(TopicError::Missing(_)) => {}
        Err(e) => return Err(e),
    }
    let admin = admin(kafka)?;
    let policy = if topic.compacted { "compact" } else { "delete" };
    let new = NewTopic::new(&topic.name, topic.partitions, TopicReplication::Fixed(-1))
        .set("cleanup.policy", policy);
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

/// Deletes `topics`; missing ones are not an error.
pub fn delete_topics(kafka: &KafkaSettings, topics: &[String]) -> Result<(), TopicError> {
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
    Ok(())
}

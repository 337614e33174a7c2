//! Whether Kafka refuses a task's writes for want of in-sync replicas.
//!
//! eddy produces with `acks=all`, so a partition whose in-sync replicas are
//! fewer than its topic's `min.insync.replicas` (or that has no leader)
//! takes no writes. librdkafka retries such a refusal silently until the
//! delivery times out, and the task then sees only "message timed out",
//! and after that its new producer only the transaction the broker cannot
//! finish aborting. Asking the cluster which written partitions are short
//! of replicas turns that into a status that names the partition and the
//! setting.

use super::KafkaSettings;
use super::admin::topic_config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::fmt;
use std::time::Duration;

/// How long the diagnosis waits for the cluster's metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// A topic some of whose partitions take no `acks=all` writes.
#[derive(Debug, PartialEq, Eq)]
struct RefusedTopic {
    topic: String,
    /// Partitions without a leader.
    leaderless: Vec<i32>,
    /// Partitions with fewer replicas in sync than `min_insync`, with the
    /// number in sync.
    short: Vec<(i32, usize)>,
    /// The topic's replication factor.
    replicas: usize,
    /// The topic's `min.insync.replicas`, when the broker says.
    min_insync: Option<usize>,
}

impl fmt::Display for RefusedTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topic = &self.topic;
        if !self.leaderless.is_empty() {
            write!(
                f,
                "{topic} partitions {:?} have no leader (their replicas' brokers are down)",
                self.leaderless
            )?;
            if !self.short.is_empty() {
                f.write_str("; ")?;
            }
        }
        let fewest = self.short.iter().map(|(_, n)| *n).min();
        let most = self.short.iter().map(|(_, n)| *n).max();
        if let (Some(fewest), Some(most), Some(min)) = (fewest, most, self.min_insync) {
            let partitions: Vec<i32> = self.short.iter().map(|(p, _)| *p).collect();
            let in_sync = if fewest == most {
                fewest.to_string()
            } else {
                format!("{fewest} to {most}")
            };
            write!(
                f,
                "{topic} partitions {partitions:?} have {in_sync} of {} replicas in sync, and the \
                 topic's min.insync.replicas is {min}",
                self.replicas
            )?;
        }
        Ok(())
    }
}

/// Why Kafka refuses writes to `topics` now, as a task's status says it:
/// which partitions, why, what to change, and that waiting loses nothing.
/// `None` when every partition takes writes, or when the cluster cannot be
/// asked (the caller then has only the producer's error to show).
pub fn refused_writes(kafka: &KafkaSettings, topics: &[&str]) -> Option<String> {
    let refused = refused_topics(kafka, topics);
    (!refused.is_empty()).then(|| explain_refusal(&refused))
}

/// The topics of `topics` Kafka refuses writes to now, each with the reason.
fn refused_topics(kafka: &KafkaSettings, topics: &[&str]) -> Vec<RefusedTopic> {
    let client: BaseConsumer = match kafka.metadata_client().create() {
        Ok(client) => client,
        Err(e) => {
            tracing::debug!(error = %e, "no client to diagnose refused writes");
            return Vec::new();
        }
    };
    let mut refused = Vec::new();
    for &topic in topics {
        let metadata = match client.fetch_metadata(Some(topic), METADATA_TIMEOUT) {
            Ok(metadata) => metadata,
            Err(e) => {
                tracing::debug!(topic, error = %e, "no metadata to diagnose refused writes");
                continue;
            }
        };
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            continue;
        };
        let partitions = found.partitions();
        let replicas = partitions
            .iter()
            .map(|p| p.replicas().len())
            .max()
            .unwrap_or(0);
        let leaderless: Vec<i32> = partitions
            .iter()
            .filter(|p| p.leader() < 0)
            .map(|p| p.id())
            .collect();
        let under_replicated: Vec<(i32, usize)> = partitions
            .iter()
            .filter(|p| p.leader() >= 0 && p.isr().len() < p.replicas().len())
            .map(|p| (p.id(), p.isr().len()))
            .collect();
        // Only an under-replicated partition can be short of the minimum,
        // so a healthy topic costs no config request.
        let min_insync = if under_replicated.is_empty() {
            None
        } else {
            match topic_config(kafka, topic, "min.insync.replicas") {
                Ok(value) => value.and_then(|v| v.trim().parse().ok()),
                Err(e) => {
                    tracing::debug!(topic, error = %e, "min.insync.replicas not readable");
                    None
                }
            }
        };
        let short: Vec<(i32, usize)> = match min_insync {
            Some(min) => under_replicated
                .into_iter()
                .filter(|(_, in_sync)| *in_sync < min)
                .collect(),
            None => Vec::new(),
        };
        if !leaderless.is_empty() || !short.is_empty() {
            refused.push(RefusedTopic {
                topic: topic.to_owned(),
                leaderless,
                short,
                replicas,
                min_insync,
            });
        }
    }
    refused
}

/// The sentence a task's status shows for `refused` (non-empty).
fn explain_refusal(refused: &[RefusedTopic]) -> String {
    let what: Vec<String> = refused.iter().map(ToString::to_string).collect();
    let mut advice = String::new();
    if refused.iter().any(|t| !t.short.is_empty()) {
        advice.push_str(
            " eddy produces with acks=all, so Kafka refuses these writes \
             (NOT_ENOUGH_REPLICAS): bring the replicas' brokers back, or lower \
             min.insync.replicas on the topic (or the broker's default).",
        );
    }
    if refused.iter().any(|t| !t.leaderless.is_empty()) {
        advice.push_str(" A partition without a leader takes writes again once one of its replicas' brokers is back.");
    }
    format!(
        "Kafka refuses writes: {}.{advice} The task waits and retries; nothing is committed \
         meanwhile, so nothing is lost",
        what.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_explanation_names_partitions_counts_and_the_setting() {
        let refused = [RefusedTopic {
            topic: "counts".into(),
            leaderless: vec![],
            short: vec![(0, 2), (2, 2)],
            replicas: 3,
            min_insync: Some(3),
        }];
        let text = explain_refusal(&refused);
        assert!(
            text.contains("counts partitions [0, 2] have 2 of 3 replicas in sync"),
            "{text}"
        );
        assert!(text.contains("min.insync.replicas is 3"), "{text}");
        assert!(text.contains("NOT_ENOUGH_REPLICAS"), "{text}");
        assert!(!text.contains("no leader"), "{text}");
    }

    #[test]
    fn a_partition_without_a_leader_is_named_as_such() {
        let refused = [RefusedTopic {
            topic: "out".into(),
            leaderless: vec![1],
            short: vec![],
            replicas: 1,
            min_insync: None,
        }];
        let text = explain_refusal(&refused);
        assert!(text.contains("out partitions [1] have no leader"), "{text}");
        assert!(!text.contains("min.insync.replicas"), "{text}");
    }
}

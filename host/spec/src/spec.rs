//! A pipeline's specification: validated once, when it is created (see
//! `validate`), and kept as JSON in the registry and the data directory so
//! every daemon runs it and restores it on restart.

use crate::names::InternalNames;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where a task with no committed offset starts reading its input.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StartFrom {
    /// The oldest record still in the log.
    #[default]
    Earliest,
    /// Only records produced after the pipeline was created.
    Latest,
}

/// What happens to a record the guest fails on.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// Stop the task; nothing past the failing batch is committed.
    #[default]
    Fail,
    /// Drop the records the guest fails on, counted and logged.
    Skip,
    /// Send the records the guest fails on to `<pipeline>.dlq`.
    DeadLetter,
}

/// The delivery guarantee.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Outputs may repeat after a crash; nothing is lost.
    #[default]
    AtLeastOnce,
    /// Each commit interval's outputs, changelog and checkpoint go into one
    /// Kafka transaction: `read_committed` readers see every output once.
    ExactlyOnce,
}

/// The commit interval when the spec names none, under both guarantees
/// (Kafka Streams' under exactly-once). A commit per batch costs a
/// checkpoint, a round of acknowledgements and a state write per batch (a
/// transaction's markers too), and a key touched by several batches of one
/// interval is logged once. Tasks also commit when their input pauses, so a
/// quiet pipeline is always committed; a crash under at-least-once replays
/// at most one interval.
pub(crate) const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// The broker aborts a transaction left open longer than this.
pub(crate) const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Kafka's default `transaction.max.timeout.ms`: brokers refuse longer.
pub(crate) const MAX_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn default_transaction_timeout() -> Duration {
    DEFAULT_TRANSACTION_TIMEOUT
}

/// A pipeline's limits, resolved against the daemon's ceilings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Limits {
    /// Linear memory cap per guest instance.
    pub memory_bytes: u64,
    /// Deadline per guest call.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Records per guest call.
    pub max_batch_records: u32,
    /// Wait to fill a batch.
    #[serde(with = "humantime_serde")]
    pub batch_linger: Duration,
    /// Output records per guest call.
    #[serde(default = "crate::limits::default_max_output_records")]
    pub max_output_records: u32,
    /// Output bytes (keys, values, headers) per guest call.
    #[serde(default = "crate::limits::default_max_output_bytes")]
    pub max_output_bytes: u64,
    /// Bytes per output record: the daemon's, set by the brokers' limit.
    #[serde(default = "crate::limits::default_max_record_bytes")]
    pub max_record_bytes: u64,
}

/// A validated pipeline specification.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct PipelineSpec {
    /// The pipeline's name.
    pub name: String,
    /// Module digests, in order.
    pub steps: Vec<String>,
    /// Input topics.
    pub inputs: Vec<String>,
    /// Default output topic.
    pub output: String,
    /// Named outputs: output name -> topic.
    pub named_outputs: BTreeMap<String, String>,
    /// Configuration handed to the guest.
    pub config: BTreeMap<String, String>,
    /// Where a new pipeline starts.
    pub start_from: StartFrom,
    /// Delivery guarantee.
    pub guarantee: Guarantee,
    /// What happens to records the guest fails on.
    #[serde(default)]
    pub error_policy: ErrorPolicy,
    /// Guest limits.
    pub limits: Limits,
    /// How often a task commits (besides when its input pauses).
    #[serde(default, with = "humantime_serde")]
    pub commit_interval: Duration,
    /// How long a transaction may stay open (exactly-once).
    #[serde(default = "default_transaction_timeout", with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// How many daemons besides each partition's owner keep its state warm
    /// by following its changelog (see `task::standby`).
    #[serde(default)]
    pub standby_replicas: u32,
    /// Where failed records go under the dead-letter policy, when named;
    /// `None`: `<name>.dlq`, made by eddy.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

/// What is wrong with a spec.
#[derive(Debug, thiserror::Error)]
#[error("invalid pipeline spec: {0}")]
pub struct SpecError(pub String);

impl PipelineSpec {
    /// The input topics of `step`.
    pub fn step_inputs(&self, names: InternalNames<'_>, step: u32) -> Vec<String> {
        match step {
            0 => self.inputs.clone(),
            n => vec![names.repartition(n)],
        }
    }

    /// Where `step`'s default output goes.
    pub fn step_output(&self, names: InternalNames<'_>, step: u32) -> String {
        if step as usize + 1 >= self.steps.len() {
            self.output.clone()
        } else {
            names.repartition(step + 1)
        }
    }

    /// Where failed records go, under the dead-letter policy.
    pub fn dead_letter(&self, names: InternalNames<'_>) -> Option<String> {
        (self.error_policy == ErrorPolicy::DeadLetter).then(|| {
            self.dead_letter_topic
                .clone()
                .unwrap_or_else(|| names.dead_letter())
        })
    }

    /// Every topic the pipeline writes to.
    pub fn output_topics(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.output.as_str()).chain(self.named_outputs.values().map(String::as_str))
    }
}

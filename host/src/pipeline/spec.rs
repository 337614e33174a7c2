//! A pipeline's specification: validated once, when it is created, and kept
//! as JSON in the data directory so the daemon restores it on restart.

use crate::config::LimitsConfig;
use crate::modules::ModuleStore;
use crate::runtime::Builtin;
use eddy_proto::v1;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where a new pipeline starts reading its inputs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StartFrom {
    /// The oldest record still in the log.
    #[default]
    Earliest,
    /// Only records produced after the pipeline was created.
    Latest,
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
const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// The broker aborts a transaction left open longer than this.
const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Kafka's default `transaction.max.timeout.ms`: brokers refuse longer.
const MAX_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn default_transaction_timeout() -> Duration {
    DEFAULT_TRANSACTION_TIMEOUT
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
    #[serde(default = "crate::config::default_max_output_records")]
    pub max_output_records: u32,
    /// Output bytes (keys, values, headers) per guest call.
    #[serde(default = "crate::config::default_max_output_bytes")]
    pub max_output_bytes: u64,
    /// Bytes per output record: the daemon's, set by the brokers' limit.
    #[serde(default = "crate::config::default_max_record_bytes")]
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
}

/// What is wrong with a spec.
#[derive(Debug, thiserror::Error)]
#[error("invalid pipeline spec: {0}")]
pub struct SpecError(pub String);

fn invalid(message: impl Into<String>) -> SpecError {
    SpecError(message.into())
}

/// Most steps in one pipeline.
const MAX_STEPS: usize = 16;

/// The names of what eddy keeps for a pipeline on the broker: consumer
/// groups and internal topics. Pipeline names are lower-case and may not end
/// in `.step-N`, so these never collide across pipelines.
#[derive(Clone, Copy, Debug)]
pub struct InternalNames<'a> {
    /// The daemon's group prefix.
    pub prefix: &'a str,
    /// The pipeline's name.
    pub pipeline: &'a str,
}

impl InternalNames<'_> {
    /// The consumer group of `step`; the first step's is the pipeline's.
    pub fn group(&self, step: u32) -> String {
        match step {
            0 => format!("{}{}", self.prefix, self.pipeline),
            n => format!("{}{}.step-{n}", self.prefix, self.pipeline),
        }
    }

    /// The compacted changelog of `step`'s state.
    pub fn changelog(&self, step: u32) -> String {
        format!("{}{}.step-{step}.changelog", self.prefix, self.pipeline)
    }

    /// The topic feeding `step` (from 1), partitioned by murmur2 of the key.
    pub fn repartition(&self, step: u32) -> String {
        format!("{}{}.step-{step}.repartition", self.prefix, self.pipeline)
    }

    /// Where the dead-letter policy sends failed records. Not deleted with
    /// the pipeline: it holds records someone has to look at.
    pub fn dead_letter(&self) -> String {
        format!("{}.dlq", self.pipeline)
    }

    /// Every internal topic of a pipeline with `steps` steps.
    pub fn topics(&self, steps: usize) -> Vec<String> {
        let steps = u32::try_from(steps).unwrap_or(0);
        (0..steps)
            .map(|s| self.changelog(s))
            .chain((1..steps).map(|s| self.repartition(s)))
            .collect()
    }
}

/// Checks a pipeline name: it names files, consumer groups and topics.
pub fn check_name(name: &str) -> Result<(), SpecError> {
    if let Some((_, n)) = name.rsplit_once(".step-")
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid(format!(
            "name `{name}` may not end in `.step-N`: eddy names the groups of later steps that way"
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "name `{name}` must be 1-100 characters of lower-case letters, digits, '-', '_' \
             or '.', not starting with '.'"
        )))
    }
}

fn check_topic(what: &str, topic: &str) -> Result<(), SpecError> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} topic `{topic}` is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])"
        )))
    }
}

/// Resolves a limit: zero means the daemon's default; above the ceiling is
/// an error, never silently clamped.
fn limit<T: PartialOrd + Copy + std::fmt::Debug>(
    name: &str,
    asked: Option<T>,
    ceiling: T,
) -> Result<T, SpecError> {
    match asked {
        None => Ok(ceiling),
        Some(v) if v > ceiling => Err(invalid(format!(
            "limit {name} = {v:?} is above the daemon's ceiling of {ceiling:?}"
        ))),
        Some(v) => Ok(v),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn nonzero<T: Default + PartialEq>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

impl PipelineSpec {
    /// Validates a spec received over gRPC.
    pub fn from_proto(
        spec: v1::PipelineSpec,
        modules: &ModuleStore,
        ceilings: &LimitsConfig,
    ) -> Result<Self, SpecError> {
        check_name(&spec.name)?;
        if spec.steps.is_empty() {
            return Err(invalid("a pipeline needs one step (a module digest)"));
        }
        if spec.steps.len() > MAX_STEPS {
            return Err(invalid(format!(
                "a pipeline has at most {MAX_STEPS} steps; this one has {}",
                spec.steps.len()
            )));
        }
        let steps = spec
            .steps
            .iter()
            .map(|s| match Builtin::parse(&s.module) {
                Ok(Some(builtin)) => Ok(builtin.reference()),
                Ok(None) => modules
                    .resolve(&s.module)
                    .map_err(|e| invalid(e.to_string())),
                Err(e) => Err(invalid(e)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if spec.inputs.is_empty() {
            return Err(invalid("a pipeline needs at least one input topic"));
        }
        for input in &spec.inputs {
            check_topic("input", input)?;
        }
        check_topic("output", &spec.output)?;
        for (name, topic) in &spec.named_outputs {
            if name.is_empty() {
                return Err(invalid("named outputs need a name (NAME=TOPIC)"));
            }
            check_topic(&format!("output `{name}`"), topic)?;
        }
        if let Some(input) = spec
            .inputs
            .iter()
            .find(|i| *i == &spec.output || spec.named_outputs.values().any(|t| t == *i))
        {
            return Err(invalid(format!(
                "topic `{input}` is both an input and an output: the pipeline would consume \
                 its own output forever"
            )));
        }
        let start_from = match v1::StartPosition::try_from(spec.start_from) {
            Ok(v1::StartPosition::Unspecified | v1::StartPosition::Earliest) => StartFrom::Earliest,
            Ok(v1::StartPosition::Latest) => StartFrom::Latest,
            Err(_) => {
                return Err(invalid(format!(
                    "unknown start position {}",
                    spec.start_from
                )));
            }
        };
        let guarantee = match v1::Guarantee::try_from(spec.guarantee) {
            Ok(v1::Guarantee::Unspecified | v1::Guarantee::AtLeastOnce) => Guarantee::AtLeastOnce,
            Ok(v1::Guarantee::ExactlyOnce) => Guarantee::ExactlyOnce,
            Err(_) => return Err(invalid(format!("unknown guarantee {}", spec.guarantee))),
        };
        let error_policy = match v1::ErrorPolicy::try_from(spec.error_policy) {
            Ok(v1::ErrorPolicy::Unspecified | v1::ErrorPolicy::Fail) => ErrorPolicy::Fail,
            Ok(v1::ErrorPolicy::Skip) => ErrorPolicy::Skip,
            Ok(v1::ErrorPolicy::DeadLetter) => ErrorPolicy::DeadLetter,
            Err(_) => {
                return Err(invalid(format!(
                    "unknown error policy {}",
                    spec.error_policy
                )));
            }
        };
        let asked = spec.limits.unwrap_or_default();
        let memory_bytes = limit("memory", nonzero(asked.memory_bytes), ceilings.memory_bytes)?;
        if memory_bytes < 1 << 20 {
            return Err(invalid("limit memory must be at least 1 MiB"));
        }
        let limits = Limits {
            memory_bytes,
            call_timeout: limit(
                "call-timeout",
                nonzero(asked.call_timeout_ms).map(Duration::from_millis),
                ceilings.call_timeout,
            )?,
            max_batch_records: limit(
                "max-batch-records",
                nonzero(asked.max_batch_records),
                ceilings.max_batch_records,
            )?,
            batch_linger: nonzero(asked.batch_linger_ms)
                .map_or(ceilings.batch_linger, Duration::from_millis)
                .min(Duration::from_secs(10)),
            max_output_records: limit(
                "max-output-records",
                nonzero(asked.max_output_records),
                ceilings.max_output_records,
            )?,
            max_output_bytes: limit(
                "max-output-bytes",
                nonzero(asked.max_output_bytes),
                ceilings.max_output_bytes,
            )?,
            max_record_bytes: ceilings.max_record_bytes,
        };
        let transaction_timeout = nonzero(spec.transaction_timeout_ms)
            .map_or(DEFAULT_TRANSACTION_TIMEOUT, Duration::from_millis);
        if !(Duration::from_secs(1)..=MAX_TRANSACTION_TIMEOUT).contains(&transaction_timeout) {
            return Err(invalid(format!(
                "transaction-timeout must be between 1s and {}s (brokers refuse longer \
                 transactions by default)",
                MAX_TRANSACTION_TIMEOUT.as_secs()
            )));
        }
        let commit_interval =
            nonzero(spec.commit_interval_ms).map_or(DEFAULT_COMMIT_INTERVAL, Duration::from_millis);
        if commit_interval > transaction_timeout / 2 {
            return Err(invalid(format!(
                "commit-interval {commit_interval:?} must be at most half the transaction-timeout \
                 ({transaction_timeout:?}), or transactions would time out before they commit"
            )));
        }
        Ok(Self {
            name: spec.name,
            steps,
            inputs: spec.inputs,
            output: spec.output,
            named_outputs: spec.named_outputs.into_iter().collect(),
            config: spec.config.into_iter().collect(),
            start_from,
            guarantee,
            error_policy,
            limits,
            commit_interval,
            transaction_timeout,
        })
    }

    /// The spec as the API shows it.
    pub fn to_proto(&self) -> v1::PipelineSpec {
        v1::PipelineSpec {
            name: self.name.clone(),
            steps: self
                .steps
                .iter()
                .map(|m| v1::Step { module: m.clone() })
                .collect(),
            inputs: self.inputs.clone(),
            output: self.output.clone(),
            named_outputs: self.named_outputs.clone().into_iter().collect(),
            config: self.config.clone().into_iter().collect(),
            start_from: match self.start_from {
                StartFrom::Earliest => v1::StartPosition::Earliest,
                StartFrom::Latest => v1::StartPosition::Latest,
            } as i32,
            guarantee: match self.guarantee {
                Guarantee::AtLeastOnce => v1::Guarantee::AtLeastOnce,
                Guarantee::ExactlyOnce => v1::Guarantee::ExactlyOnce,
            } as i32,
            error_policy: match self.error_policy {
                ErrorPolicy::Fail => v1::ErrorPolicy::Fail,
                ErrorPolicy::Skip => v1::ErrorPolicy::Skip,
                ErrorPolicy::DeadLetter => v1::ErrorPolicy::DeadLetter,
            } as i32,
            limits: Some(v1::Limits {
                memory_bytes: self.limits.memory_bytes,
                call_timeout_ms: millis(self.limits.call_timeout),
                max_batch_records: self.limits.max_batch_records,
                batch_linger_ms: millis(self.limits.batch_linger),
                max_output_records: self.limits.max_output_records,
                max_output_bytes: self.limits.max_output_bytes,
            }),
            commit_interval_ms: millis(self.commit_interval),
            transaction_timeout_ms: millis(self.transaction_timeout),
        }
    }

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

    /// Every topic the pipeline writes to.
    pub fn output_topics(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.output.as_str()).chain(self.named_outputs.values().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("word-count.v2").is_ok());
        assert!(check_name("a.step-x").is_ok());
        for bad in ["", "Upper", "has space", ".hidden", "a/b", "wc.step-1"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_above_the_ceiling_are_errors_and_zero_means_default() {
        assert_eq!(limit("m", None, 10u64).ok(), Some(10));
        assert_eq!(limit("m", Some(5u64), 10).ok(), Some(5));
        assert!(limit("m", Some(11u64), 10).is_err());
    }
}

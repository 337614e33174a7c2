//! Checking a pipeline, requested or recorded: names, topics, modules and
//! limits against the daemon's ceilings, with errors that say what to
//! change.

use crate::builtin::Builtin;
use crate::limits::LimitsConfig;
use crate::spec::{
    DEFAULT_COMMIT_INTERVAL, DEFAULT_TRANSACTION_TIMEOUT, ErrorPolicy, Guarantee, Limits,
    MAX_TRANSACTION_TIMEOUT, PipelineSpec, SpecError, StartFrom,
};
use eddy_registry::is_full_digest;
use std::collections::BTreeMap;
use std::time::Duration;

/// A pipeline as requested, before it is checked: unset limits and
/// intervals are `None` and take the daemon's defaults.
#[derive(Clone, Debug, Default)]
pub struct SpecRequest {
    /// The pipeline's name.
    pub name: String,
    /// Each step's module: a digest, a unique prefix of one, or a builtin.
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
    pub error_policy: ErrorPolicy,
    /// Limits asked for.
    pub limits: LimitsRequest,
    /// How often a task commits.
    pub commit_interval: Option<Duration>,
    /// How long a transaction may stay open.
    pub transaction_timeout: Option<Duration>,
    /// Daemons besides each partition's owner that keep its state warm.
    pub standby_replicas: u32,
    /// The dead-letter topic, when named.
    pub dead_letter_topic: Option<String>,
}

/// Limits asked for; `None` takes the daemon's ceiling.
#[derive(Clone, Copy, Debug, Default)]
pub struct LimitsRequest {
    /// Linear memory cap per guest instance.
    pub memory_bytes: Option<u64>,
    /// Deadline per guest call.
    pub call_timeout: Option<Duration>,
    /// Records per guest call.
    pub max_batch_records: Option<u32>,
    /// Wait to fill a batch.
    pub batch_linger: Option<Duration>,
    /// Output records per guest call.
    pub max_output_records: Option<u32>,
    /// Output bytes per guest call.
    pub max_output_bytes: Option<u64>,
}

fn invalid(message: impl Into<String>) -> SpecError {
    SpecError(message.into())
}

/// Most steps in one pipeline.
const MAX_STEPS: usize = 16;
/// Most standby copies of a pipeline's state per partition.
const MAX_STANDBY_REPLICAS: u32 = 8;
/// Checks a pipeline name: it names files, consumer groups and topics.
pub fn check_name(name: &str) -> Result<(), SpecError> {
    eddy_registry::check_pipeline_name(name).map_err(invalid)
}

/// Whether `topic` is one a pipeline may not read or write: Kafka's own
/// (`__consumer_offsets`, `__transaction_state`, ...) or eddy's (the
/// registry every daemon obeys, and any pipeline's changelog or
/// repartition topic, whose records every daemon trusts as state).
fn internal_topic(topic: &str, group_prefix: &str) -> Option<&'static str> {
    if topic.starts_with("__") {
        return Some("Kafka's own");
    }
    let rest = topic.strip_prefix(group_prefix)?;
    if rest == "registry" {
        return Some("eddy's registry, which every daemon obeys,");
    }
    let step_topic = [".changelog", ".repartition"].iter().any(|suffix| {
        rest.strip_suffix(suffix)
            .and_then(|r| r.rsplit_once(".step-"))
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    step_topic.then_some("a pipeline's internal state")
}

fn check_topic(what: &str, topic: &str, group_prefix: &str) -> Result<(), SpecError> {
    if let Some(whose) = internal_topic(topic, group_prefix) {
        return Err(invalid(format!(
            "{what} topic `{topic}` is {whose} topic: a pipeline may not read or write it"
        )));
    }
    if eddy_registry::is_topic_name(topic) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} topic `{topic}` is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])"
        )))
    }
}

/// Resolves a limit: none asked means the daemon's ceiling; above it is
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

/// What a spec is checked against: this daemon's ceilings and the prefix
/// of the topics eddy keeps for itself.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    /// The daemon's ceilings on pipeline limits.
    pub ceilings: &'a LimitsConfig,
    /// The prefix of consumer groups and internal topics.
    pub group_prefix: &'a str,
}

impl PipelineSpec {
    /// Checks a requested pipeline and resolves its limits, and its modules
    /// with `resolve`, which turns a step's module reference (a digest or a
    /// unique prefix of one; never a builtin) into the module's digest.
    pub fn check(
        request: SpecRequest,
        rules: Rules<'_>,
        resolve: impl Fn(&str) -> Result<String, SpecError>,
    ) -> Result<Self, SpecError> {
        check(request, rules, resolve)
    }

    /// Checks a spec as recorded (in the registry or the data directory)
    /// exactly as a request is checked, against this daemon's rules: a
    /// record is only as trustworthy as whoever could write to the topic.
    /// Its steps must be full digests; its limits are kept if within this
    /// daemon's ceilings.
    pub fn revalidate(&self, rules: Rules<'_>) -> Result<Self, SpecError> {
        let request = SpecRequest {
            name: self.name.clone(),
            steps: self.steps.clone(),
            inputs: self.inputs.clone(),
            output: self.output.clone(),
            named_outputs: self.named_outputs.clone(),
            config: self.config.clone(),
            start_from: self.start_from,
            guarantee: self.guarantee,
            error_policy: self.error_policy,
            limits: LimitsRequest {
                memory_bytes: Some(self.limits.memory_bytes),
                call_timeout: Some(self.limits.call_timeout),
                max_batch_records: Some(self.limits.max_batch_records),
                batch_linger: Some(self.limits.batch_linger),
                max_output_records: Some(self.limits.max_output_records),
                max_output_bytes: Some(self.limits.max_output_bytes),
            },
            commit_interval: Some(self.commit_interval),
            transaction_timeout: Some(self.transaction_timeout),
            standby_replicas: self.standby_replicas,
            dead_letter_topic: self.dead_letter_topic.clone(),
        };
        check(request, rules, |module| {
            if is_full_digest(module) {
                Ok(module.to_owned())
            } else {
                Err(invalid(format!(
                    "step `{module}` is not a module digest (sha256:<64 hex digits>)"
                )))
            }
        })
    }
}

/// The checks a spec passes, with `resolve` turning each step's module
/// reference (not a builtin) into its digest.
fn check(
    spec: SpecRequest,
    rules: Rules<'_>,
    resolve: impl Fn(&str) -> Result<String, SpecError>,
) -> Result<PipelineSpec, SpecError> {
    let Rules {
        ceilings,
        group_prefix,
    } = rules;
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
        .map(|module| match Builtin::parse(module) {
            Ok(Some(builtin)) => Ok(builtin.reference()),
            Ok(None) => resolve(module),
            Err(e) => Err(invalid(e)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if spec.inputs.is_empty() {
        return Err(invalid("a pipeline needs at least one input topic"));
    }
    for (i, input) in spec.inputs.iter().enumerate() {
        check_topic("input", input, group_prefix)?;
        if spec.inputs[..i].contains(input) {
            return Err(invalid(format!(
                "input topic `{input}` is named twice: each record would be processed twice"
            )));
        }
    }
    check_topic("output", &spec.output, group_prefix)?;
    for (name, topic) in &spec.named_outputs {
        if name.is_empty() {
            return Err(invalid("named outputs need a name (NAME=TOPIC)"));
        }
        check_topic(&format!("output `{name}`"), topic, group_prefix)?;
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
    if let Some(topic) = &spec.dead_letter_topic {
        if spec.error_policy != ErrorPolicy::DeadLetter {
            return Err(invalid(
                "a dead-letter topic is only used with --on-error dead-letter",
            ));
        }
        check_topic("dead-letter", topic, group_prefix)?;
        if spec.inputs.contains(topic) {
            return Err(invalid(format!(
                "topic `{topic}` is both an input and the dead-letter topic: failed records \
                 would be processed again"
            )));
        }
    }
    let limits = resolve_limits(&spec.limits, ceilings)?;
    let transaction_timeout = spec
        .transaction_timeout
        .unwrap_or(DEFAULT_TRANSACTION_TIMEOUT);
    if !(Duration::from_secs(1)..=MAX_TRANSACTION_TIMEOUT).contains(&transaction_timeout) {
        return Err(invalid(format!(
            "transaction-timeout must be between 1s and {}s (brokers refuse longer \
                 transactions by default)",
            MAX_TRANSACTION_TIMEOUT.as_secs()
        )));
    }
    let commit_interval = spec.commit_interval.unwrap_or(DEFAULT_COMMIT_INTERVAL);
    if commit_interval > transaction_timeout / 2 {
        return Err(invalid(format!(
            "commit-interval {commit_interval:?} must be at most half the transaction-timeout \
                 ({transaction_timeout:?}), or transactions would time out before they commit"
        )));
    }
    if spec.standby_replicas > MAX_STANDBY_REPLICAS {
        return Err(invalid(format!(
            "standby-replicas must be at most {MAX_STANDBY_REPLICAS}: each standby is a \
                 full copy of the pipeline's state on another daemon"
        )));
    }
    Ok(PipelineSpec {
        name: spec.name,
        steps,
        inputs: spec.inputs,
        output: spec.output,
        named_outputs: spec.named_outputs,
        config: spec.config,
        start_from: spec.start_from,
        guarantee: spec.guarantee,
        error_policy: spec.error_policy,
        limits,
        commit_interval,
        transaction_timeout,
        standby_replicas: spec.standby_replicas,
        dead_letter_topic: spec.dead_letter_topic,
    })
}

/// The limits asked for, each at most the daemon's ceiling (its default).
fn resolve_limits(asked: &LimitsRequest, ceilings: &LimitsConfig) -> Result<Limits, SpecError> {
    let memory_bytes = limit("memory", asked.memory_bytes, ceilings.memory_bytes)?;
    if memory_bytes < 1 << 20 {
        return Err(invalid("limit memory must be at least 1 MiB"));
    }
    Ok(Limits {
        memory_bytes,
        call_timeout: limit("call-timeout", asked.call_timeout, ceilings.call_timeout)?,
        max_batch_records: limit(
            "max-batch-records",
            asked.max_batch_records,
            ceilings.max_batch_records,
        )?,
        batch_linger: asked
            .batch_linger
            .unwrap_or(ceilings.batch_linger)
            .min(Duration::from_secs(10)),
        max_output_records: limit(
            "max-output-records",
            asked.max_output_records,
            ceilings.max_output_records,
        )?,
        max_output_bytes: limit(
            "max-output-bytes",
            asked.max_output_bytes,
            ceilings.max_output_bytes,
        )?,
        max_record_bytes: ceilings.max_record_bytes,
    })
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
    fn kafkas_and_eddys_own_topics_are_refused() {
        for topic in [
            "__consumer_offsets",
            "__transaction_state",
            "eddy.registry",
            "eddy.other.step-0.changelog",
            "eddy.a.b.step-12.repartition",
        ] {
            let refused = check_topic("output", topic, "eddy.");
            assert!(refused.is_err_and(|e| e.0.contains("may not")), "{topic}");
        }
        for topic in [
            "orders",
            "eddy.orders",
            "eddy.x.step-a.changelog",
            "team.registry",
            "x.step-0.changelog",
        ] {
            assert!(check_topic("output", topic, "eddy.").is_ok(), "{topic}");
        }
    }

    #[test]
    fn a_recorded_spec_is_checked_as_a_request_is() {
        let ceilings = LimitsConfig::default();
        let rules = Rules {
            ceilings: &ceilings,
            group_prefix: "eddy.",
        };
        let digest = format!("sha256:{}", "0f".repeat(32));
        let request = SpecRequest {
            name: "wc".into(),
            steps: vec![digest.clone()],
            inputs: vec!["in".into()],
            output: "out".into(),
            ..SpecRequest::default()
        };
        let spec = check(request, rules, |m| Ok(m.to_owned())).expect("a valid spec");
        assert_eq!(spec.revalidate(rules).ok(), Some(spec.clone()));

        let mut greedy = spec.clone();
        greedy.limits.memory_bytes = ceilings.memory_bytes + 1;
        assert!(
            greedy
                .revalidate(rules)
                .is_err_and(|e| e.0.contains("ceiling"))
        );
        let mut traversing = spec.clone();
        traversing.steps = vec!["sha256:../../secrets".into()];
        assert!(traversing.revalidate(rules).is_err());
        let mut renamed = spec.clone();
        renamed.name = "..".into();
        assert!(renamed.revalidate(rules).is_err());
        let mut registry_writer = spec;
        registry_writer.output = "eddy.registry".into();
        assert!(registry_writer.revalidate(rules).is_err());
    }

    #[test]
    fn only_whole_digests_name_recorded_modules() {
        let hex = "ab".repeat(32);
        assert!(is_full_digest(&format!("sha256:{hex}")));
        for bad in [
            hex.clone(),
            format!("sha256:{}", &hex[2..]),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:../{}", &hex[3..]),
        ] {
            assert!(!is_full_digest(&bad), "{bad}");
        }
    }

    #[test]
    fn limits_above_the_ceiling_are_errors_and_zero_means_default() {
        assert_eq!(limit("m", None, 10u64).ok(), Some(10));
        assert_eq!(limit("m", Some(5u64), 10).ok(), Some(5));
        assert!(limit("m", Some(11u64), 10).is_err());
    }

    /// The fuzz target's seed (tests/fuzz/seeds/pipeline_spec) must pass, or
    /// the fuzzer spends its time on specs that fail to parse.
    #[test]
    fn the_fuzz_seed_is_a_spec_that_passes() {
        let seed = include_str!("../../../tests/fuzz/seeds/pipeline_spec/word-count.json");
        let spec: PipelineSpec = serde_json::from_str(seed).expect("the seed parses");
        let ceilings = LimitsConfig::default();
        let rules = Rules {
            ceilings: &ceilings,
            group_prefix: "eddy.",
        };
        assert_eq!(spec.revalidate(rules).ok(), Some(spec));
    }
}

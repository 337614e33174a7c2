//! Pipeline specs as anyone with write access to the registry topic could
//! write them (JSON): checking never panics, and a spec it accepts asks
//! for nothing a request could not: a name that stays a file name, module
//! digests or builtins, no topic of Kafka's or eddy's own, limits within
//! the daemon's ceilings. An accepted spec passes again unchanged and
//! survives its own JSON.

#![no_main]

use eddy_registry::{is_full_digest, is_topic_name};
use eddy_spec::{Builtin, ErrorPolicy, LimitsConfig, PipelineSpec, Rules, check_name};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

const GROUP_PREFIX: &str = "eddy.";

/// Whether `topic` is one only Kafka or eddy itself may write.
fn internal(topic: &str) -> bool {
    topic.starts_with("__")
        || topic == format!("{GROUP_PREFIX}registry")
        || (topic.starts_with(GROUP_PREFIX)
            && topic.contains(".step-")
            && (topic.ends_with(".changelog") || topic.ends_with(".repartition")))
}

fuzz_target!(|json: &[u8]| {
    let Ok(recorded) = serde_json::from_slice::<PipelineSpec>(json) else {
        return;
    };
    let ceilings = LimitsConfig::default();
    let rules = Rules {
        ceilings: &ceilings,
        group_prefix: GROUP_PREFIX,
    };
    let Ok(spec) = recorded.revalidate(rules) else {
        return;
    };
    assert!(check_name(&spec.name).is_ok() && !spec.name.contains(['/', '\0']));
    assert!(!spec.name.starts_with('.'), "{}", spec.name);
    assert!((1..=16).contains(&spec.steps.len()));
    for step in &spec.steps {
        assert!(
            is_full_digest(step) || matches!(Builtin::parse(step), Ok(Some(_))),
            "{step}"
        );
    }
    assert!(!spec.inputs.is_empty());
    let inputs = spec.inputs.iter().map(String::as_str);
    let dead_letter = spec.dead_letter_topic.as_deref();
    for topic in inputs.chain(spec.output_topics()).chain(dead_letter) {
        assert!(is_topic_name(topic) && !internal(topic), "{topic}");
    }
    for input in &spec.inputs {
        assert!(spec.output_topics().all(|o| o != input), "{input}");
        assert_eq!(spec.inputs.iter().filter(|i| *i == input).count(), 1);
    }
    if spec.dead_letter_topic.is_some() {
        assert_eq!(spec.error_policy, ErrorPolicy::DeadLetter);
    }
    let limits = &spec.limits;
    assert!((1 << 20..=ceilings.memory_bytes).contains(&limits.memory_bytes));
    assert!(limits.call_timeout <= ceilings.call_timeout);
    assert!(limits.max_batch_records <= ceilings.max_batch_records);
    assert!(limits.max_output_records <= ceilings.max_output_records);
    assert!(limits.max_output_bytes <= ceilings.max_output_bytes);
    assert!(limits.batch_linger <= Duration::from_secs(10));
    assert!((Duration::from_secs(1)..=Duration::from_secs(900)).contains(&spec.transaction_timeout));
    assert!(spec.commit_interval <= spec.transaction_timeout / 2);
    assert!(spec.standby_replicas <= 8);

    assert_eq!(spec.revalidate(rules).ok().as_ref(), Some(&spec), "not a fixed point");
    let again: PipelineSpec =
        serde_json::from_str(&serde_json::to_string(&spec).expect("serializes")).expect("parses");
    assert_eq!(again, spec, "JSON does not round-trip");
});

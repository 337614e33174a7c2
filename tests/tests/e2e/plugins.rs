//! Each example plugin's exact output through the daemon.

use super::setup;
use eddy_tests::{Rec, consume, produce};
use std::time::Duration;

fn sorted(
    mut records: Vec<(Option<String>, Option<String>)>,
) -> Vec<(Option<String>, Option<String>)> {
    records.sort();
    records
}

fn pairs(records: &[Rec]) -> Vec<(Option<String>, Option<String>)> {
    sorted(records.iter().map(|r| (r.key_text(), r.text())).collect())
}

#[test]
fn uppercase_upper_cases_values_and_passes_keys_headers_and_tombstones() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("in", 3), ("out", 3)])?;
    daemon.deploy("shout", "uppercase", "in", "out", &[])?;
    let mut with_header = Rec::value("with header").keyed("h");
    with_header.headers = vec![
        ("trace".into(), Some(b"abc".to_vec())),
        ("null".into(), None),
    ];
    let input = vec![
        Rec::value("hello world").keyed("k1"),
        Rec::tombstone("k2"),
        Rec::value("").keyed("empty"),
        Rec::value("Mixed Case 123 ünï"),
        with_header,
    ];
    produce(broker.bootstrap(), "in", &input)?;
    let out = consume(
        broker.bootstrap(),
        "out",
        input.len(),
        Duration::from_secs(60),
        Duration::from_secs(1),
    )?;
    let expected = sorted(vec![
        (Some("k1".into()), Some("HELLO WORLD".into())),
        (Some("k2".into()), None),
        (Some("empty".into()), Some(String::new())),
        (None, Some("MIXED CASE 123 ÜNÏ".into())),
        (Some("h".into()), Some("WITH HEADER".into())),
    ]);
    assert_eq!(pairs(&out), expected);
    // A missing value stays missing: a tombstone, not an empty value.
    let tombstone = out.iter().find(|r| r.key_text().as_deref() == Some("k2"));
    assert_eq!(tombstone.map(|r| r.value.is_none()), Some(true));
    let headed = out.iter().find(|r| r.key_text().as_deref() == Some("h"));
    assert_eq!(
        headed.map(|r| r.headers.clone()),
        Some(vec![
            ("trace".into(), Some(b"abc".to_vec())),
            ("null".into(), None)
        ])
    );
    // Keyed outputs are partitioned with murmur2, as the keyed inputs were.
    let inputs = consume(
        broker.bootstrap(),
        "in",
        input.len(),
        Duration::from_secs(10),
        Duration::ZERO,
    )?;
    for o in out.iter().filter(|r| r.key.is_some()) {
        let i = inputs
            .iter()
            .find(|i| i.key == o.key)
            .expect("input for output");
        assert_eq!(o.partition, i.partition, "key {:?}", o.key_text());
    }
    Ok(())
}

/// A plugin built against `packed-processor` as 0.1.1 shipped it (timers
/// answered in typed records) still runs: its wall-clock timers fire and
/// their outputs reach the output topic.
#[test]
fn a_plugin_of_the_0_1_1_packed_world_still_runs_and_fires_its_timers() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("in", 2), ("out", 2)])?;
    daemon.deploy("legacy", "packed_0_1_1", "in", "out", &[])?;
    let input: Vec<Rec> = ["a", "b", "c"]
        .iter()
        .map(|k| Rec::value("x").keyed(*k))
        .collect();
    produce(broker.bootstrap(), "in", &input)?;
    let out = consume(
        broker.bootstrap(),
        "out",
        input.len(),
        Duration::from_secs(60),
        Duration::from_secs(1),
    )?;
    let expected: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|k| (Some((*k).to_owned()), Some("timer".to_owned())))
        .collect();
    assert_eq!(pairs(&out), expected);
    Ok(())
}

/// The builtin `uppercase` (the benchmark's measure of what WebAssembly
/// costs) must do exactly what the module does, or the comparison means
/// nothing; and the module written against the `processor` world (records
/// as typed lists) must give what the SDK's `packed-processor` module gives.
#[test]
fn uppercase_gives_the_same_output_packed_typed_and_builtin() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("in", 2), ("wasm", 2), ("typed", 2), ("native", 2)])?;
    let mut input: Vec<Rec> = (0..200)
        .map(|i| Rec::value(format!("line {i} ünï straße")).keyed(format!("k{i}")))
        .collect();
    input.push(Rec::tombstone("gone"));
    input.push(Rec::value(b"\xffabc".to_vec()));
    let mut headed = Rec::value("with header").keyed("h");
    headed.headers = vec![("trace".into(), Some(b"abc".to_vec()))];
    input.push(headed);
    produce(broker.bootstrap(), "in", &input)?;
    daemon.deploy("wasm", "uppercase", "in", "wasm", &[])?;
    daemon.deploy("typed", "typed_uppercase", "in", "typed", &[])?;
    daemon.eddy_ok(&[
        "pipeline",
        "create",
        "native",
        "--module",
        "builtin:uppercase",
        "--input",
        "in",
        "--output",
        "native",
    ])?;
    let read = |topic| {
        consume(
            broker.bootstrap(),
            topic,
            input.len(),
            Duration::from_secs(60),
            Duration::from_secs(1),
        )
    };
    let full = |records: Vec<Rec>| {
        let mut all: Vec<_> = records
            .into_iter()
            .map(|r| (r.key, r.value, r.headers, r.timestamp))
            .collect();
        all.sort();
        all
    };
    let (wasm, typed, native) = (read("wasm")?, read("typed")?, read("native")?);
    assert_eq!(wasm.len(), input.len());
    let wasm = full(wasm);
    assert_eq!(wasm, full(typed));
    assert_eq!(wasm, full(native));
    let shown = daemon.eddy_ok(&["pipeline", "get", "native"])?;
    assert!(shown.contains("builtin:uppercase"), "{shown}");
    Ok(())
}

#[test]
fn filter_keeps_what_matches_the_configured_pattern() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("logs", 2), ("errors", 2)])?;
    daemon.deploy(
        "errors",
        "filter",
        "logs",
        "errors",
        &["--config", "pattern=^(ERROR|FATAL)"],
    )?;
    let lines = [
        "ERROR disk full",
        "INFO started",
        "FATAL oops",
        "debug ERROR not at start",
        "ERROR again",
    ];
    produce(broker.bootstrap(), "logs", &lines.map(Rec::value))?;
    let out = consume(
        broker.bootstrap(),
        "errors",
        3,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )?;
    let mut values: Vec<String> = out.iter().filter_map(Rec::text).collect();
    values.sort();
    assert_eq!(values, ["ERROR again", "ERROR disk full", "FATAL oops"]);
    Ok(())
}

#[test]
fn filter_without_its_pattern_fails_visibly() -> anyhow::Result<()> {
    let (_broker, daemon, _dir) = setup(&[("logs", 1), ("errors", 1)])?;
    daemon.deploy("errors", "filter", "logs", "errors", &[])?;
    let status = eddy_tests::wait_for(
        "the task to fail on its config",
        Duration::from_secs(30),
        || {
            let p = daemon.pipeline("errors")?;
            let failed = p
                .partitions
                .iter()
                .any(|s| s.last_error.contains("missing configuration key `pattern`"));
            Ok(failed.then_some(p))
        },
    )?;
    assert_eq!(status.state, eddy_tests::v1::PipelineState::Failed as i32);
    Ok(())
}

#[test]
fn split_words_fans_out_one_keyed_record_per_lower_cased_word() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("lines", 3), ("words", 3)])?;
    daemon.deploy("split", "split-words", "lines", "words", &[])?;
    produce(
        broker.bootstrap(),
        "lines",
        &[
            Rec::value("The quick brown fox"),
            Rec::value("jumps over the lazy dog!"),
            Rec::value("  Hello,hello;HELLO  "),
            Rec::tombstone("gone"),
        ],
    )?;
    let words = "the quick brown fox jumps over the lazy dog hello hello hello";
    let expected: Vec<&str> = words.split(' ').collect();
    let out = consume(
        broker.bootstrap(),
        "words",
        expected.len(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    )?;
    let mut got: Vec<String> = out.iter().filter_map(Rec::key_text).collect();
    got.sort();
    let mut expected: Vec<String> = expected.into_iter().map(String::from).collect();
    expected.sort();
    assert_eq!(got, expected);
    assert!(
        out.iter().all(|r| r.key == r.value),
        "each word is key and value"
    );
    // Every occurrence of a word lands in the same partition.
    let the: Vec<i32> = out
        .iter()
        .filter(|r| r.key_text().as_deref() == Some("the"))
        .map(|r| r.partition)
        .collect();
    assert!(the.windows(2).all(|w| w[0] == w[1]), "{the:?}");
    Ok(())
}

//! Exactly-once delivery: every output once for a `read_committed` reader,
//! through SIGKILLs and restarts. The crash harness (`just crash`) runs the
//! larger proof with an independent client; these keep CI honest.

use super::setup;
use anyhow::Context as _;
use eddy_tests::{Daemon, Rec, committed_total, consume, kill_mid_stream, produce, wait_for};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn numbered(n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec::value(format!("record-{i:06}")).keyed(format!("k{}", i % 97)))
        .collect()
}

/// How many times each output value was seen.
fn counts(outputs: &[Rec]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for o in outputs {
        *counts.entry(o.text().unwrap_or_default()).or_default() += 1;
    }
    counts
}

#[test]
fn sigkills_under_exactly_once_leave_every_output_exactly_once() -> anyhow::Result<()> {
    let (broker, mut daemon, dir) = setup(&[("in", 3), ("out", 3)])?;
    let total = 20_000;
    let inputs = numbered(total);
    // Records keep arriving while the daemon is killed, as in Kafka's own
    // system tests: 100 every 300 ms (a minute's worth, far longer than the
    // kills take), the rest at once when the kills are done. Small batches
    // and a short commit interval leave transactions open at each kill.
    daemon.deploy(
        "shout",
        "uppercase",
        "in",
        "out",
        &[
            "--guarantee",
            "exactly-once",
            "--max-batch",
            "10",
            "--commit-interval",
            "50ms",
        ],
    )?;
    let killing = Arc::new(AtomicBool::new(true));
    let feeder = {
        let brokers = broker.bootstrap().to_owned();
        let inputs = inputs.clone();
        let killing = killing.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            for chunk in inputs.chunks(100) {
                produce(&brokers, "in", chunk)?;
                if killing.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
            Ok(())
        })
    };
    let mut last = 0;
    for kill in 1..=3 {
        wait_for(
            "progress since the last kill",
            Duration::from_secs(120),
            || {
                let p = daemon.pipeline("shout")?;
                Ok((committed_total(&p) > last).then_some(()))
            },
        )?;
        last = kill_mid_stream(
            &mut daemon,
            broker.bootstrap(),
            "eddy.shout",
            ("in", 3),
            total,
        )
        .with_context(|| format!("kill {kill}"))?;
        daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    }
    killing.store(false, Ordering::Relaxed);
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the feeder panicked"))??;
    wait_for("all input committed", Duration::from_secs(180), || {
        let p = daemon.pipeline("shout")?;
        Ok((committed_total(&p) == total as i64).then_some(()))
    })?;
    let out = consume(
        broker.bootstrap(),
        "out",
        total,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )?;
    let seen = counts(&out);
    let missing = inputs
        .iter()
        .filter_map(Rec::text)
        .filter(|v| !seen.contains_key(&v.to_uppercase()))
        .count();
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(missing, 0, "outputs missing");
    assert!(
        doubled.is_empty(),
        "{} outputs seen more than once, e.g. {:?}",
        doubled.len(),
        doubled.first()
    );
    assert_eq!(out.len(), total);
    Ok(())
}

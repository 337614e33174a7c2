//! At-least-once delivery: nothing lost, through crashes and restarts.

use super::setup;
use eddy_tests::{
    Daemon, Rec, committed_total, consume, group_committed, kill_mid_stream, produce, wait_for,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn numbered(n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec::value(format!("record-{i:06}")).keyed(format!("k{}", i % 97)))
        .collect()
}

/// Asserts every input's upper-cased value is among the outputs; returns
/// how many outputs are duplicates.
fn assert_nothing_lost(inputs: &[Rec], outputs: &[Rec]) -> usize {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for o in outputs {
        *counts.entry(o.text().unwrap_or_default()).or_default() += 1;
    }
    let missing: Vec<String> = inputs
        .iter()
        .filter_map(Rec::text)
        .map(|v| v.to_uppercase())
        .filter(|v| !counts.contains_key(v))
        .collect();
    assert!(
        missing.is_empty(),
        "{} inputs missing from the output, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    counts.values().filter(|c| **c > 1).map(|c| c - 1).sum()
}

#[test]
fn ten_thousand_records_over_three_partitions_none_lost() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("in", 3), ("out", 3)])?;
    let inputs = numbered(10_000);
    produce(broker.bootstrap(), "in", &inputs)?;
    daemon.deploy("shout", "uppercase", "in", "out", &[])?;
    let out = consume(
        broker.bootstrap(),
        "out",
        inputs.len(),
        Duration::from_secs(120),
        Duration::from_secs(2),
    )?;
    let duplicated = assert_nothing_lost(&inputs, &out);
    assert_eq!(duplicated, 0, "no crash, so no duplicates");
    let status = wait_for("all input committed", Duration::from_secs(30), || {
        let p = daemon.pipeline("shout")?;
        Ok((committed_total(&p) == 10_000).then_some(p))
    })?;
    assert_eq!(status.partitions.len(), 3);
    assert!(
        status
            .partitions
            .iter()
            .all(|p| p.lag == 0 && p.last_error.is_empty())
    );
    let processed: u64 = status.partitions.iter().map(|p| p.records_in).sum();
    assert_eq!(processed, 10_000);
    // Every partition timed its processor calls: at least one a batch.
    for p in &status.partitions {
        let calls = p.guest_calls.unwrap_or_default();
        assert!(
            calls.calls > 0,
            "no calls timed for partition {}",
            p.partition
        );
        assert!(
            calls.p50_us <= calls.p99_us && calls.p99_us <= calls.max_us && calls.max_us > 0,
            "call times out of order: {calls:?}"
        );
    }
    Ok(())
}

#[test]
fn sigkill_mid_stream_then_restart_loses_nothing() -> anyhow::Result<()> {
    let (broker, mut daemon, dir) = setup(&[("in", 3), ("out", 3)])?;
    let total = 30_000;
    let inputs = numbered(total);
    let (first, rest) = inputs.split_at(total / 3);
    produce(broker.bootstrap(), "in", first)?;
    // One-record batches, so a record costs a whole call and a commit share.
    daemon.deploy("shout", "uppercase", "in", "out", &["--max-batch", "1"])?;
    wait_for("some input committed", Duration::from_secs(60), || {
        let p = daemon.pipeline("shout")?;
        Ok((committed_total(&p) > 0).then_some(()))
    })?;
    // The rest arrives as fast as it can be produced, and the kill lands
    // while it does: however fast the pipeline, it is busy with records in
    // flight, and input is still to come.
    let sent = Arc::new(AtomicUsize::new(0));
    let feeder = {
        let (brokers, rest, sent) = (broker.bootstrap().to_owned(), rest.to_vec(), sent.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            for chunk in rest.chunks(1_000) {
                produce(&brokers, "in", chunk)?;
                sent.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            Ok(())
        })
    };
    wait_for("input arriving", Duration::from_secs(30), || {
        Ok((sent.load(Ordering::Relaxed) >= 2_000).then_some(()))
    })?;
    let committed = kill_mid_stream(
        &mut daemon,
        broker.bootstrap(),
        "eddy.shout",
        ("in", 3),
        total,
    )?;
    anyhow::ensure!(
        sent.load(Ordering::Relaxed) < rest.len(),
        "the input was still arriving when the daemon was killed"
    );
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the feeding thread panicked"))??;
    let restarted = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    // Every input committed means every output acknowledged: read them only
    // then. (Counting outputs as they come would stop early, the replayed
    // duplicates making up the count while the last records are still to
    // come.)
    wait_for(
        "all input committed after restart",
        Duration::from_secs(180),
        || {
            let p = restarted.pipeline("shout")?;
            Ok((committed_total(&p) == total as i64).then_some(()))
        },
    )?;
    let out = consume(
        broker.bootstrap(),
        "out",
        total,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )?;
    let duplicated = assert_nothing_lost(&inputs, &out);
    eprintln!(
        "killed with {committed}/{total} committed; {duplicated} duplicates after restart (at-least-once)"
    );
    Ok(())
}

#[test]
fn sigterm_commits_exits_zero_and_a_restart_resumes_from_committed_offsets() -> anyhow::Result<()> {
    let (broker, mut daemon, dir) = setup(&[("in", 3), ("out", 3)])?;
    let first = numbered(1_000);
    produce(broker.bootstrap(), "in", &first)?;
    daemon.deploy("shout", "uppercase", "in", "out", &[])?;
    consume(
        broker.bootstrap(),
        "out",
        first.len(),
        Duration::from_secs(60),
        Duration::ZERO,
    )?;
    let status = daemon.terminate(Duration::from_secs(30))?;
    assert!(status.success(), "exit status {status:?}");
    let committed: i64 = group_committed(broker.bootstrap(), "eddy.shout", "in", 3)?
        .iter()
        .sum();
    assert_eq!(
        committed, 1_000,
        "everything processed was committed on the way out"
    );

    let restarted = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    let listed = restarted.eddy_ok(&["pipeline", "list"])?;
    assert!(listed.contains("shout"), "{listed}");
    let second: Vec<Rec> = (0..500)
        .map(|i| Rec::value(format!("second-{i}")))
        .collect();
    produce(broker.bootstrap(), "in", &second)?;
    let out = consume(
        broker.bootstrap(),
        "out",
        1_500,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )?;
    let all: Vec<Rec> = first.iter().chain(&second).cloned().collect();
    let duplicated = assert_nothing_lost(&all, &out);
    assert_eq!(duplicated, 0, "a clean stop replays nothing");
    let log = restarted.log();
    assert!(
        log.contains("compiled module loaded from disk") && !log.contains("module compiled"),
        "the restart loads the module compiled before it instead of compiling it again:\n{log}"
    );
    Ok(())
}

#[test]
fn an_offset_that_fell_out_of_the_log_fails_loudly_instead_of_jumping() -> anyhow::Result<()> {
    let broker = eddy_tests::Broker::start_with(
        &[("in", 1), ("out", 1)],
        &eddy_tests::BrokerOptions {
            retention_bytes: Some(5 << 20),
            ..eddy_tests::BrokerOptions::default()
        },
    )?;
    let dir = tempfile::tempdir()?;
    let daemon = eddy_tests::Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    produce(broker.bootstrap(), "in", &numbered(10))?;
    daemon.deploy("shout", "uppercase", "in", "out", &[])?;
    consume(
        broker.bootstrap(),
        "out",
        10,
        Duration::from_secs(60),
        Duration::ZERO,
    )?;
    daemon.eddy_ok(&["pipeline", "pause", "shout"])?;
    // While the pipeline is paused, retention deletes what it has not read:
    // this broker keeps 5 MiB per partition, 8 MiB are written.
    let big: Vec<Rec> = (0..8 * 1024)
        .map(|i| Rec::value(format!("{i:01024}")))
        .collect();
    produce(broker.bootstrap(), "in", &big)?;
    // Apache Kafka applies retention in the background (every second here).
    wait_for(
        "retention to delete offset 10",
        Duration::from_secs(60),
        || {
            let (low, _) = eddy_tests::watermarks(broker.bootstrap(), "in")?[0];
            Ok((low > 10).then_some(()))
        },
    )?;
    daemon.eddy_ok(&["pipeline", "resume", "shout"])?;
    let failed = wait_for(
        "the task to fail on its position",
        Duration::from_secs(60),
        || {
            let p = daemon.pipeline("shout")?;
            Ok(p.partitions
                .iter()
                .any(|s| {
                    s.last_error
                        .contains("committed offset 10 of in/0 is outside the log")
                })
                .then_some(p))
        },
    )
    .map_err(|e| {
        e.context(format!(
            "log {:?}, pipeline {:?}",
            eddy_tests::watermarks(broker.bootstrap(), "in"),
            daemon.pipeline("shout")
        ))
    })?;
    assert_eq!(failed.state, eddy_tests::v1::PipelineState::Failed as i32);
    let out = consume(
        broker.bootstrap(),
        "out",
        11,
        Duration::from_secs(3),
        Duration::ZERO,
    )?;
    assert_eq!(out.len(), 10, "nothing was processed past the lost records");
    assert_eq!(
        group_committed(broker.bootstrap(), "eddy.shout", "in", 1)?,
        [10],
        "the position was not moved silently"
    );
    Ok(())
}

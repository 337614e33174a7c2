//! Compaction, for real: Apache Kafka compacts the changelogs and the
//! pipeline registry that eddy creates `cleanup.policy=compact`, and eddy
//! rebuilds state and joins a cluster from what compaction left. These tests
//! always run on Apache Kafka: the dev broker never compacts.

use eddy_tests::{Broker, Daemon, Rec, produce, read_all, wait_for, watermarks};
use std::collections::BTreeMap;
use std::time::Duration;

/// A broker that compacts within seconds: segments roll every second, and
/// the cleaner takes any log with 1 % of it superseded.
fn compacting_kafka(topics: &[(&str, i32)]) -> anyhow::Result<Broker> {
    let configs = [
        ("log.roll.ms", "1000"),
        ("log.cleaner.min.cleanable.ratio", "0.01"),
        ("log.cleaner.min.compaction.lag.ms", "0"),
        ("log.cleaner.dedupe.buffer.size", "16777216"),
    ];
    Broker::kafka(topics, &configs)
}

/// How many offsets of `topic` hold no record any more: removed by
/// compaction (at-least-once writes no transaction markers).
fn compacted_away(brokers: &str, topic: &str) -> anyhow::Result<i64> {
    let offsets: i64 = watermarks(brokers, topic)?
        .iter()
        .map(|(low, high)| high - low)
        .sum();
    Ok(offsets - i64::try_from(read_all(brokers, topic)?.len())?)
}

/// Lines over a vocabulary of 20 words, so that every word's count is
/// superseded many times in the changelog.
fn lines(from: usize, count: usize, counts: &mut BTreeMap<String, u64>) -> Vec<Rec> {
    (from..from + count)
        .map(|i| {
            let words: Vec<String> = (0..4)
                .map(|j| format!("w{}", (i * 7 + j * 3) % 20))
                .collect();
            for w in &words {
                *counts.entry(w.clone()).or_default() += 1;
            }
            Rec::value(words.join(" "))
        })
        .collect()
}

fn as_text(counts: &BTreeMap<String, u64>) -> BTreeMap<String, String> {
    counts
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

fn state_equals(daemon: &Daemon, want: &BTreeMap<String, String>) -> anyhow::Result<Option<()>> {
    match daemon.state_all("wc") {
        Ok(state) => Ok((&state == want).then_some(())),
        Err(s) if s.code() == tonic::Code::Unavailable => Ok(None),
        Err(s) => Err(s.into()),
    }
}

#[test]
fn state_is_rebuilt_exactly_from_a_compacted_changelog_and_a_new_daemon_joins_from_a_compacted_registry()
-> anyhow::Result<()> {
    let broker = compacting_kafka(&[("lines", 2), ("counts", 2)])?;
    let brokers = broker.bootstrap();
    let dir = tempfile::tempdir()?;
    let mut daemon = Daemon::start(brokers, dir.path(), &[], &[])?;
    daemon.deploy_steps("wc", &["split-words", "count"], "lines", "counts", &[])?;

    // Input in rounds until the broker has compacted the changelog of the
    // counting step: each round supersedes every word's count again.
    let changelog = "eddy.wc.step-1.changelog";
    let mut counts = BTreeMap::new();
    let mut produced = 0;
    wait_for(
        "the changelog to be compacted",
        Duration::from_secs(120),
        || {
            let round = lines(produced, 200, &mut counts);
            produced += round.len();
            produce(brokers, "lines", &round)?;
            let want = as_text(&counts);
            wait_for("the round counted", Duration::from_secs(60), || {
                state_equals(&daemon, &want)
            })?;
            Ok((compacted_away(brokers, changelog)? > 0).then_some(()))
        },
    )?;
    let reference = as_text(&counts);
    let written: i64 = watermarks(brokers, changelog)?.iter().map(|(_, h)| h).sum();
    let kept = read_all(brokers, changelog)?;
    assert!(
        i64::try_from(kept.len())? < written,
        "compaction removed superseded counts: {} of {written} kept",
        kept.len()
    );

    // Lose the local state: the daemon rebuilds it from what compaction left.
    daemon.kill();
    std::fs::remove_dir_all(dir.path().join("state"))?;
    let daemon = Daemon::start(brokers, dir.path(), &[], &[])?;
    wait_for("state rebuilt", Duration::from_secs(120), || {
        state_equals(&daemon, &reference)
    })?;
    let status = daemon.pipeline("wc")?;
    let replayed: u64 = status
        .partitions
        .iter()
        .filter(|p| p.step == 1)
        .filter_map(|p| p.restore.as_ref().map(|r| r.replayed))
        .sum();
    assert!(
        replayed > 0 && replayed < u64::try_from(written)?,
        "restored from the compacted changelog ({replayed} replayed of {written} written)"
    );

    // The registry: pipelines created and deleted until the broker has
    // compacted it, then a daemon on a fresh data directory learns exactly
    // the live pipelines from it.
    let registry = "eddy.registry";
    let mut rounds = 0;
    wait_for(
        "the registry to be compacted",
        Duration::from_secs(120),
        || {
            rounds += 1;
            daemon.deploy("passing", "uppercase", "lines", "counts", &[])?;
            daemon.eddy_ok(&["pipeline", "delete", "passing"])?;
            Ok((compacted_away(brokers, registry)? > 0).then_some(()))
        },
    )?;
    daemon.deploy("kept", "uppercase", "lines", "counts", &[])?;
    let newcomer_dir = tempfile::tempdir()?;
    let newcomer = Daemon::start(brokers, newcomer_dir.path(), &[], &[])?;
    let names = wait_for(
        "the newcomer to know both live pipelines",
        Duration::from_secs(60),
        || {
            let listed = newcomer.eddy_ok(&["pipeline", "list"])?;
            Ok((listed.contains("wc") && listed.contains("kept")).then_some(listed))
        },
    )?;
    assert!(
        !names.contains("passing"),
        "a pipeline deleted {rounds} times stays deleted: {names}"
    );
    assert_eq!(
        newcomer.pipeline("passing").map_err(|s| s.code()).err(),
        Some(tonic::Code::NotFound)
    );
    // And it answers queries on the rebuilt state, wherever the keys live.
    wait_for("the newcomer answers", Duration::from_secs(120), || {
        state_equals(&newcomer, &reference)
    })?;
    Ok(())
}

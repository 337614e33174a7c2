//! A daemon killed and restarted within its session timeout takes its
//! partitions back at once: each consumer is a static group member
//! (`group.instance.id` from the daemon id), so Apache Kafka hands the
//! restarted member its old assignment without a rebalance and the other
//! daemons never stop. On Apache Kafka: the dev broker rebalances the group
//! on every join, static or not.

use eddy_tests::{Broker, Daemon, Rec, consume, produce, v1, wait_for};
use std::collections::BTreeSet;
use std::time::Duration;

/// The input partitions `daemon` runs now.
fn owned(daemon: &Daemon) -> anyhow::Result<BTreeSet<i32>> {
    let p: v1::Pipeline = daemon.pipeline("shout")?;
    Ok(p.partitions
        .iter()
        .filter(|s| s.assigned)
        .map(|s| s.partition)
        .collect())
}

/// How many times a daemon's `log` shows a rebalance of its partitions.
fn rebalances(log: &str) -> usize {
    log.matches("partitions revoked").count() + log.matches("partitions assigned").count()
}

fn batch(from: usize, count: usize) -> Vec<Rec> {
    (from..from + count)
        .map(|i| Rec::value(format!("r{i:05}")).keyed(format!("k{i}")))
        .collect()
}

#[test]
fn a_daemon_killed_and_restarted_gets_its_partitions_back_and_the_other_never_stops()
-> anyhow::Result<()> {
    let broker = Broker::kafka(&[("in", 4), ("out", 4)], &[])?;
    let brokers = broker.bootstrap();
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    // Long enough that the restart, however loaded the machine, lands
    // within the killed member's session.
    let session = ["--session-timeout", "60s"];
    let a = Daemon::start(brokers, dir_a.path(), &session, &[])?;
    let mut b = Daemon::start(brokers, dir_b.path(), &session, &[])?;
    a.deploy(
        "shout",
        "uppercase",
        "in",
        "out",
        &["--guarantee", "exactly-once"],
    )?;
    produce(brokers, "in", &batch(0, 200))?;
    let out = consume(
        brokers,
        "out",
        200,
        Duration::from_secs(120),
        Duration::ZERO,
    )?;
    anyhow::ensure!(out.len() >= 200, "only {} of 200 out", out.len());
    // The group may still be settling (the first daemon alone, then both):
    // the assignment is taken once the two daemons split the four
    // partitions between them and neither logged a rebalance between two
    // looks that agree.
    let mut last_look = None;
    let (mine, theirs, a_log_before) = wait_for(
        "the two daemons to settle on a split of the four partitions",
        Duration::from_secs(120),
        || {
            let a_log = a.log();
            let look = (
                owned(&a)?,
                owned(&b)?,
                rebalances(&a_log),
                rebalances(&b.log()),
            );
            let (a_owns, b_owns) = (&look.0, &look.1);
            let split = !a_owns.is_empty()
                && !b_owns.is_empty()
                && a_owns.is_disjoint(b_owns)
                && a_owns.union(b_owns).count() == 4;
            let settled = split && last_look.as_ref() == Some(&look);
            last_look = Some(look.clone());
            Ok(settled.then_some((look.0, look.1, a_log.len())))
        },
    )?;

    b.kill();
    b = Daemon::start(brokers, dir_b.path(), &session, &[])?;
    produce(brokers, "in", &batch(200, 200))?;
    let out = consume(
        brokers,
        "out",
        400,
        Duration::from_secs(120),
        Duration::from_secs(1),
    )?;
    let values: BTreeSet<String> = out.iter().filter_map(Rec::text).collect();
    assert_eq!(
        (out.len(), values.len()),
        (400, 400),
        "every record out once after the restart"
    );
    let a_log = a.log();
    let since_the_kill = a_log.get(a_log_before..).unwrap_or_default();
    assert!(
        !since_the_kill.contains("partitions revoked"),
        "the other daemon saw a rebalance while its peer restarted:\n{since_the_kill}"
    );
    assert_eq!(
        owned(&a)?,
        mine,
        "the other daemon kept its partitions; its log:\n{}",
        a.log()
    );
    assert_eq!(
        owned(&b)?,
        theirs,
        "the restarted daemon runs the partitions it ran; its log:\n{}",
        b.log()
    );
    Ok(())
}

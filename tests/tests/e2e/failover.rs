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
    let (mine, theirs) = wait_for(
        "both daemons to run tasks",
        Duration::from_secs(120),
        || {
            let (a_owns, b_owns) = (owned(&a)?, owned(&b)?);
            Ok(
                (!a_owns.is_empty() && !b_owns.is_empty() && a_owns.len() + b_owns.len() == 4)
                    .then_some((a_owns, b_owns)),
            )
        },
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
    let a_log_before = a.log().len();

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
    assert_eq!(owned(&a)?, mine, "the other daemon kept its partitions");
    assert_eq!(
        owned(&b)?,
        theirs,
        "the restarted daemon runs the partitions it ran; its log:\n{}",
        b.log()
    );
    Ok(())
}

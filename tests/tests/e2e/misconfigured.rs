//! A Kafka cluster set up in a way eddy cannot work with gets a clear error
//! that names the setting to change, the daemon keeps serving, and nothing
//! is consumed past it. These run on Apache Kafka: the dev broker has no
//! topic configs and no transaction state log to misconfigure.

use eddy_tests::{Broker, Daemon, Rec, produce, wait_for};
use std::time::Duration;

/// Deploys `uppercase` from `in` to `out` exactly-once as `shout`, and
/// waits for its task's first error.
fn exactly_once_task_error(daemon: &Daemon, timeout: Duration) -> anyhow::Result<String> {
    daemon.deploy(
        "shout",
        "uppercase",
        "in",
        "out",
        &["--guarantee", "exactly-once"],
    )?;
    wait_for("the task to report why it cannot run", timeout, || {
        let p = daemon.pipeline("shout")?;
        Ok(p.partitions
            .iter()
            .find(|s| !s.last_error.is_empty())
            .map(|s| s.last_error.clone()))
    })
}

#[test]
fn an_existing_internal_topic_with_the_wrong_cleanup_policy_is_refused_by_name()
-> anyhow::Result<()> {
    let broker = Broker::kafka(&[("lines", 2), ("counts", 2)], &[])?;
    let brokers = broker.bootstrap();
    // Made by hand before the pipeline: a changelog deleted by age would
    // lose state, a compacted repartition topic would lose records.
    broker.create_topics(
        &[("eddy.wc.step-1.changelog", 2)],
        &[("cleanup.policy", "delete")],
    )?;
    broker.create_topics(
        &[("eddy.wc.step-1.repartition", 2)],
        &[("cleanup.policy", "compact")],
    )?;
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(brokers, dir.path(), &[], &[])?;
    let refused = daemon.eddy(&[
        "pipeline",
        "create",
        "wc",
        "--module",
        &eddy_tests::plugin("split-words").to_string_lossy(),
        "--module",
        &eddy_tests::plugin("count").to_string_lossy(),
        "--input",
        "lines",
        "--output",
        "counts",
    ])?;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "topic `eddy.wc.step-1.repartition` has cleanup.policy=compact but eddy needs delete"
        ),
        "{stderr}"
    );

    // With the repartition topic put right, the pipeline is created, and its
    // counting step reports the changelog's policy instead of running.
    broker.delete_topics(&["eddy.wc.step-1.repartition"])?;
    daemon.deploy_steps("wc", &["split-words", "count"], "lines", "counts", &[])?;
    let error = wait_for("the changelog refused", Duration::from_secs(60), || {
        let p = daemon.pipeline("wc")?;
        Ok(p.error.contains("cleanup.policy").then_some(p.error))
    })?;
    assert!(
        error.contains(
            "topic `eddy.wc.step-1.changelog` has cleanup.policy=delete but eddy needs compact"
        ),
        "{error}"
    );
    Ok(())
}

#[test]
fn a_cluster_that_cannot_keep_transactions_is_a_clear_error_and_nothing_is_lost()
-> anyhow::Result<()> {
    // One broker, but the transaction state log asks for three replicas:
    // Kafka's coordinator can never start, as on a small cluster left at
    // the defaults.
    let broker = Broker::kafka(
        &[("in", 1), ("out", 1)],
        &[("transaction.state.log.replication.factor", "3")],
    )?;
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    let inputs: Vec<Rec> = (0..10).map(|i| Rec::value(format!("record-{i}"))).collect();
    produce(broker.bootstrap(), "in", &inputs)?;
    let error = exactly_once_task_error(&daemon, Duration::from_secs(90))?;
    assert!(
        error.contains("transaction.state.log.replication.factor")
            && error.contains("transaction.state.log.min.isr"),
        "{error}"
    );
    // The daemon still serves, and nothing was consumed past what landed.
    assert!(daemon.eddy_ok(&["pipeline", "list"])?.contains("shout"));
    assert_eq!(
        eddy_tests::group_committed(broker.bootstrap(), "eddy.shout", "in", 1)?,
        [0],
        "the input stays where the pipeline starts"
    );
    assert!(eddy_tests::watermarks(broker.bootstrap(), "out")?[0].1 == 0);
    Ok(())
}

#[test]
fn a_transaction_timeout_longer_than_the_broker_allows_names_both_settings() -> anyhow::Result<()> {
    let broker = Broker::kafka(
        &[("in", 1), ("out", 1)],
        &[("transaction.max.timeout.ms", "30000")],
    )?;
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    // eddy's default transaction timeout is 60 s.
    let error = exactly_once_task_error(&daemon, Duration::from_secs(60))?;
    assert!(
        error.contains("transaction.max.timeout.ms") && error.contains("--transaction-timeout"),
        "{error}"
    );
    Ok(())
}

#[test]
fn an_existing_changelog_with_too_few_partitions_is_refused_by_name() -> anyhow::Result<()> {
    let broker = Broker::kafka(&[("lines", 2), ("counts", 2)], &[])?;
    // The counting step reads two partitions and needs a changelog partition
    // for each; this one, made by hand, has one.
    broker.create_topics(
        &[("eddy.wc.step-1.changelog", 1)],
        &[("cleanup.policy", "compact")],
    )?;
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    daemon.deploy_steps("wc", &["split-words", "count"], "lines", "counts", &[])?;
    produce(
        broker.bootstrap(),
        "lines",
        &[Rec::value("not counted yet")],
    )?;
    let error = wait_for("the changelog refused", Duration::from_secs(60), || {
        let p = daemon.pipeline("wc")?;
        Ok(p.error.contains("partitions").then_some(p.error))
    })?;
    assert!(
        error.contains(
            "topic `eddy.wc.step-1.changelog` has 1 partitions but this pipeline needs 2"
        ),
        "{error}"
    );
    // The daemon keeps serving, and the counting step consumed nothing.
    assert!(daemon.eddy_ok(&["pipeline", "list"])?.contains("wc"));
    assert_eq!(
        eddy_tests::group_committed(
            broker.bootstrap(),
            "eddy.wc.step-1",
            "eddy.wc.step-1.repartition",
            2
        )?,
        [0, 0]
    );
    Ok(())
}

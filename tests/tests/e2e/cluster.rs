//! Several daemons on one Kafka: a pipeline deployed to one runs on all,
//! its partitions and state spread across them, and any daemon answers a
//! state query (the owner of the key does, through it).

use eddy_tests::{Broker, Daemon, Rec, committed_total, produce, wait_for};
use std::collections::BTreeMap;
use std::time::Duration;

/// Lines of words from a small vocabulary, and their reference counts.
fn lines(count: usize) -> (Vec<Rec>, BTreeMap<String, u64>) {
    let mut reference = BTreeMap::new();
    let records = (0..count)
        .map(|i| {
            let words: Vec<String> = (0..4)
                .map(|j| format!("w{}", (i * 7 + j * 13) % 211))
                .collect();
            for w in &words {
                *reference.entry(w.clone()).or_default() += 1;
            }
            Rec::value(words.join(" "))
        })
        .collect();
    (records, reference)
}

/// How many partitions of `step` the daemon runs now.
fn owned(daemon: &Daemon, pipeline: &str, step: u32) -> anyhow::Result<usize> {
    let status = daemon.pipeline(pipeline)?;
    Ok(status
        .partitions
        .iter()
        .filter(|p| p.step == step && p.assigned)
        .count())
}

#[test]
fn a_pipeline_deployed_once_runs_on_every_daemon_and_any_daemon_answers_queries()
-> anyhow::Result<()> {
    let broker = Broker::start(&[("lines", 4), ("counts", 4)])?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    // Sharing a cluster secret: the registry's records are signed, and a
    // query one daemon forwards to the other carries the cluster's proof.
    let secret = [("EDDY_CLUSTER_SECRET", "cluster-test-secret-0123456789")];
    let a = Daemon::start(broker.bootstrap(), dir_a.path(), &[], &secret)?;
    let b = Daemon::start(broker.bootstrap(), dir_b.path(), &[], &secret)?;
    // Deployed to A only; the module is uploaded to A only.
    a.deploy_steps(
        "wc",
        &["split-words", "count"],
        "lines",
        "counts",
        &["--guarantee", "exactly-once"],
    )?;
    // B learns it from the registry topic, moments later.
    wait_for("B to know the pipeline", Duration::from_secs(10), || {
        Ok(b.eddy_ok(&["pipeline", "list"])?
            .contains("wc")
            .then_some(()))
    })?;
    wait_for(
        "both daemons running tasks of both steps",
        Duration::from_secs(90),
        || {
            let spread = [(&a, 0), (&a, 1), (&b, 0), (&b, 1)]
                .iter()
                .map(|(d, step)| owned(d, "wc", *step))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(spread.iter().all(|n| *n > 0).then_some(()))
        },
    )?;

    let (records, reference) = lines(4000);
    produce(broker.bootstrap(), "lines", &records)?;
    wait_for("every line committed", Duration::from_secs(120), || {
        let p = a.pipeline("wc")?;
        let step0: i64 = committed_total(&v1_step(&p, 0));
        let step1_lag: i64 = p
            .partitions
            .iter()
            .filter(|q| q.step == 1)
            .map(|q| q.lag)
            .sum();
        Ok((step0 == records.len() as i64 && step1_lag == 0).then_some(()))
    })?;
    let expected: BTreeMap<String, String> = reference
        .iter()
        .map(|(w, n)| (w.clone(), n.to_string()))
        .collect();
    wait_for(
        "both daemons answering the full state",
        Duration::from_secs(60),
        || {
            let from_a = a.state_all("wc").ok();
            let from_b = b.state_all("wc").ok();
            Ok(
                (from_a.as_ref() == Some(&expected) && from_b.as_ref() == Some(&expected))
                    .then_some(()),
            )
        },
    )?;
    // A lookup at either daemon reaches the key's owner.
    for word in expected.keys().take(20) {
        for daemon in [&a, &b] {
            let printed = daemon.eddy_ok(&["state", "get", "wc", word])?;
            assert_eq!(printed.trim(), expected[word], "state get wc {word}");
        }
    }

    // Operations taken by one daemon reach the other (through the
    // registry, within moments).
    b.eddy_ok(&["pipeline", "pause", "wc"])?;
    wait_for(
        "A to pause the pipeline paused on B",
        Duration::from_secs(30),
        || {
            let shown = a.eddy_ok(&["pipeline", "get", "wc"])?;
            Ok((shown.contains("paused") && owned(&a, "wc", 0)? == 0).then_some(()))
        },
    )?;
    a.eddy_ok(&["pipeline", "resume", "wc"])?;
    wait_for(
        "B to run the pipeline resumed on A",
        Duration::from_secs(60),
        || Ok((owned(&b, "wc", 0)? > 0).then_some(())),
    )?;
    b.eddy_ok(&["pipeline", "delete", "wc"])?;
    wait_for(
        "A to forget the pipeline deleted on B",
        Duration::from_secs(30),
        || {
            let listed = a.eddy_ok(&["pipeline", "list"])?;
            Ok((!listed.contains("wc")).then_some(()))
        },
    )?;
    Ok(())
}

/// The pipeline's partitions of one step.
fn v1_step(p: &eddy_proto::v1::Pipeline, step: u32) -> eddy_proto::v1::Pipeline {
    eddy_proto::v1::Pipeline {
        partitions: p
            .partitions
            .iter()
            .filter(|q| q.step == step)
            .cloned()
            .collect(),
        ..p.clone()
    }
}

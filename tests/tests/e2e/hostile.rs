//! Guests that trap, loop forever, sleep in a host call or allocate without
//! bound fail only their own pipeline, visibly, within the deadline; the
//! daemon and a healthy pipeline beside them keep running.

use super::setup;
use eddy_tests::{Rec, committed_total, consume, produce, sorted_texts, v1, wait_for};
use std::time::{Duration, Instant};

#[test]
fn hostile_guests_fail_only_their_own_pipeline() -> anyhow::Result<()> {
    let topics = [
        ("trap-in", 1),
        ("loop-in", 1),
        ("hog-in", 1),
        ("ok-in", 2),
        ("trap-out", 1),
        ("loop-out", 1),
        ("hog-out", 1),
        ("ok-out", 2),
    ];
    let (broker, mut daemon, _dir) = setup(&topics)?;
    let limits = ["--call-timeout", "1s", "--memory", "32MiB"];
    daemon.deploy("trap", "trap", "trap-in", "trap-out", &limits)?;
    daemon.deploy("loop", "endless-loop", "loop-in", "loop-out", &limits)?;
    daemon.deploy("hog", "memory-hog", "hog-in", "hog-out", &limits)?;
    daemon.deploy("ok", "uppercase", "ok-in", "ok-out", &[])?;

    let started = Instant::now();
    produce(
        broker.bootstrap(),
        "trap-in",
        &[Rec::value("fine"), Rec::value("boom")],
    )?;
    produce(broker.bootstrap(), "loop-in", &[Rec::value("spin")])?;
    produce(broker.bootstrap(), "hog-in", &[Rec::value("eat")])?;
    let healthy: Vec<Rec> = (0..200).map(|i| Rec::value(format!("ok-{i}"))).collect();
    produce(broker.bootstrap(), "ok-in", &healthy)?;

    for (name, expected) in [
        ("trap", "poisoned record at offset 1"),
        ("loop", "exceeded its deadline of 1s"),
        ("hog", "exceeded its memory limit of 33554432 bytes"),
    ] {
        let status = wait_for(
            &format!("pipeline {name} to fail"),
            Duration::from_secs(30),
            || {
                let p = daemon.pipeline(name)?;
                Ok((p.state == v1::PipelineState::Failed as i32).then_some(p))
            },
        )?;
        let error = &status.partitions[0].last_error;
        assert!(error.contains(expected), "{name}: {error}");
        assert!(
            daemon.log().contains(expected),
            "{name}: the failure is logged"
        );
    }
    // The looping guest was stopped at its 1 s deadline, not after minutes.
    assert!(started.elapsed() < Duration::from_secs(30));

    // Nothing past the poisoned record was committed or produced for it.
    let trap = daemon.pipeline("trap")?;
    assert!(
        trap.partitions[0].committed_offset <= 1,
        "never committed past the poisoned record at offset 1: {}",
        trap.partitions[0].committed_offset
    );

    // The healthy pipeline kept going, and keeps going.
    let out = consume(
        broker.bootstrap(),
        "ok-out",
        healthy.len(),
        Duration::from_secs(60),
        Duration::ZERO,
    )?;
    assert!(out.len() >= healthy.len());
    produce(broker.bootstrap(), "ok-in", &[Rec::value("after")])?;
    let out = consume(
        broker.bootstrap(),
        "ok-out",
        healthy.len() + 1,
        Duration::from_secs(60),
        Duration::ZERO,
    )?;
    assert!(out.iter().any(|r| r.text().as_deref() == Some("AFTER")));
    let ok = daemon.pipeline("ok")?;
    assert_eq!(ok.state, v1::PipelineState::Running as i32);
    assert!(daemon.is_running(), "the daemon survived");

    // A failed pipeline restarts from its committed offset when resumed, and
    // fails again on the same record: nothing is skipped silently.
    daemon.eddy_ok(&["pipeline", "resume", "trap"])?;
    wait_for("trap to fail again", Duration::from_secs(30), || {
        let p = daemon.pipeline("trap")?;
        Ok((p.state == v1::PipelineState::Failed as i32
            && p.partitions
                .iter()
                .any(|s| s.last_error.contains("poisoned record at offset 1")))
        .then_some(()))
    })?;
    Ok(())
}

/// A guest asleep in a blocking WASI call (`std::thread::sleep`), where
/// epoch interruption cannot reach it, is stopped at its deadline like a
/// loop: its record alone is dead-lettered, the rest of its batch comes
/// out, and pausing or deleting the pipeline or stopping the daemon while
/// it sleeps again and again returns promptly.
#[test]
fn a_guest_asleep_in_a_wasi_call_is_stopped_at_its_deadline() -> anyhow::Result<()> {
    let (broker, mut daemon, _dir) = setup(&[("nap-in", 1), ("nap-out", 1)])?;
    let policy = [
        "--call-timeout",
        "1s",
        "--on-error",
        "dead-letter",
        "--config",
        "trigger=boom",
        // A record per call, so that each sleeper settles (and counts) alone.
        "--max-batch",
        "1",
    ];
    daemon.deploy("nap", "sleeper", "nap-in", "nap-out", &policy)?;
    let mut records: Vec<Rec> = (0..400).map(|i| Rec::value(format!("r{i:03}"))).collect();
    records.insert(200, Rec::value("boom"));
    let started = Instant::now();
    produce(broker.bootstrap(), "nap-in", &records)?;
    let out = consume(
        broker.bootstrap(),
        "nap-out",
        400,
        Duration::from_secs(60),
        Duration::from_secs(1),
    )?;
    let expected: Vec<String> = (0..400).map(|i| format!("r{i:03}")).collect();
    assert_eq!(sorted_texts(&out), expected, "every other record, once");
    let dead = consume(
        broker.bootstrap(),
        "nap.dlq",
        1,
        Duration::from_secs(30),
        Duration::ZERO,
    )?;
    assert_eq!(sorted_texts(&dead), ["boom"]);
    let error = dead[0].header("eddy.error");
    assert!(error.contains("exceeded its deadline of 1s"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "took {:?}",
        started.elapsed()
    );
    let p = daemon.pipeline("nap")?;
    assert_eq!(p.state, v1::PipelineState::Running as i32);

    // A stream of sleepers: the guest is asleep most of the time now.
    let sleepers: Vec<Rec> = (0..30).map(|i| Rec::value(format!("boom-{i}"))).collect();
    produce(broker.bootstrap(), "nap-in", &sleepers)?;
    wait_for(
        "the guest to reach the sleepers",
        Duration::from_secs(30),
        || {
            let p = daemon.pipeline("nap")?;
            let dead = p
                .partitions
                .iter()
                .filter_map(|s| s.counters.get("records-dead-lettered"))
                .sum::<u64>();
            Ok((dead >= 2).then_some(()))
        },
    )?;
    let pausing = Instant::now();
    daemon.eddy_ok(&["pipeline", "pause", "nap"])?;
    assert!(
        pausing.elapsed() < Duration::from_secs(15),
        "pause took {:?}",
        pausing.elapsed()
    );
    daemon.eddy_ok(&["pipeline", "resume", "nap"])?;
    wait_for("the guest to sleep again", Duration::from_secs(30), || {
        let p = daemon.pipeline("nap")?;
        Ok((p.state == v1::PipelineState::Running as i32).then_some(()))
    })?;
    // Deleting it while it sleeps returns promptly too, and the daemon
    // goes on serving.
    produce(broker.bootstrap(), "nap-in", &sleepers)?;
    let deleting = Instant::now();
    daemon.eddy_ok(&["pipeline", "delete", "nap"])?;
    assert!(
        deleting.elapsed() < Duration::from_secs(15),
        "delete took {:?}",
        deleting.elapsed()
    );
    assert!(daemon.pipeline("nap").is_err(), "the pipeline is gone");
    daemon.deploy("after", "uppercase", "nap-in", "nap-out", &[])?;
    daemon.terminate(Duration::from_secs(20))?;
    Ok(())
}

#[test]
fn a_guest_error_stops_the_task_without_skipping_the_failed_records() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("in", 1), ("out", 1)])?;
    daemon.deploy("picky", "trap", "in", "out", &["--config", "how=error"])?;
    produce(broker.bootstrap(), "in", &[Rec::value("boom")])?;
    let failed = wait_for("the task to fail", Duration::from_secs(30), || {
        let p = daemon.pipeline("picky")?;
        Ok((p.state == v1::PipelineState::Failed as i32).then_some(p))
    })?;
    assert!(
        failed.partitions[0]
            .last_error
            .contains("guest failed: poisoned record at offset 0"),
        "{}",
        failed.partitions[0].last_error
    );
    // A record behind the failed one is neither processed nor committed
    // past: each restart (1 s, then 2 s, ...) rewinds to the failed record.
    produce(broker.bootstrap(), "in", &[Rec::value("after")])?;
    let retried = wait_for("two restarts", Duration::from_secs(30), || {
        let p = daemon.pipeline("picky")?;
        Ok((p.partitions[0].retries >= 2).then_some(p))
    })?;
    let partition = &retried.partitions[0];
    assert!(
        partition.last_error.contains("poisoned record at offset 0"),
        "the restart failed on the same record: {}",
        partition.last_error
    );
    assert_eq!(partition.committed_offset, 0);
    let out = consume(
        broker.bootstrap(),
        "out",
        1,
        Duration::from_secs(1),
        Duration::ZERO,
    )?;
    assert!(
        out.is_empty(),
        "nothing is processed after a failure: {out:?}"
    );
    let shown = daemon.eddy_ok(&["pipeline", "get", "picky"])?;
    assert!(
        shown.contains("failed") && shown.contains("times, retry in"),
        "{shown}"
    );
    Ok(())
}

#[test]
fn a_failed_task_restarts_with_backoff_and_heals_when_the_fault_clears() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("in", 1), ("out", 1)])?;
    // The guest fails on `boom` for the next 10 seconds only: a transient fault.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        + 10_000;
    daemon.deploy(
        "flaky",
        "trap",
        "in",
        "out",
        &[
            "--config",
            "how=error",
            "--config",
            &format!("fail-until={until}"),
        ],
    )?;
    let inputs = [Rec::value("one"), Rec::value("boom"), Rec::value("three")];
    produce(broker.bootstrap(), "in", &inputs)?;
    wait_for("the task to fail", Duration::from_secs(30), || {
        let p = daemon.pipeline("flaky")?;
        Ok(
            (p.state == v1::PipelineState::Failed as i32 && p.partitions[0].retries >= 1)
                .then_some(()),
        )
    })?;
    // After the fault clears, a restart processes the failed batch and the
    // rest, each record once, and the failure leaves the status.
    let out = consume(
        broker.bootstrap(),
        "out",
        inputs.len(),
        Duration::from_secs(30),
        Duration::from_secs(1),
    )?;
    assert_eq!(sorted_texts(&out), ["boom", "one", "three"]);
    let healed = wait_for("the task to heal", Duration::from_secs(30), || {
        let p = daemon.pipeline("flaky")?;
        Ok((p.state == v1::PipelineState::Running as i32).then_some(p))
    })?;
    assert_eq!(healed.partitions[0].retries, 0);
    assert!(healed.partitions[0].last_error.is_empty());
    assert_eq!(healed.partitions[0].committed_offset, 3);
    assert!(daemon.log().contains("task recovered after restarting"));
    Ok(())
}

/// The values of `records`, sorted.
#[test]
fn skip_and_dead_letter_policies_isolate_exactly_the_poisoned_records() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("in", 2), ("skipped", 2), ("lettered", 2)])?;
    // 1,000 records over 2 partitions; every 100th is poisoned.
    let inputs: Vec<Rec> = (0..1000)
        .map(|i| {
            let value = if i % 100 == 37 {
                format!("boom-{i:04}")
            } else {
                format!("ok-{i:04}")
            };
            Rec::value(value).keyed(format!("k{}", i % 7))
        })
        .collect();
    produce(broker.bootstrap(), "in", &inputs)?;
    let healthy: Vec<String> = sorted_texts(&inputs)
        .into_iter()
        .filter(|v| v.starts_with("ok-"))
        .collect();
    let poisoned: Vec<String> = sorted_texts(&inputs)
        .into_iter()
        .filter(|v| v.starts_with("boom-"))
        .collect();
    // The guest traps (panics) in one pipeline and returns errors in the other.
    daemon.deploy(
        "skipper",
        "trap",
        "in",
        "skipped",
        &["--on-error", "skip", "--config", "count=true"],
    )?;
    daemon.deploy(
        "letters",
        "trap",
        "in",
        "lettered",
        &["--on-error", "dead-letter", "--config", "how=error"],
    )?;

    for topic in ["skipped", "lettered"] {
        let out = consume(
            broker.bootstrap(),
            topic,
            healthy.len(),
            Duration::from_secs(120),
            Duration::from_secs(2),
        )?;
        assert_eq!(
            sorted_texts(&out),
            healthy,
            "{topic}: every other record exactly once"
        );
    }
    let dlq = consume(
        broker.bootstrap(),
        "letters.dlq",
        poisoned.len(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    )?;
    assert_eq!(sorted_texts(&dlq), poisoned, "exactly the poisoned records");
    for record in &dlq {
        let header = |name: &str| record.header(name);
        assert_eq!(header("eddy.source.topic"), "in");
        assert!(
            header("eddy.error").contains("poisoned record at offset"),
            "{record:?}"
        );
        let offset: i64 = header("eddy.source.offset").parse()?;
        assert!(
            header("eddy.error").contains(&format!("offset {offset}")),
            "the header names the record's own offset: {record:?}"
        );
        assert!(header("eddy.module").starts_with("sha256:"));
    }
    for (name, counter) in [
        ("skipper", "records-skipped"),
        ("letters", "records-dead-lettered"),
    ] {
        let status = wait_for("the counters", Duration::from_secs(30), || {
            let p = daemon.pipeline(name)?;
            let n: u64 = p
                .partitions
                .iter()
                .filter_map(|s| s.counters.get(counter))
                .sum();
            Ok((n == poisoned.len() as u64).then_some(p))
        })?;
        assert!(status.partitions.iter().all(|s| s.last_error.is_empty()));
    }
    assert!(
        daemon
            .log()
            .contains("skipped a record the guest failed on")
    );
    // The failed calls' state writes were rolled back.
    assert_counts_of_healthy_records(&daemon, "skipper", &inputs, 7)
}

/// Asserts that `trap --config count=true` in `pipeline` counted, under
/// each key `k0`..`k{keys-1}`, exactly its healthy (`ok-`) records among
/// `inputs` (8-byte big-endian counts).
fn assert_counts_of_healthy_records(
    daemon: &eddy_tests::Daemon,
    pipeline: &str,
    inputs: &[Rec],
    keys: usize,
) -> anyhow::Result<()> {
    for k in 0..keys {
        let key = format!("k{k}");
        let expected = inputs
            .iter()
            .filter(|r| r.key_text().as_deref() == Some(key.as_str()))
            .filter(|r| r.text().is_some_and(|v| v.starts_with("ok-")))
            .count() as u64;
        let shown = daemon.eddy_ok(&["state", "get", pipeline, &key, "-o", "json"])?;
        let entry: serde_json::Value = serde_json::from_str(&shown)?;
        let hex: String = expected
            .to_be_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            entry["value_hex"].as_str(),
            Some(hex.as_str()),
            "state of {key}"
        );
    }
    Ok(())
}

/// Guests that spend the host's memory instead of their own, through its
/// imports: state written in one call, timers, counter names, log lines.
/// Each flood stops at the daemon's budget, whatever the guest does with
/// the errors it gets; the record that set it off goes through the error
/// policy with the budget named, every other record comes out once, and a
/// healthy pipeline beside them is unaffected. The log flood is cut to the
/// log rate, counted, and said.
#[test]
fn host_side_floods_stop_at_the_budgets() -> anyhow::Result<()> {
    let floods = [
        ("state", "limits.max-call-state-bytes"),
        ("timers", "limits.max-timers"),
        ("counters", "limits.max-counters"),
    ];
    let mut names = vec!["log".to_owned(), "ok".to_owned()];
    names.extend(floods.iter().map(|(what, _)| (*what).to_owned()));
    let topics: Vec<String> = names
        .iter()
        .flat_map(|name| [format!("{name}-in"), format!("{name}-out")])
        .collect();
    let topics: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), 1)).collect();
    let broker = eddy_tests::Broker::start(&topics)?;
    let dir = tempfile::tempdir()?;
    let budgets = [
        ("EDDY_LIMITS__MAX_TIMERS", "1000"),
        ("EDDY_LIMITS__MAX_COUNTERS", "20"),
    ];
    let mut daemon = eddy_tests::Daemon::start(broker.bootstrap(), dir.path(), &[], &budgets)?;
    for (what, _) in floods {
        let config = format!("what={what}");
        let args = ["--on-error", "dead-letter", "--config", &config];
        daemon.deploy(
            what,
            "host-flood",
            &format!("{what}-in"),
            &format!("{what}-out"),
            &args,
        )?;
    }
    daemon.deploy(
        "log",
        "host-flood",
        "log-in",
        "log-out",
        &["--config", "what=log"],
    )?;
    daemon.deploy("ok", "uppercase", "ok-in", "ok-out", &[])?;

    let mut records: Vec<Rec> = (0..50).map(|i| Rec::value(format!("r{i:02}"))).collect();
    records.insert(25, Rec::value("boom"));
    let expected: Vec<String> = (0..50).map(|i| format!("r{i:02}")).collect();
    for (what, _) in floods {
        produce(broker.bootstrap(), &format!("{what}-in"), &records)?;
    }
    produce(broker.bootstrap(), "log-in", &records)?;
    let healthy: Vec<Rec> = (0..100).map(|i| Rec::value(format!("ok-{i}"))).collect();
    produce(broker.bootstrap(), "ok-in", &healthy)?;

    for (what, budget) in floods {
        let out = consume(
            broker.bootstrap(),
            &format!("{what}-out"),
            50,
            Duration::from_secs(60),
            Duration::from_secs(1),
        )?;
        assert_eq!(
            sorted_texts(&out),
            expected,
            "{what}: every other record, once"
        );
        let dead = consume(
            broker.bootstrap(),
            &format!("{what}.dlq"),
            1,
            Duration::from_secs(30),
            Duration::ZERO,
        )?;
        assert_eq!(sorted_texts(&dead), ["boom"], "{what}");
        let error = dead[0].header("eddy.error");
        assert!(
            error.contains("guest over a host budget"),
            "{what}: {error}"
        );
        assert!(error.contains(budget), "{what}: {error}");
        let p = daemon.pipeline(what)?;
        assert_eq!(p.state, v1::PipelineState::Running as i32, "{what}");
        let counters = &p.partitions[0].counters;
        let flooded = counters.keys().filter(|k| k.starts_with("flood-")).count();
        assert!(flooded <= 20, "{what}: {counters:?}");
    }
    // The flood's writes went with its call.
    let shown = daemon.eddy(&["state", "get", "state", "flood-0"])?;
    assert!(!shown.status.success(), "no flood-0 in state");

    // Every record of the log flood comes out; the log holds a second's
    // worth of its lines, not 100 MB of them.
    let out = consume(
        broker.bootstrap(),
        "log-out",
        51,
        Duration::from_secs(60),
        Duration::from_secs(1),
    )?;
    assert_eq!(out.len(), 51);
    let dropped = wait_for("the dropped lines counted", Duration::from_secs(30), || {
        let p = daemon.pipeline("log")?;
        Ok(p.partitions[0]
            .counters
            .get("log-messages-dropped")
            .copied()
            .filter(|n| *n > 90_000))
    })?;
    let log = daemon.log();
    // 64 KiB at once, then 64 KiB a second while the flood lasts (a
    // second or two in a debug build): some hundreds of the 100,000.
    let lines = log.matches(&"l".repeat(1024)).count();
    assert!(
        (1..=2_000).contains(&lines),
        "{lines} lines of the flood logged, {dropped} dropped"
    );
    assert!(log.contains("limits.log-bytes-per-second"));

    let out = consume(
        broker.bootstrap(),
        "ok-out",
        100,
        Duration::from_secs(60),
        Duration::from_secs(1),
    )?;
    assert_eq!(out.len(), 100, "the healthy pipeline, unaffected");
    assert!(daemon.is_running());
    Ok(())
}

/// A state store that fails under a guest's read is the host's fault, not
/// the record's: even under `skip` the batch fails and is retried from the
/// last commit until the store reads again, and no record is skipped. The
/// disk goes bad for real: a preloaded library (tests/faults/eio.c) fails
/// the daemon's reads of its state's table files with EIO while a switch
/// file exists.
#[test]
fn a_failing_state_store_fails_the_batch_for_retry_even_under_skip() -> anyhow::Result<()> {
    let broker = eddy_tests::Broker::start(&[("in", 1), ("out", 1)])?;
    let dir = tempfile::tempdir()?;
    let switch = dir.path().join("disk-is-bad");
    let state_dir = dir.path().join("state");
    let (switch_env, state_env) = (
        switch.display().to_string(),
        state_dir.display().to_string(),
    );
    let env = [
        ("LD_PRELOAD", env!("EDDY_EIO_SHIM")),
        ("EDDY_FAULT_SWITCH", switch_env.as_str()),
        ("EDDY_FAULT_PATH", state_env.as_str()),
    ];
    let start = || eddy_tests::Daemon::start(broker.bootstrap(), dir.path(), &[], &env);
    let mut daemon = start()?;
    daemon.deploy("counts", "count", "in", "out", &["--on-error", "skip"])?;
    // Long keys, so the state spans many table blocks, which a restarted
    // daemon has not cached.
    let keys: Vec<String> = (0..4000)
        .map(|i| format!("{i:04}-{}", "k".repeat(200)))
        .collect();
    let first: Vec<Rec> = keys
        .iter()
        .map(|k| Rec::value("x").keyed(k.as_str()))
        .collect();
    produce(broker.bootstrap(), "in", &first)?;
    consume(
        broker.bootstrap(),
        "out",
        keys.len(),
        Duration::from_secs(60),
        Duration::ZERO,
    )?;
    // A clean stop flushes the state to table files; the restart reads them.
    daemon.terminate(Duration::from_secs(30))?;
    let tables = std::fs::read_dir(state_dir.join("counts"))?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
        .count();
    assert!(tables > 0, "the state is in table files");
    let daemon = start()?;
    // Running once a new key's count comes out.
    produce(broker.bootstrap(), "in", &[Rec::value("x").keyed("probe")])?;
    wait_for(
        "the restarted task to process",
        Duration::from_secs(60),
        || {
            let out = consume(
                broker.bootstrap(),
                "out",
                keys.len() + 1,
                Duration::from_secs(1),
                Duration::ZERO,
            )?;
            Ok(out
                .iter()
                .any(|r| r.key_text().as_deref() == Some("probe"))
                .then_some(()))
        },
    )?;

    std::fs::write(&switch, b"")?;
    let again: Vec<&String> = keys.iter().step_by(40).collect();
    let second: Vec<Rec> = again
        .iter()
        .map(|k| Rec::value("y").keyed(k.as_str()))
        .collect();
    produce(broker.bootstrap(), "in", &second)?;
    let failing = wait_for(
        "the batch to fail on the store",
        Duration::from_secs(60),
        || {
            let p = daemon.pipeline("counts")?;
            Ok(p.partitions
                .first()
                .filter(|s| s.last_error.contains("state store"))
                .cloned())
        },
    )?;
    assert!(
        daemon
            .log()
            .contains("the state store failed during a guest call, so the batch is retried"),
        "the batch failed on the store: {}",
        failing.last_error
    );
    assert!(
        failing.committed_offset <= 4001,
        "nothing committed past it"
    );
    assert!(!failing.counters.contains_key("records-skipped"));

    std::fs::remove_file(&switch)?;
    let state = wait_for("the batch to go through", Duration::from_secs(90), || {
        let all = daemon.state_all("counts")?;
        Ok(all
            .get(again.last().map_or("", |k| k.as_str()))
            .is_some_and(|n| n == "2")
            .then_some(all))
    })?;
    for (i, key) in keys.iter().enumerate() {
        let expected = if i % 40 == 0 { "2" } else { "1" };
        assert_eq!(state.get(key).map(String::as_str), Some(expected), "{key}");
    }
    let p = daemon.pipeline("counts")?;
    let partition = &p.partitions[0];
    assert!(
        !partition.counters.contains_key("records-skipped"),
        "{partition:?}"
    );
    assert!(partition.last_error.is_empty(), "healed: {partition:?}");
    Ok(())
}

/// Guests that failed a call run in the daemon's guest worker process;
/// killing it fails only the calls in flight, as the host's fault: their
/// batches are retried in a new worker, nothing is skipped that was not
/// poisoned, nothing is lost or counted twice.
#[test]
fn a_killed_guest_worker_is_replaced_and_loses_nothing() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("in", 2), ("out", 2)])?;
    // Every 50th record is poisoned; the guest traps on it and counts the
    // others per key in its state.
    let records = |from: usize, to: usize| -> Vec<Rec> {
        (from..to)
            .map(|i| {
                let value = if i % 50 == 17 {
                    format!("boom-{i:04}")
                } else {
                    format!("ok-{i:04}")
                };
                Rec::value(value).keyed(format!("k{}", i % 5))
            })
            .collect()
    };
    daemon.deploy(
        "skipper",
        "trap",
        "in",
        "out",
        &["--on-error", "skip", "--config", "count=true"],
    )?;
    let skipped = |n: u64| {
        wait_for(
            &format!("{n} records skipped"),
            Duration::from_secs(60),
            || {
                let p = daemon.pipeline("skipper")?;
                let skipped: u64 = p
                    .partitions
                    .iter()
                    .filter_map(|s| s.counters.get("records-skipped"))
                    .sum();
                Ok((skipped == n).then_some(()))
            },
        )
        .map_err(|e| {
            // What the tasks and the daemon said, to tell why.
            let status = daemon.pipeline("skipper").map(|p| format!("{p:?}"));
            let log = daemon.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            e.context(format!(
                "status: {status:?}\nlog, last lines first:\n{}",
                tail.join("\n")
            ))
        })
    };

    let first = records(0, 500);
    produce(broker.bootstrap(), "in", &first)?;
    skipped(10)?;
    // All of it committed first: the kill then fails the next batch's
    // first call, and its retry starts after these records (a retry from
    // further back would skip some of them again, and counts say so).
    wait_for(
        "the first records committed",
        Duration::from_secs(60),
        || {
            let p = daemon.pipeline("skipper")?;
            Ok((committed_total(&p) == first.len() as i64).then_some(()))
        },
    )?;
    let workers = daemon.guest_workers();
    assert_eq!(
        workers.len(),
        1,
        "the failing guests run in one worker process"
    );
    let info: serde_json::Value =
        serde_json::from_str(&daemon.eddy_ok(&["daemon", "info", "-o", "json"])?)?;
    assert!(
        info["memory"]["guest_worker_resident_bytes"]
            .as_u64()
            .is_some_and(|bytes| bytes > 0),
        "the daemon reports its worker's memory: {info}"
    );
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &workers[0].to_string()])
        .status()?;
    assert!(killed.success(), "the worker is killed");

    let second = records(500, 1000);
    produce(broker.bootstrap(), "in", &second)?;
    skipped(20)?;
    let inputs: Vec<Rec> = first.into_iter().chain(second).collect();
    let healthy: Vec<String> = sorted_texts(&inputs)
        .into_iter()
        .filter(|v| v.starts_with("ok-"))
        .collect();
    let out = consume(
        broker.bootstrap(),
        "out",
        healthy.len(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    )?;
    assert_eq!(
        sorted_texts(&out),
        healthy,
        "every healthy record exactly once"
    );
    let replaced = daemon.guest_workers();
    assert!(
        replaced.len() == 1 && replaced != workers,
        "a new worker replaced the killed one: {workers:?} -> {replaced:?}"
    );
    let log = daemon.log();
    assert!(
        log.contains("the connection to the guest worker failed"),
        "the broken calls are reported as the worker's failure"
    );
    // The calls the kill broke wrote nothing.
    assert_counts_of_healthy_records(&daemon, "skipper", &inputs, 5)?;
    let status = daemon.pipeline("skipper")?;
    assert_eq!(status.state, v1::PipelineState::Running as i32);
    Ok(())
}

//! Durable state: word count through a repartition topic, exact after
//! SIGKILLs and after losing the state directory; windows and timers.

use super::setup;
use eddy_tests::{Daemon, Rec, consume, group_committed, produce, v1, wait_for, watermarks};
use std::collections::BTreeMap;
use std::time::Duration;

/// A small deterministic generator (xorshift64*), so a failing run can be
/// replayed from its printed seed.
struct Rng(u64);

impl Rng {
    fn from_env(test: &str) -> Self {
        let seed = std::env::var("EDDY_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: seed {seed} (set EDDY_TEST_SEED={seed} to replay)");
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `count` lines of 3-8 words from a 1,000-word vocabulary, and the
/// reference word count, computed here independently of eddy.
fn lines(rng: &mut Rng, count: usize) -> (Vec<Rec>, BTreeMap<String, String>) {
    let mut counts = BTreeMap::new();
    let records = counted_lines(rng, count, &mut counts);
    (records, as_text(&counts))
}

/// `count` more lines as [`lines`] makes them, their words added to `counts`.
fn counted_lines(rng: &mut Rng, count: usize, counts: &mut BTreeMap<String, u64>) -> Vec<Rec> {
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let words: Vec<String> = (0..3 + rng.below(6))
            .map(|_| format!("w{}", rng.below(1000)))
            .collect();
        for w in &words {
            *counts.entry(w.clone()).or_default() += 1;
        }
        // Mixed case and punctuation: split-words lower-cases and splits.
        records.push(Rec::value(words.join(", ").to_uppercase()));
    }
    records
}

/// Counts as the `count` plugin writes them: decimal text.
fn as_text(counts: &BTreeMap<String, u64>) -> BTreeMap<String, String> {
    counts
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

fn wait_for_state(
    daemon: &Daemon,
    pipeline: &str,
    reference: &BTreeMap<String, String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut last = BTreeMap::new();
    let reached = wait_for("state to equal the reference", timeout, || {
        match daemon.state_all(pipeline) {
            Ok(state) if &state == reference => Ok(Some(())),
            Ok(state) => {
                last = state;
                Ok(None)
            }
            // Restoring or not yet assigned: ask again.
            Err(s) if s.code() == tonic::Code::Unavailable => Ok(None),
            Err(s) => Err(s.into()),
        }
    });
    if reached.is_err() {
        let differ: Vec<_> = reference
            .iter()
            .filter(|(k, v)| last.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}: {:?} expected {v}", last.get(k)))
            .take(5)
            .collect();
        let lag: Vec<_> = daemon
            .pipeline(pipeline)
            .map(|p| {
                p.partitions
                    .iter()
                    .map(|s| (s.step, s.partition, s.lag))
                    .collect()
            })
            .unwrap_or_default();
        anyhow::bail!(
            "state never matched: {} keys vs {} expected, {} differ, e.g. {differ:?}; lag {lag:?}",
            last.len(),
            reference.len(),
            reference
                .iter()
                .filter(|(k, v)| last.get(*k) != Some(*v))
                .count()
        );
    }
    Ok(())
}

fn steps_status(p: &v1::Pipeline, step: u32) -> Vec<&v1::PartitionStatus> {
    p.partitions.iter().filter(|s| s.step == step).collect()
}

#[test]
fn word_count_over_100k_lines_matches_the_reference_and_queries_agree() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("lines", 3), ("counts", 3)])?;
    let mut rng = Rng::from_env("word_count");
    let (input, reference) = lines(&mut rng, 100_000);
    produce(broker.bootstrap(), "lines", &input)?;
    daemon.deploy_steps("wc", &["split-words", "count"], "lines", "counts", &[])?;
    wait_for_state(&daemon, "wc", &reference, Duration::from_secs(300))?;

    // The CLI answers from the partition that owns the key.
    for word in reference.keys().take(5) {
        let printed = daemon.eddy_ok(&["state", "get", "wc", word])?;
        assert_eq!(printed.trim(), reference[word], "eddy state get wc {word}");
    }
    let missing = daemon.eddy(&["state", "get", "wc", "no-such-word"])?;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such key"));
    let scanned = daemon.eddy_ok(&["state", "scan", "wc", "--prefix", "w99"])?;
    let expected: Vec<String> = reference
        .iter()
        .filter(|(k, _)| k.starts_with("w99"))
        .map(|(k, v)| format!("{k}\t{v}"))
        .collect();
    assert_eq!(scanned.lines().collect::<Vec<_>>(), expected);

    // The output's last value per word is its count.
    let produced: i64 = watermarks(broker.bootstrap(), "counts")?
        .iter()
        .map(|(_, high)| high)
        .sum();
    let out = consume(
        broker.bootstrap(),
        "counts",
        usize::try_from(produced)?,
        Duration::from_secs(120),
        Duration::ZERO,
    )?;
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for r in out {
        last.insert(
            r.key_text().unwrap_or_default(),
            r.text().unwrap_or_default(),
        );
    }
    assert_eq!(last, reference);

    // Every word's count lives in exactly one partition of step 1.
    let status = daemon.pipeline("wc")?;
    assert_eq!(steps_status(&status, 1).len(), 3);
    assert!(status.partitions.iter().all(|p| p.last_error.is_empty()));
    Ok(())
}

#[test]
fn sigkill_five_times_mid_stream_and_state_stays_exact() -> anyhow::Result<()> {
    let (broker, mut daemon, dir) = setup(&[("lines", 3), ("counts", 3)])?;
    let mut rng = Rng::from_env("sigkill_word_count");
    // The input arrives a chunk at a time: one before the deploy, one right
    // before each kill, which comes within 0.2 s, so the daemon dies with
    // that chunk in flight. A kill that came after the daemon had caught up
    // anyway is not counted, and another chunk and kill follow: five must
    // land mid-stream however fast the data path gets. (Waiting for
    // progress and killing within a second let a fast run finish first.)
    const CHUNK: usize = 12_500;
    const ATTEMPTS: usize = 15;
    let mut counts = BTreeMap::new();
    produce(
        broker.bootstrap(),
        "lines",
        &counted_lines(&mut rng, CHUNK, &mut counts),
    )?;
    let mut fed = CHUNK as i64;
    daemon.deploy_steps(
        "wc",
        &["split-words", "count"],
        "lines",
        "counts",
        &["--max-batch", "50"],
    )?;
    let repartition = "eddy.wc.step-1.repartition";
    let progress = |brokers: &str| -> anyhow::Result<(i64, i64)> {
        let step0: i64 = group_committed(brokers, "eddy.wc", "lines", 3)?
            .iter()
            .map(|o| (*o).max(0))
            .sum();
        let step1: i64 = group_committed(brokers, "eddy.wc.step-1", repartition, 3)?
            .iter()
            .map(|o| (*o).max(0))
            .sum();
        Ok((step0, step1))
    };
    let mut kills = 0;
    let mut caught_up = false;
    for attempt in 1..=ATTEMPTS {
        if !caught_up {
            let before = progress(broker.bootstrap())?;
            wait_for(
                "the restarted daemon to commit",
                Duration::from_secs(120),
                || {
                    let now = progress(broker.bootstrap())?;
                    Ok((now.0 > before.0 || now.1 > before.1).then_some(()))
                },
            )?;
        }
        produce(
            broker.bootstrap(),
            "lines",
            &counted_lines(&mut rng, CHUNK, &mut counts),
        )?;
        fed += CHUNK as i64;
        std::thread::sleep(Duration::from_millis(rng.below(200)));
        daemon.kill();
        let (step0, step1) = progress(broker.bootstrap())?;
        // Step 1's offsets count transaction markers and aborted batches
        // too, so it is behind when its group has not reached the end of
        // the repartition topic.
        let produced: i64 = watermarks(broker.bootstrap(), repartition)?
            .iter()
            .map(|(_, high)| high)
            .sum();
        caught_up = step0 == fed && step1 == produced;
        if !caught_up {
            kills += 1;
        }
        eprintln!(
            "kill {attempt}: {step0}/{fed} lines fed and {step1}/{produced} repartition offsets \
             committed{}",
            if caught_up {
                " (caught up: not counted)"
            } else {
                ""
            }
        );
        daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
        if kills == 5 {
            break;
        }
    }
    anyhow::ensure!(
        kills == 5,
        "only {kills} of {ATTEMPTS} kills landed with records in flight"
    );
    let reference = as_text(&counts);
    let words: u64 = counts.values().sum();
    let words = i64::try_from(words)?;
    wait_for_state(&daemon, "wc", &reference, Duration::from_secs(600))?;
    let repartitioned: i64 = watermarks(broker.bootstrap(), repartition)?
        .iter()
        .map(|(_, high)| high)
        .sum();
    eprintln!(
        "{words} words; the repartition topic holds {repartitioned} offsets (aborted batches and transaction markers included)"
    );
    assert!(repartitioned >= words);
    Ok(())
}

#[test]
fn state_is_rebuilt_from_the_changelog_when_the_state_directory_is_lost() -> anyhow::Result<()> {
    let (broker, mut daemon, dir) = setup(&[("lines", 3), ("counts", 3)])?;
    let mut rng = Rng::from_env("lost_state_dir");
    let (input, reference) = lines(&mut rng, 5_000);
    produce(broker.bootstrap(), "lines", &input)?;
    daemon.deploy_steps("wc", &["split-words", "count"], "lines", "counts", &[])?;
    wait_for_state(&daemon, "wc", &reference, Duration::from_secs(120))?;

    // A clean restart replays (almost) nothing: the local store is current.
    assert!(daemon.terminate(Duration::from_secs(30))?.success());
    let daemon2 = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    wait_for_state(&daemon2, "wc", &reference, Duration::from_secs(120))?;
    let replayed: u64 = daemon2
        .pipeline("wc")?
        .partitions
        .iter()
        .filter_map(|p| p.restore.as_ref().map(|r| r.replayed))
        .sum();
    assert_eq!(replayed, 0, "a clean restart replays nothing");
    drop(daemon2);
    daemon.kill();

    let state_dir = dir.path().join("state");
    assert!(
        state_dir.join("wc").exists(),
        "state lives in its own directory"
    );
    std::fs::remove_dir_all(&state_dir)?;
    let daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    wait_for_state(&daemon, "wc", &reference, Duration::from_secs(120))?;
    let status = daemon.pipeline("wc")?;
    let replayed: u64 = steps_status(&status, 1)
        .iter()
        .filter_map(|p| p.restore.as_ref().map(|r| r.replayed))
        .sum();
    assert!(
        replayed > 0,
        "step 1 restored from its changelog: {status:?}"
    );
    assert!(
        dir.path().join("pipelines").read_dir()?.next().is_some(),
        "specs kept"
    );
    Ok(())
}

#[test]
fn deleting_a_pipeline_deletes_its_state_and_internal_topics_pausing_keeps_them()
-> anyhow::Result<()> {
    let (broker, daemon, dir) = setup(&[("lines", 2), ("counts", 2)])?;
    produce(broker.bootstrap(), "lines", &[Rec::value("a b a")])?;
    daemon.deploy_steps("wc", &["split-words", "count"], "lines", "counts", &[])?;
    let reference: BTreeMap<String, String> =
        [("a".into(), "2".into()), ("b".into(), "1".into())].into();
    wait_for_state(&daemon, "wc", &reference, Duration::from_secs(60))?;
    let internal = [
        "eddy.wc.step-0.changelog",
        "eddy.wc.step-1.changelog",
        "eddy.wc.step-1.repartition",
    ];
    daemon.eddy_ok(&["pipeline", "pause", "wc"])?;
    for topic in internal {
        assert_eq!(
            watermarks(broker.bootstrap(), topic)?.len(),
            2,
            "{topic} kept"
        );
    }
    let paused = daemon.eddy(&["state", "get", "wc", "a"])?;
    assert!(String::from_utf8_lossy(&paused.stderr).contains("paused"));
    daemon.eddy_ok(&["pipeline", "resume", "wc"])?;
    wait_for_state(&daemon, "wc", &reference, Duration::from_secs(60))?;
    daemon.eddy_ok(&["pipeline", "delete", "wc"])?;
    assert!(!dir.path().join("state").join("wc").exists());
    for topic in internal {
        wait_for(&format!("{topic} deleted"), Duration::from_secs(30), || {
            Ok(watermarks(broker.bootstrap(), topic)?
                .is_empty()
                .then_some(()))
        })?;
    }
    Ok(())
}

/// `eddy daemon info -o json`'s memory figures.
fn daemon_memory(daemon: &Daemon) -> anyhow::Result<serde_json::Value> {
    let info: serde_json::Value =
        serde_json::from_str(&daemon.eddy_ok(&["daemon", "info", "-o", "json"])?)?;
    Ok(info["memory"].clone())
}

#[test]
fn every_pipelines_state_draws_on_one_budget_that_daemon_info_reports() -> anyhow::Result<()> {
    let broker = eddy_tests::Broker::start(&[("lines", 2), ("counts-1", 2), ("counts-2", 2)])?;
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(
        broker.bootstrap(),
        dir.path(),
        &["--state-memory", "16MiB"],
        &[],
    )?;
    let idle = daemon_memory(&daemon)?;
    assert_eq!(idle["state_budget_bytes"], 16 << 20, "{idle}");
    assert_eq!(idle["state_stores"], 0, "{idle}");
    assert!(idle["resident_bytes"].as_u64() > Some(1 << 20), "{idle}");
    // librdkafka and RocksDB allocate from glibc's heap.
    assert!(idle["native_heap_used_bytes"].as_u64() > Some(0), "{idle}");

    produce(broker.bootstrap(), "lines", &[Rec::value("a b a")])?;
    let reference: BTreeMap<String, String> =
        [("a".into(), "2".into()), ("b".into(), "1".into())].into();
    for (name, output) in [("wc-1", "counts-1"), ("wc-2", "counts-2")] {
        daemon.deploy_steps(name, &["split-words", "count"], "lines", output, &[])?;
        wait_for_state(&daemon, name, &reference, Duration::from_secs(60))?;
    }
    // Two stores, one budget; the counts just written sit in write
    // buffers, charged to the shared cache.
    let busy = daemon_memory(&daemon)?;
    assert_eq!(busy["state_budget_bytes"], 16 << 20, "{busy}");
    assert_eq!(busy["state_stores"], 2, "{busy}");
    let write_buffers = busy["state_write_buffer_bytes"].as_u64().unwrap_or(0);
    assert!(write_buffers > 0, "{busy}");
    assert!(
        busy["state_cache_bytes"].as_u64() >= Some(write_buffers),
        "{busy}"
    );
    let text = daemon.eddy_ok(&["daemon", "info"])?;
    assert!(text.contains("of 16.0 MiB in the block cache"), "{text}");
    assert!(text.contains("2 store(s)"), "{text}");

    daemon.eddy_ok(&["pipeline", "delete", "wc-2"])?;
    wait_for(
        "the deleted pipeline's store closed",
        Duration::from_secs(30),
        || Ok((daemon_memory(&daemon)?["state_stores"] == 1).then_some(())),
    )?;
    Ok(())
}

#[test]
fn a_state_budget_too_small_to_run_is_refused_at_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(eddy_tests::eddy_bin())
        .args([
            "serve",
            "--brokers",
            "127.0.0.1:9",
            "--state-memory",
            "1MiB",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("state-memory-bytes must be at least 8 MiB"),
        "{stderr}"
    );
    Ok(())
}

fn window_results(records: &[Rec]) -> Vec<(String, i64, i64, u64)> {
    records
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r.value.as_deref()?).ok())
        .map(|v| {
            (
                v["key"].as_str().unwrap_or_default().to_owned(),
                v["start"].as_i64().unwrap_or(-1),
                v["end"].as_i64().unwrap_or(-1),
                v["count"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn tumbling_windows_count_out_of_order_records_and_drop_late_ones() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("events", 1), ("windows", 1)])?;
    let at = |t: i64| Rec::value("e").keyed("a").at(t);
    produce(
        broker.bootstrap(),
        "events",
        // 30s is out of order but within the 10 s grace of [0, 60s); by the
        // time 20 s arrives stream time is 75 s and [0, 60s) has closed.
        &[
            at(1_000),
            at(61_000),
            at(30_000),
            at(75_000),
            at(20_000),
            at(200_000),
        ],
    )?;
    daemon.deploy(
        "per-minute",
        "windowed-count",
        "events",
        "windows",
        &["--config", "grace=10s"],
    )?;
    let out = consume(
        broker.bootstrap(),
        "windows",
        2,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )?;
    assert_eq!(
        window_results(&out),
        [("a".into(), 0, 60_000, 2), ("a".into(), 60_000, 120_000, 2)]
    );
    let status = daemon.pipeline("per-minute")?;
    assert_eq!(
        status.partitions[0].counters.get("late-records-dropped"),
        Some(&1)
    );
    let text = daemon.eddy_ok(&["pipeline", "get", "per-minute"])?;
    assert!(text.contains("late-records-dropped=1"), "{text}");
    Ok(())
}

#[test]
fn session_windows_merge_when_a_record_bridges_them() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("events", 1), ("sessions", 1)])?;
    let at = |t: i64| Rec::value("e").keyed("s").at(t);
    // Two sessions (14 s apart, the gap is 10 s), kept open by the grace.
    produce(broker.bootstrap(), "events", &[at(1_000), at(15_000)])?;
    daemon.deploy(
        "sessions",
        "windowed-count",
        "events",
        "sessions",
        &[
            "--config",
            "window=session",
            "--config",
            "gap=10s",
            "--config",
            "grace=5s",
        ],
    )?;
    wait_for("two open sessions", Duration::from_secs(60), || {
        let p = daemon.pipeline("sessions")?;
        Ok((p.partitions.iter().map(|s| s.records_in).sum::<u64>() == 2).then_some(()))
    })?;
    produce(broker.bootstrap(), "events", &[at(10_500), at(100_000)])?;
    let out = consume(
        broker.bootstrap(),
        "sessions",
        1,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )?;
    assert_eq!(window_results(&out), [("s".into(), 1_000, 15_001, 3)]);
    Ok(())
}

#[test]
fn a_timer_pending_at_a_crash_fires_once_after_the_restart() -> anyhow::Result<()> {
    let (broker, mut daemon, dir) = setup(&[("events", 1), ("windows", 1)])?;
    produce(
        broker.bootstrap(),
        "events",
        &[Rec::value("e").keyed("k").at(5_000)],
    )?;
    daemon.deploy("per-minute", "windowed-count", "events", "windows", &[])?;
    wait_for(
        "the record committed with its window's timer",
        Duration::from_secs(60),
        || {
            let p = daemon.pipeline("per-minute")?;
            Ok((p
                .partitions
                .first()
                .is_some_and(|s| s.committed_offset == 1))
            .then_some(()))
        },
    )?;
    daemon.kill();
    let daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    produce(
        broker.bootstrap(),
        "events",
        &[Rec::value("e").keyed("k").at(130_000)],
    )?;
    let out = consume(
        broker.bootstrap(),
        "windows",
        1,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )?;
    assert_eq!(window_results(&out), [("k".into(), 0, 60_000, 1)]);
    let status = daemon.pipeline("per-minute")?;
    assert!(status.partitions.iter().all(|p| p.last_error.is_empty()));
    Ok(())
}

#[test]
fn dedup_and_fraud_alert_run_on_real_partitions() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("payments", 2), ("unique", 2), ("alerts", 2)])?;
    let pay = |id: &str, card: &str, amount: u32, t: i64| {
        Rec::value(format!(
            r#"{{"id":"{id}","card":"{card}","amount":{amount}}}"#
        ))
        .keyed(card)
        .at(t)
    };
    let payments = [
        pay("p1", "c1", 600, 1_000),
        pay("p1", "c1", 600, 2_000), // a retry of p1: a duplicate
        pay("p2", "c1", 500, 3_000),
        pay("p3", "c2", 900, 4_000),
        pay("p4", "c2", 900, 200_000), // 196 s later: no alert
    ];
    produce(broker.bootstrap(), "payments", &payments)?;
    daemon.deploy(
        "dedup",
        "dedup",
        "payments",
        "unique",
        &["--config", "id-field=id", "--config", "ttl=10m"],
    )?;
    let unique = consume(
        broker.bootstrap(),
        "unique",
        4,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )?;
    let mut ids: Vec<String> = unique
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r.value.as_deref()?).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    assert_eq!(ids, ["p1", "p2", "p3", "p4"]);

    daemon.deploy(
        "fraud",
        "fraud-alert",
        "unique",
        "alerts",
        &["--config", "threshold=1000"],
    )?;
    let alerts = consume(
        broker.bootstrap(),
        "alerts",
        1,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].key_text().as_deref(), Some("c1"));
    let alert: serde_json::Value =
        serde_json::from_slice(alerts[0].value.as_deref().unwrap_or_default())?;
    assert_eq!(alert["total"].as_f64(), Some(1100.0));
    Ok(())
}

#[test]
fn keys_produced_with_librdkafkas_default_partitioner_are_counted_found_and_reported()
-> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("clicks", 3), ("counts", 3)])?;
    daemon.deploy("per-user", "count", "clicks", "counts", &[])?;
    // As kcat or confluent-kafka would produce them: CRC32, not murmur2.
    let mut reference = BTreeMap::new();
    let records: Vec<Rec> = (0..600)
        .map(|i| {
            let user = format!("user-{}", i % 30);
            *reference.entry(user.clone()).or_insert(0u64) += 1;
            Rec::value("click").keyed(user)
        })
        .collect();
    eddy_tests::produce_with(broker.bootstrap(), "clicks", &records, "consistent_random")?;
    let landed = consume(
        broker.bootstrap(),
        "clicks",
        records.len(),
        Duration::from_secs(30),
        Duration::ZERO,
    )?;
    // Where Java clients would have put each record's key, beside where it landed.
    let off: Vec<&Rec> = landed
        .iter()
        .filter(|r| {
            eddy_tests::java_partition(r.key.as_deref().unwrap_or_default(), 3) != r.partition
        })
        .collect();
    assert!(
        !off.is_empty(),
        "CRC32 puts some of 30 keys elsewhere than murmur2 does"
    );
    wait_for_state(
        &daemon,
        "per-user",
        &as_text(&reference),
        Duration::from_secs(60),
    )?;

    // Every key is found by a point query, wherever its records landed.
    for (user, count) in &reference {
        let out = daemon.eddy_ok(&["state", "get", "per-user", user])?;
        assert_eq!(
            out.trim(),
            count.to_string(),
            "eddy state get per-user {user}"
        );
    }
    let missing = daemon.eddy(&["state", "get", "per-user", "nobody"])?;
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such key"));

    // The status counts each record that arrived off its murmur2 partition,
    // and the log says so once per task that saw one.
    let status = daemon.pipeline("per-user")?;
    let counted: u64 = status.partitions.iter().map(|p| p.off_partition_keys).sum();
    assert_eq!(counted, off.len() as u64);
    let warned = daemon.log().matches("not in the partition").count();
    let tasks_off = off
        .iter()
        .map(|r| r.partition)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(warned, tasks_off, "logged once per task:\n{}", daemon.log());
    Ok(())
}

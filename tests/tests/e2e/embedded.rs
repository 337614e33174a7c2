//! The embedded default broker (`eddy serve` without `--brokers`) keeps its
//! topics, logs and committed offsets in the data directory: a daemon
//! restarted there, after SIGTERM or SIGKILL mid-stream, resumes where it
//! stopped, with its state exact, as it would on Apache Kafka.

use anyhow::Context as _;
use eddy_tests::{Daemon, Rec, group_committed, produce, v1, wait_for};
use std::collections::BTreeMap;
use std::time::Duration;

const TOPICS: [&str; 4] = ["--topic", "lines:2", "--topic", "counts:2"];

/// `count` lines of three words from a vocabulary of seven, their words
/// added to `counts`.
fn lines(from: usize, count: usize, counts: &mut BTreeMap<String, u64>) -> Vec<Rec> {
    (from..from + count)
        .map(|i| {
            let words: Vec<String> = (0..3).map(|j| format!("w{}", (i + j * 2) % 7)).collect();
            for w in &words {
                *counts.entry(w.clone()).or_default() += 1;
            }
            Rec::value(words.join(" "))
        })
        .collect()
}

/// Waits until `eddy state get wc KEY` answers every count in `counts`, as
/// a user would ask, and the pipeline runs without error.
fn counted(daemon: &Daemon, counts: &BTreeMap<String, u64>) -> anyhow::Result<()> {
    wait_for("every count answered", Duration::from_secs(90), || {
        let p = daemon.pipeline("wc")?;
        anyhow::ensure!(
            p.state != v1::PipelineState::Failed as i32,
            "the pipeline failed after the restart: {p:?}"
        );
        for (word, count) in counts {
            let out = daemon.eddy(&["state", "get", "wc", word])?;
            if String::from_utf8_lossy(&out.stdout).trim() != count.to_string() {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
}

#[test]
fn the_embedded_broker_resumes_after_sigterm_and_sigkill_mid_stream() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut daemon = Daemon::start_embedded(dir.path(), &TOPICS)?;
    daemon.deploy_steps("wc", &["split-words", "count"], "lines", "counts", &[])?;
    let mut counts = BTreeMap::new();
    let brokers = daemon
        .embedded_broker()
        .context("no embedded broker")?
        .to_owned();
    produce(&brokers, "lines", &lines(0, 100, &mut counts))?;
    counted(&daemon, &counts)?;

    let mut produced = 100;
    for kill in [false, true] {
        // The daemon stops while it works through this input: some of it
        // committed, not all. A machine fast enough to commit a whole
        // chunk between two looks gets another chunk, so the stop still
        // lands mid-stream however fast the daemon is.
        let brokers = daemon
            .embedded_broker()
            .context("no embedded broker")?
            .to_owned();
        let before = i64::try_from(produced)?;
        wait_for(
            "the stop to land mid-stream",
            Duration::from_secs(60),
            || {
                let committed: i64 = group_committed(&brokers, "eddy.wc", "lines", 2)?
                    .iter()
                    .map(|o| (*o).max(0))
                    .sum();
                if committed >= i64::try_from(produced)? {
                    produce(&brokers, "lines", &lines(produced, 30_000, &mut counts))?;
                    produced += 30_000;
                    return Ok(None);
                }
                Ok((committed > before).then_some(()))
            },
        )?;
        if kill {
            daemon.kill();
        } else {
            assert!(daemon.terminate(Duration::from_secs(30))?.success());
        }
        daemon = Daemon::start_embedded(dir.path(), &TOPICS)?;
        assert!(
            daemon.eddy_ok(&["pipeline", "list"])?.contains("wc"),
            "the pipeline is back"
        );
        // What was produced before the stop is counted once, and new input
        // after it too.
        let brokers = daemon
            .embedded_broker()
            .context("no embedded broker")?
            .to_owned();
        produce(&brokers, "lines", &lines(produced, 10, &mut counts))?;
        produced += 10;
        counted(&daemon, &counts)
            .with_context(|| format!("after {}", if kill { "SIGKILL" } else { "SIGTERM" }))?;
    }
    Ok(())
}

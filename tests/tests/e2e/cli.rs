//! `eddy produce` and `eddy consume`, the Kafka tools a demo needs, finding
//! the broker through the daemon.

use super::setup;
use eddy_tests::{consume, eddy_bin};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn produce_streams_stdin_and_consume_reads_it_back() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("lines", 2)])?;
    let mut producer = Command::new(eddy_bin())
        .args(["produce", "lines", "--key-separator", ":"])
        .env("EDDY_SERVER", daemon.server())
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = producer
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    writeln!(stdin, "k1:first")?;
    stdin.flush()?;
    // It arrives while stdin is still open: lines are produced as they come.
    let seen = consume(
        broker.bootstrap(),
        "lines",
        1,
        Duration::from_secs(30),
        Duration::ZERO,
    )?;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].key_text().as_deref(), Some("k1"));
    assert_eq!(seen[0].text().as_deref(), Some("first"));
    writeln!(stdin, "no key here")?;
    drop(stdin);
    assert!(producer.wait()?.success());

    let out = daemon.eddy_ok(&[
        "consume",
        "lines",
        "--from-beginning",
        "--count",
        "2",
        "--print-key",
        "--idle-timeout",
        "30s",
    ])?;
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["\tno key here", "k1\tfirst"]);
    Ok(())
}

#[test]
fn an_unreachable_broker_is_one_clear_error_not_a_hang() -> anyhow::Result<()> {
    // Nothing listens on port 9 of loopback.
    let started = std::time::Instant::now();
    let mut producer = Command::new(eddy_bin())
        .args(["produce", "t", "--brokers", "127.0.0.1:9"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = producer.stdin.take() {
        writeln!(stdin, "hello")?;
    }
    let out = producer.wait_with_output()?;
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("could not reach Kafka at 127.0.0.1:9"),
        "{stderr}"
    );
    assert!(
        stderr.lines().count() <= 2,
        "no flood of client logs: {stderr}"
    );
    Ok(())
}

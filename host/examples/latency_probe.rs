//! End-to-end latency for `just bench`: produces records at a fixed rate
//! into INPUT, each value starting with its send time, reads OUTPUT
//! (`read_committed`, as a downstream consumer would) and prints the
//! latency percentiles of what it read back, from send to receipt.
//!
//! Run: `cargo run --release -p eddy --example latency_probe -- BROKERS
//! INPUT OUTPUT RATE SECONDS`, with something (eddy's `uppercase`, or the
//! `native_uppercase` loop) processing INPUT into OUTPUT. Values are
//! 100-200 bytes, keys spread records over the partitions; the first second
//! is left out as warm-up. Prints `sent N received M p50_ms A p99_ms B
//! max_ms C`.

mod support;

use anyhow::Context as _;
use eddy::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Left out of the percentiles: the first records meet cold caches and
/// consumers still starting to fetch.
const WARM_UP: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, input, output, rate, seconds] = args.as_slice() else {
        anyhow::bail!("usage: latency_probe BROKERS INPUT OUTPUT RATE SECONDS");
    };
    let rate: f64 = rate.parse().context("RATE must be records per second")?;
    let seconds: f64 = seconds.parse().context("SECONDS must be a number")?;
    let total = (rate * seconds) as u64;
    let kafka = KafkaSettings::new(brokers.as_str());
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let reader = {
        let (kafka, output) = (kafka.clone(), output.clone());
        std::thread::spawn(move || read_latencies(&kafka, &output, total, seconds, &ready_tx))
    };
    // Nothing is sent before the reader knows where the output ends.
    if ready.recv().is_err() {
        return reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader panicked"))?
            .map(drop);
    }
    let producer: FutureProducer = kafka.producer().create()?;
    let started = Instant::now();
    let mut sent = 0u64;
    let pad = "abcdefghijklmnopqrstuvwxyz0123456789 ".repeat(6);
    while sent < total {
        let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
        while sent < due {
            let key = format!("k{sent}");
            let value = format!(
                "{:020} {}",
                now_nanos(),
                &pad[..65 + (sent as usize * 37) % 100]
            );
            // The delivery is not awaited: the reader sees the record.
            drop(support::send(
                &producer,
                FutureRecord::to(input).key(&key).payload(&value),
            )?);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30))?;
    let latencies = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    let received = latencies.len();
    // Arrival order is near enough send order to leave out the warm-up.
    let skip = received.min((rate * WARM_UP.as_secs_f64()) as usize);
    let mut measured = latencies[skip..].to_vec();
    measured.sort_unstable();
    let percentile = |p: f64| {
        measured
            .get(((measured.len() as f64 * p) as usize).min(measured.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "sent {sent} received {received} p50_ms {:.2} p99_ms {:.2} max_ms {:.2}",
        percentile(0.50),
        percentile(0.99),
        percentile(1.0),
    );
    Ok(())
}

/// Reads `output` from its end (records of earlier runs are not ours) until `total` records arrived (or the run
/// plus a grace period is over); each one's latency, in arrival order.
fn read_latencies(
    kafka: &KafkaSettings,
    output: &str,
    total: u64,
    seconds: f64,
    ready: &std::sync::mpsc::Sender<()>,
) -> anyhow::Result<Vec<Duration>> {
    let consumer: BaseConsumer = kafka.consumer("eddy-latency-probe").create()?;
    let partitions = consumer
        .fetch_metadata(Some(output), Duration::from_secs(10))?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let mut assignment = TopicPartitionList::new();
    for p in 0..i32::try_from(partitions)? {
        let (_, high) = consumer.fetch_watermarks(output, p, Duration::from_secs(10))?;
        assignment.add_partition_offset(output, p, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    ready.send(())?;
    let give_up = Instant::now() + Duration::from_secs_f64(seconds + 30.0);
    let mut latencies = Vec::with_capacity(usize::try_from(total)?);
    while (latencies.len() as u64) < total && Instant::now() < give_up {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let received = now_nanos();
        let message = message?;
        let sent = message
            .payload()
            .and_then(|v| std::str::from_utf8(v.get(..20)?).ok()?.parse::<u128>().ok())
            .context("an output record does not start with its send time")?;
        latencies.push(Duration::from_nanos(
            u64::try_from(received.saturating_sub(sent)).unwrap_or(u64::MAX),
        ));
    }
    Ok(latencies)
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

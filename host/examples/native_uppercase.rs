//! The native baseline of `just bench`: a plain Rust rdkafka loop that does
//! what the `uppercase` pipeline does (consume, upper-case the value,
//! produce, commit once the outputs are acknowledged), with the client
//! settings eddy uses, eddy's default batch (1024 records or 10 ms) and a
//! thread per partition, so the benchmark isolates what eddy costs over the
//! Kafka I/O itself. It reads every partition from its start until RECORDS
//! records went through, so it serves a preloaded input (throughput) and a
//! live one (latency, with `latency_probe` producing) alike.
//!
//! Run: `cargo run --release -p eddy --example native_uppercase -- BROKERS
//! INPUT OUTPUT GROUP RECORDS [latest]` (`latest`: from the partitions'
//! ends, printing `ready` once it holds every partition's end, so a
//! producer started after that line loses nothing). It stops once it processed RECORDS records and prints `processed
//! N wall_s W cpu_s C rss_mib R`: wall time from the first record to the
//! last commit, this process's CPU time (all threads, user + sys) and peak
//! resident memory.

mod support;

use anyhow::Context as _;
use eddy::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// With `latest`, how long the input may stay quiet before the loop ends.
const IDLE_END: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (brokers, input, output, group, records, from_end) = match args.as_slice() {
        [b, i, o, g, r] => (b, i, o, g, r, false),
        [b, i, o, g, r, from] if from == "latest" => (b, i, o, g, r, true),
        _ => anyhow::bail!("usage: native_uppercase BROKERS INPUT OUTPUT GROUP RECORDS [latest]"),
    };
    let want: u64 = records.parse().context("RECORDS must be a number")?;
    let kafka = KafkaSettings::new(brokers.as_str());
    let partitions = support::partition_count(&kafka, input)?;
    let producer: FutureProducer = kafka.producer().create()?;
    let (input, output, group) = (input.clone(), output.clone(), group.clone());
    let placed = Arc::new(AtomicUsize::new(0));
    support::run_partitions(partitions, want, move |partition, remaining| {
        let topics = Topics {
            input: &input,
            output: &output,
            group: &group,
            from_end,
        };
        let placed = || {
            if from_end && placed.fetch_add(1, Ordering::SeqCst) + 1 == partitions {
                println!("ready");
            }
        };
        run_partition(&kafka, &producer, topics, partition, remaining, placed)
    })
}

/// Where a partition thread reads, writes and commits.
struct Topics<'a> {
    input: &'a str,
    output: &'a str,
    group: &'a str,
    /// Start at the partition's end instead of its start.
    from_end: bool,
}

/// Processes one partition from its start until `remaining` (shared by
/// every partition's thread) reaches zero; the records processed and when
/// the first arrived.
fn run_partition(
    kafka: &KafkaSettings,
    producer: &FutureProducer,
    Topics {
        input,
        output,
        group,
        from_end,
    }: Topics<'_>,
    partition: i32,
    remaining: &AtomicU64,
    placed: impl FnOnce(),
) -> anyhow::Result<(u64, Option<Instant>)> {
    let consumer: BaseConsumer = kafka.consumer(group).create()?;
    let (low, high) = consumer.fetch_watermarks(input, partition, Duration::from_secs(10))?;
    let low = if from_end { high } else { low };
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(input, partition, Offset::Offset(low))?;
    consumer.assign(&assignment)?;
    placed();
    let mut next = low;
    let mut started = None;
    let mut last_record = Instant::now();
    while remaining.load(Ordering::Relaxed) > 0 {
        // A live input (`latest`) that stopped: whatever was produced
        // before this loop looked for the partition's end is not ours, so
        // the count may never be reached.
        if from_end && started.is_some() && last_record.elapsed() > IDLE_END {
            break;
        }
        // One batch: up to MAX_BATCH records, or what arrived within LINGER
        // of the first.
        let mut batch = Vec::with_capacity(support::MAX_BATCH);
        support::poll_batch(&consumer, |message| {
            started.get_or_insert_with(Instant::now);
            next = message.offset() + 1;
            batch.push((
                message.key().map(<[u8]>::to_vec),
                message.payload().map(<[u8]>::to_ascii_uppercase),
            ));
            Ok(())
        })?;
        if !batch.is_empty() {
            last_record = Instant::now();
        }
        let mut deliveries = Vec::with_capacity(batch.len());
        for (key, value) in &batch {
            let mut record = FutureRecord::<[u8], [u8]>::to(output);
            if let Some(key) = key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = value {
                record = record.payload(value.as_slice());
            }
            deliveries.push(support::send(producer, record)?);
        }
        for delivery in deliveries {
            futures::executor::block_on(delivery)
                .context("delivery canceled")?
                .map_err(|(e, _)| e)?;
        }
        if !batch.is_empty() {
            let done = batch.len() as u64;
            let _ = remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                Some(r.saturating_sub(done))
            });
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset(input, partition, Offset::Offset(next))?;
            consumer.commit(&offsets, CommitMode::Async)?;
        }
    }
    Ok((u64::try_from(next - low)?, started))
}

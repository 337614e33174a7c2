//! The native baseline of `just bench`: a plain Rust rdkafka loop that does
//! what the `uppercase` pipeline does (consume, upper-case the value,
//! produce, commit once the outputs are acknowledged), with the client
//! settings eddy uses, eddy's default batch (1024 records or 10 ms) and a
//! thread per partition, so the benchmark isolates what eddy costs over the
//! Kafka I/O itself. It reads each partition from its start to the end it
//! has when the loop starts.
//!
//! Run: `cargo run --release -p eddy --example native_uppercase -- BROKERS
//! INPUT OUTPUT GROUP RECORDS`. It stops once it processed RECORDS records
//! and prints `processed N wall_s W cpu_s C`: wall time from the first
//! record to the last commit, and this process's CPU time (all threads,
//! user + sys).

use anyhow::Context as _;
use eddy::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const MAX_BATCH: usize = 1024;
const LINGER: Duration = Duration::from_millis(10);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, input, output, group, records] = args.as_slice() else {
        anyhow::bail!("usage: native_uppercase BROKERS INPUT OUTPUT GROUP RECORDS");
    };
    let want: u64 = records.parse().context("RECORDS must be a number")?;
    let kafka = KafkaSettings::new(brokers.as_str());
    let metadata: BaseConsumer = kafka.metadata_client().create()?;
    let partitions = metadata
        .fetch_metadata(Some(input), Duration::from_secs(10))?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let producer: FutureProducer = kafka.producer().create()?;
    // A thread per partition, as eddy runs a task per partition: the
    // baseline gets the same parallelism.
    let threads: Vec<_> = (0..partitions)
        .map(|p| {
            let (kafka, producer) = (kafka.clone(), producer.clone());
            let (input, output, group) = (input.clone(), output.clone(), group.clone());
            std::thread::spawn(move || {
                let partition = i32::try_from(p)?;
                run_partition(&kafka, &producer, &input, partition, &output, &group)
            })
        })
        .collect();
    let mut processed = 0u64;
    let mut first: Option<Instant> = None;
    for thread in threads {
        let (n, started) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a partition thread panicked"))??;
        processed += n;
        first = match (first, started) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    anyhow::ensure!(
        processed == want,
        "processed {processed} records, expected {want}"
    );
    let wall = first.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!(
        "processed {processed} wall_s {wall:.3} cpu_s {:.3}",
        cpu_seconds()?
    );
    Ok(())
}

/// Processes one partition from its start to the end it has now; the
/// records processed and when the first arrived.
fn run_partition(
    kafka: &KafkaSettings,
    producer: &FutureProducer,
    input: &str,
    partition: i32,
    output: &str,
    group: &str,
) -> anyhow::Result<(u64, Option<Instant>)> {
    let consumer: BaseConsumer = kafka.consumer(group).create()?;
    let (low, high) = consumer.fetch_watermarks(input, partition, Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(input, partition, Offset::Offset(low))?;
    consumer.assign(&assignment)?;
    let mut next = low;
    let mut started = None;
    while next < high {
        // One batch: up to MAX_BATCH records, or what arrived within LINGER
        // of the first.
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut deadline: Option<Instant> = None;
        while batch.len() < MAX_BATCH {
            let timeout = deadline.map_or(Duration::from_millis(100), |d| {
                d.saturating_duration_since(Instant::now())
            });
            match consumer.poll(timeout) {
                None => break,
                Some(message) => {
                    let message = message?;
                    started.get_or_insert_with(Instant::now);
                    deadline.get_or_insert_with(|| Instant::now() + LINGER);
                    next = message.offset() + 1;
                    batch.push((
                        message.key().map(<[u8]>::to_vec),
                        message.payload().map(<[u8]>::to_ascii_uppercase),
                    ));
                }
            }
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
            deliveries.push(send(producer, record)?);
        }
        for delivery in deliveries {
            futures::executor::block_on(delivery)
                .context("delivery canceled")?
                .map_err(|(e, _)| e)?;
        }
        if !batch.is_empty() {
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset(input, partition, Offset::Offset(next))?;
            consumer.commit(&offsets, CommitMode::Async)?;
        }
    }
    Ok((u64::try_from(next - low)?, started))
}

/// Sends `record`, waiting while the producer's queue is full.
fn send(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, [u8], [u8]>,
) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// This process's CPU time, all threads (schedstat is in nanoseconds).
fn cpu_seconds() -> anyhow::Result<f64> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task")? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        nanos += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(nanos as f64 / 1e9)
}

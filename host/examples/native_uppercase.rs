//! The native baseline of `just bench`: a plain Rust rdkafka loop that does
//! what the `uppercase` pipeline does (consume, upper-case the value,
//! produce, commit once the outputs are acknowledged), with the client
//! settings eddy uses, eddy's default batch (1024 records or 10 ms) and a
//! thread per partition, so the benchmark isolates what eddy costs over the
//! Kafka I/O itself. It reads every partition from its start until RECORDS
//! records went through, so it serves a preloaded input (throughput) and a
//! live one (latency, with `latency_probe` producing) alike.
//!
//! With `lean`, the loop does its Kafka I/O the way eddy's tasks do
//! (`eddy::kafka`: a batch of fetched records per librdkafka call, records
//! produced through a topic handle with their acknowledgements counted per
//! batch) instead of through the rdkafka crate's per-message API that a
//! plain loop uses: the benchmark's (a'), what the Kafka I/O alone costs
//! on eddy's own path.
//!
//! Run: `cargo run --release -p eddy --example native_uppercase -- BROKERS
//! INPUT OUTPUT GROUP RECORDS [latest] [lean]` (`latest`: from the
//! partitions' ends, printing `ready` once it holds every partition's end,
//! so a producer started after that line loses nothing). It stops once it processed RECORDS records and prints `processed
//! N wall_s W cpu_s C rss_mib R`: wall time from the first record to the
//! last commit, this process's CPU time (all threads, user + sys) and peak
//! resident memory.

mod support;

use anyhow::Context as _;
use eddy::kafka::{Acks, FetchQueue, KafkaSettings, Outgoing, Producer};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, DefaultConsumerContext,
};
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
    let usage = "usage: native_uppercase BROKERS INPUT OUTPUT GROUP RECORDS [latest] [lean]";
    let (brokers, input, output, group, records, options) = match args.as_slice() {
        [b, i, o, g, r, options @ ..] => (b, i, o, g, r, options),
        _ => anyhow::bail!(usage),
    };
    if let Some(unknown) = options.iter().find(|o| *o != "latest" && *o != "lean") {
        anyhow::bail!("unknown option `{unknown}`; {usage}");
    }
    let from_end = options.iter().any(|o| o == "latest");
    let lean = options.iter().any(|o| o == "lean");
    let want: u64 = records.parse().context("RECORDS must be a number")?;
    let kafka = KafkaSettings::new(brokers.as_str());
    let partitions = support::partition_count(&kafka, input)?;
    let (input, output, group) = (input.clone(), output.clone(), group.clone());
    let placed = Arc::new(AtomicUsize::new(0));
    let placed = move || {
        if from_end && placed.fetch_add(1, Ordering::SeqCst) + 1 == partitions {
            println!("ready");
        }
    };
    if lean {
        let producer = Producer::create(&kafka.producer())?;
        return support::run_partitions(partitions, want, move |partition, remaining| {
            let topics = Topics {
                input: &input,
                output: &output,
                group: &group,
                from_end,
            };
            run_partition_lean(&kafka, &producer, topics, partition, remaining, &placed)
        });
    }
    let producer: FutureProducer = kafka.producer().create()?;
    support::run_partitions(partitions, want, move |partition, remaining| {
        let topics = Topics {
            input: &input,
            output: &output,
            group: &group,
            from_end,
        };
        run_partition(&kafka, &producer, topics, partition, remaining, &placed)
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
/// every partition's thread) reaches zero, through the rdkafka crate's API;
/// the records processed and when the first arrived.
fn run_partition(
    kafka: &KafkaSettings,
    producer: &FutureProducer,
    topics: Topics<'_>,
    partition: i32,
    remaining: &AtomicU64,
    placed: &impl Fn(),
) -> anyhow::Result<(u64, Option<Instant>)> {
    let consumer: BaseConsumer = kafka.consumer(topics.group).create()?;
    let low = start_offset(&consumer, &topics, partition)?;
    assign(&consumer, &topics, partition, low)?;
    placed();
    let take = |each: &mut EachRecord<'_>| {
        support::poll_batch(&consumer, |message| {
            each(message.key(), message.payload(), message.offset());
            Ok(())
        })
        .map(drop)
    };
    let send = |batch: &[Uppercased]| {
        let mut deliveries = Vec::with_capacity(batch.len());
        for (key, value) in batch {
            let mut record = FutureRecord::<[u8], [u8]>::to(topics.output);
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
        Ok(())
    };
    run_batches(&consumer, &topics, partition, low, remaining, take, send)
}

/// [`run_partition`] on eddy's Kafka path: a batch taken in one call,
/// outputs sent through a topic handle and their acknowledgements counted.
fn run_partition_lean(
    kafka: &KafkaSettings,
    producer: &Producer,
    topics: Topics<'_>,
    partition: i32,
    remaining: &AtomicU64,
    placed: &impl Fn(),
) -> anyhow::Result<(u64, Option<Instant>)> {
    let consumer: Arc<BaseConsumer<DefaultConsumerContext>> =
        Arc::new(kafka.consumer(topics.group).create()?);
    let low = start_offset(&consumer, &topics, partition)?;
    // Split before the assignment, so no record reaches the consumer's queue.
    let mut queue = FetchQueue::split(&consumer, topics.input, partition)
        .context("could not split the partition's queue")?;
    assign(&consumer, &topics, partition, low)?;
    placed();
    let output = producer.topic(topics.output)?;
    let take = |each: &mut EachRecord<'_>| {
        support::take_batch(&mut queue, |record| {
            each(record.key, record.value, record.offset);
        });
        queue.next_error().map_or(Ok(()), |e| Err(e.into()))
    };
    let send = |batch: &[Uppercased]| {
        let acks = Acks::default();
        for (key, value) in batch {
            let record = Outgoing {
                key: key.as_deref(),
                value: value.as_deref(),
                ..Outgoing::to(&output)
            };
            producer.send(record, &acks)?;
        }
        acks.wait()?;
        Ok(())
    };
    run_batches(&consumer, &topics, partition, low, remaining, take, send)
}

/// A record's key and upper-cased value.
type Uppercased = (Option<Vec<u8>>, Option<Vec<u8>>);

/// What a take hands each record to: its key, value and offset.
type EachRecord<'a> = dyn FnMut(Option<&[u8]>, Option<&[u8]>, i64) + 'a;

/// Where the partition's input starts: its start, or with `latest` its end.
fn start_offset<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &Topics<'_>,
    partition: i32,
) -> anyhow::Result<i64> {
    let (low, high) =
        consumer.fetch_watermarks(topics.input, partition, Duration::from_secs(10))?;
    Ok(if topics.from_end { high } else { low })
}

fn assign<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &Topics<'_>,
    partition: i32,
    offset: i64,
) -> anyhow::Result<()> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topics.input, partition, Offset::Offset(offset))?;
    Ok(consumer.assign(&assignment)?)
}

/// The loop both variants run from `low`: a batch taken by `take` (each
/// record handed as key, value and offset), upper-cased, sent and awaited
/// by `send`, then counted off `remaining` and its offset committed.
fn run_batches<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &Topics<'_>,
    partition: i32,
    low: i64,
    remaining: &AtomicU64,
    mut take: impl FnMut(&mut EachRecord<'_>) -> anyhow::Result<()>,
    mut send: impl FnMut(&[Uppercased]) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, Option<Instant>)> {
    let mut next = low;
    let mut started = None;
    let mut last_record = Instant::now();
    let mut batch = Vec::with_capacity(support::MAX_BATCH);
    while remaining.load(Ordering::Relaxed) > 0 {
        // A live input (`latest`) that stopped: whatever was produced
        // before this loop looked for the partition's end is not ours, so
        // the count may never be reached.
        if topics.from_end && started.is_some() && last_record.elapsed() > IDLE_END {
            break;
        }
        // One batch: up to MAX_BATCH records, or what arrived within LINGER
        // of the first.
        batch.clear();
        take(&mut |key, value, offset| {
            started.get_or_insert_with(Instant::now);
            next = offset + 1;
            batch.push((
                key.map(<[u8]>::to_vec),
                value.map(<[u8]>::to_ascii_uppercase),
            ));
        })?;
        if batch.is_empty() {
            continue;
        }
        last_record = Instant::now();
        send(&batch)?;
        let done = batch.len() as u64;
        let _ = remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
            Some(r.saturating_sub(done))
        });
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(topics.input, partition, Offset::Offset(next))?;
        consumer.commit(&offsets, CommitMode::Async)?;
    }
    Ok((u64::try_from(next - low)?, started))
}

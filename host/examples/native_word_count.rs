//! The native baselines of word count for `just bench`: plain Rust loops over
//! rdkafka and RocksDB doing what the `split-words` -> `count` pipeline does:
//! split each line into lower-cased words, add one to each word's count in
//! RocksDB (decimal text, as `count` stores it), and after each batch
//! produce the latest count of every word the batch touched, then commit
//! once the outputs are acknowledged. A thread per partition, eddy's client
//! settings and batch (1024 records or 10 ms), one database shared by the
//! threads. Two shapes:
//!
//! - **direct** (six arguments): one process counts every partition's words
//!   itself, with RocksDB's write-ahead log for durability. This is the
//!   fastest a single machine can count, and it does not scale out: a
//!   second process would count the same word in two places.
//! - **repartitioned** (with REPARTITION and CHANGELOG topics): the topology
//!   eddy and Kafka Streams run, so that any number of processes can share
//!   the work. A split stage produces every word keyed by itself to
//!   REPARTITION (so equal words meet in one partition), and a count stage
//!   per REPARTITION partition counts them, logs each batch's new counts to
//!   CHANGELOG (the state's durable copy, which lets a partition's state
//!   move to another process) and produces them. This is the like-for-like
//!   baseline for eddy's pipeline; the direct one shows what the
//!   topology itself costs.
//!
//! Run: `cargo run --release -p eddy --example native_word_count -- BROKERS
//! INPUT OUTPUT GROUP RECORDS STATE_DIR [REPARTITION CHANGELOG]`. It stops
//! once it processed RECORDS input records (and, repartitioned, counted
//! every word they held) and prints `processed N wall_s W cpu_s C rss_mib
//! R`.

mod support;

use anyhow::Context as _;
use eddy::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (brokers, input, output, group, records, state_dir, repartition) = match args.as_slice() {
        [b, i, o, g, r, s] => (b, i, o, g, r, s, None),
        [b, i, o, g, r, s, rp, cl] => (b, i, o, g, r, s, Some((rp.clone(), cl.clone()))),
        _ => anyhow::bail!(
            "usage: native_word_count BROKERS INPUT OUTPUT GROUP RECORDS STATE_DIR [REPARTITION CHANGELOG]"
        ),
    };
    let want: u64 = records.parse().context("RECORDS must be a number")?;
    // The daemon's default state budget, so both count with the same memory.
    let memory = eddy::state::StateMemory::default();
    let db = rocksdb::DB::open(&eddy::state::PipelineDb::options(&memory), state_dir)?;
    let kafka = KafkaSettings::new(brokers.as_str());
    let partitions = support::partition_count(&kafka, input)?;
    let producer: FutureProducer = kafka.producer().create()?;
    match repartition {
        None => {
            let (input, output, group) = (input.clone(), output.clone(), group.clone());
            support::run_partitions(partitions, want, move |partition, remaining| {
                let consumer = assigned(&kafka, &group, &input, partition, Start::Beginning)?;
                let count = Counter {
                    db: &db,
                    producer: &producer,
                    output: &output,
                    changelog: None,
                    partition,
                };
                let (mut next, mut started) = (None, None);
                while remaining.load(Ordering::Relaxed) > 0 {
                    let mut touched = BTreeMap::new();
                    let records = support::poll_batch(&consumer, |message| {
                        started.get_or_insert_with(Instant::now);
                        next = Some(message.offset() + 1);
                        let line = message.payload().and_then(|v| std::str::from_utf8(v).ok());
                        for word in line.into_iter().flat_map(words) {
                            count.add(&mut touched, word)?;
                        }
                        Ok(())
                    })? as u64;
                    if records == 0 {
                        continue;
                    }
                    count.flush(touched)?;
                    let _ = remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                        Some(r.saturating_sub(records))
                    });
                    commit(&consumer, &input, partition, next)?;
                }
                Ok((
                    records_between(&consumer, &input, partition, next)?,
                    started,
                ))
            })
        }
        Some((repartition, changelog)) => {
            let topics = Topics {
                input,
                output,
                group,
                repartition: &repartition,
                changelog: &changelog,
            };
            let topology = Topology {
                kafka: &kafka,
                producer: &producer,
                db: &db,
                topics: &topics,
            };
            topology.run(partitions, want)
        }
    }
}

/// Where the repartitioned topology reads and writes.
struct Topics<'a> {
    input: &'a str,
    output: &'a str,
    group: &'a str,
    repartition: &'a str,
    changelog: &'a str,
}

/// What the two stages share: how far the input is, and whether every word
/// sent has been counted.
struct Progress {
    lines_left: AtomicU64,
    words_sent: AtomicU64,
    words_counted: AtomicU64,
    split_done: AtomicBool,
    first: Mutex<Option<Instant>>,
}

/// The repartitioned word count's clients, database and topics, which
/// both stages use.
struct Topology<'a> {
    kafka: &'a KafkaSettings,
    producer: &'a FutureProducer,
    db: &'a rocksdb::DB,
    topics: &'a Topics<'a>,
}

impl Topology<'_> {
    /// The split stage (a thread per input partition) and the count stage (a
    /// thread per repartition partition) at once, as a two-step pipeline runs.
    fn run(&self, partitions: usize, want: u64) -> anyhow::Result<()> {
        let (kafka, topics) = (self.kafka, self.topics);
        let count_partitions = support::partition_count(kafka, topics.repartition)?;
        // The count stage reads what this run produces: from the topic's ends
        // now, before any split thread produces.
        let metadata: BaseConsumer = kafka.metadata_client().create()?;
        let count_starts = (0..count_partitions)
            .map(|p| -> anyhow::Result<i64> {
                let p = i32::try_from(p)?;
                Ok(metadata
                    .fetch_watermarks(topics.repartition, p, Duration::from_secs(10))?
                    .1)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let progress = Progress {
            lines_left: AtomicU64::new(want),
            words_sent: AtomicU64::new(0),
            words_counted: AtomicU64::new(0),
            split_done: AtomicBool::new(false),
            first: Mutex::new(None),
        };
        let lines = std::thread::scope(|scope| -> anyhow::Result<u64> {
            let counts: Vec<_> = count_starts
                .iter()
                .enumerate()
                .map(|(p, &start)| {
                    let progress = &progress;
                    scope.spawn(move || -> anyhow::Result<()> {
                        let partition = i32::try_from(p)?;
                        self.count_stage(partition, start, progress)
                    })
                })
                .collect();
            let splits: Vec<_> = (0..partitions)
                .map(|p| {
                    let progress = &progress;
                    scope.spawn(move || -> anyhow::Result<u64> {
                        self.split_stage(i32::try_from(p)?, progress)
                    })
                })
                .collect();
            let mut lines = 0;
            let mut failed = None;
            for split in splits {
                match split.join() {
                    Ok(Ok(n)) => lines += n,
                    Ok(Err(e)) => failed = Some(e),
                    Err(_) => failed = Some(anyhow::anyhow!("a split thread panicked")),
                }
            }
            progress.split_done.store(true, Ordering::SeqCst);
            for count in counts {
                count
                    .join()
                    .map_err(|_| anyhow::anyhow!("a count thread panicked"))??;
            }
            failed.map_or(Ok(lines), Err)
        })?;
        anyhow::ensure!(lines == want, "processed {lines} records, expected {want}");
        let first = progress
            .first
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        support::report(lines, first.map_or(0.0, |s| s.elapsed().as_secs_f64()));
        Ok(())
    }

    /// Splits one input partition's lines into words keyed by themselves, to
    /// the repartition topic; commits each batch once its words are
    /// acknowledged. Returns the lines it processed.
    fn split_stage(&self, partition: i32, progress: &Progress) -> anyhow::Result<u64> {
        let (kafka, producer, topics) = (self.kafka, self.producer, self.topics);
        let consumer = assigned(
            kafka,
            topics.group,
            topics.input,
            partition,
            Start::Beginning,
        )?;
        let mut next = None;
        while progress.lines_left.load(Ordering::Relaxed) > 0 {
            let mut deliveries = Vec::new();
            let records = support::poll_batch(&consumer, |message| {
                if next.is_none() {
                    let mut first = progress
                        .first
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?;
                    first.get_or_insert_with(Instant::now);
                }
                next = Some(message.offset() + 1);
                let line = message.payload().and_then(|v| std::str::from_utf8(v).ok());
                for word in line.into_iter().flat_map(words) {
                    let record = FutureRecord::<str, str>::to(topics.repartition)
                        .key(&word)
                        .payload(&word);
                    deliveries.push(support::send(producer, record)?);
                }
                Ok(())
            })? as u64;
            if records == 0 {
                continue;
            }
            let sent = deliveries.len() as u64;
            acknowledged(deliveries)?;
            progress.words_sent.fetch_add(sent, Ordering::SeqCst);
            let _ = progress
                .lines_left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                    Some(r.saturating_sub(records))
                });
            commit(&consumer, topics.input, partition, next)?;
        }
        records_between(&consumer, topics.input, partition, next)
    }

    /// Counts one repartition partition's words from `start` until the split
    /// stage is done and every word it sent has been counted.
    fn count_stage(&self, partition: i32, start: i64, progress: &Progress) -> anyhow::Result<()> {
        let (kafka, producer, db, topics) = (self.kafka, self.producer, self.db, self.topics);
        let group = format!("{}-count", topics.group);
        let consumer = assigned(
            kafka,
            &group,
            topics.repartition,
            partition,
            Start::At(start),
        )?;
        let count = Counter {
            db,
            producer,
            output: topics.output,
            changelog: Some(topics.changelog),
            partition,
        };
        let mut next = None;
        loop {
            let done = progress.split_done.load(Ordering::SeqCst);
            if done
                && progress.words_counted.load(Ordering::SeqCst)
                    >= progress.words_sent.load(Ordering::SeqCst)
            {
                return Ok(());
            }
            let mut touched = BTreeMap::new();
            let records = support::poll_batch(&consumer, |message| {
                next = Some(message.offset() + 1);
                if let Some(word) = message.key().and_then(|k| std::str::from_utf8(k).ok()) {
                    count.add(&mut touched, word.to_owned())?;
                }
                Ok(())
            })? as u64;
            if records == 0 {
                continue;
            }
            count.flush(touched)?;
            commit(&consumer, topics.repartition, partition, next)?;
            progress.words_counted.fetch_add(records, Ordering::SeqCst);
        }
    }
}

/// Counts words into RocksDB and produces each batch's new counts.
struct Counter<'a> {
    db: &'a rocksdb::DB,
    producer: &'a FutureProducer,
    output: &'a str,
    /// Where the counts are logged (in the count partition's own
    /// partition), if the state's durable copy is in Kafka.
    changelog: Option<&'a str>,
    partition: i32,
}

impl Counter<'_> {
    /// Adds one to `word`'s count in this batch's `touched` counts, read
    /// from the database on a batch's first touch.
    fn add(&self, touched: &mut BTreeMap<String, u64>, word: String) -> anyhow::Result<()> {
        let count = match touched.get(&word) {
            Some(n) => *n,
            None => match self.db.get_pinned(&word)? {
                None => 0,
                Some(bytes) => std::str::from_utf8(&bytes)?.parse()?,
            },
        };
        touched.insert(word, count + 1);
        Ok(())
    }

    /// Writes a batch's counts (with RocksDB's write-ahead log only when
    /// there is no changelog, as eddy does) and produces them, waiting for
    /// the acknowledgements.
    fn flush(&self, touched: BTreeMap<String, u64>) -> anyhow::Result<()> {
        let mut write = rocksdb::WriteBatch::default();
        let mut deliveries = Vec::with_capacity(touched.len() * 2);
        for (word, count) in &touched {
            let count = count.to_string();
            write.put(word, &count);
            if let Some(changelog) = self.changelog {
                let record = FutureRecord::<str, str>::to(changelog)
                    .partition(self.partition)
                    .key(word)
                    .payload(&count);
                deliveries.push(support::send(self.producer, record)?);
            }
            let record = FutureRecord::<str, str>::to(self.output)
                .key(word)
                .payload(&count);
            deliveries.push(support::send(self.producer, record)?);
        }
        let mut options = rocksdb::WriteOptions::default();
        options.disable_wal(self.changelog.is_some());
        self.db.write_opt(write, &options)?;
        acknowledged(deliveries)
    }
}

/// Waits for every delivery; the first failure.
fn acknowledged(deliveries: Vec<DeliveryFuture>) -> anyhow::Result<()> {
    for delivery in deliveries {
        futures::executor::block_on(delivery)
            .context("delivery canceled")?
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Where a consumer starts in its partition.
enum Start {
    Beginning,
    At(i64),
}

/// A consumer of `topic`'s `partition` from `start`.
fn assigned(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
    partition: i32,
    start: Start,
) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = kafka.consumer(group).create()?;
    let offset = match start {
        Start::At(offset) => offset,
        Start::Beginning => {
            consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))?
                .0
        }
    };
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Commits `next` as `topic`'s `partition`'s position, if a record came.
fn commit(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    next: Option<i64>,
) -> anyhow::Result<()> {
    if let Some(next) = next {
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(topic, partition, Offset::Offset(next))?;
        consumer.commit(&offsets, CommitMode::Async)?;
    }
    Ok(())
}

/// How many records a consumer that started at the partition's beginning
/// processed, reaching `next`.
fn records_between(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    next: Option<i64>,
) -> anyhow::Result<u64> {
    let Some(next) = next else { return Ok(0) };
    let (low, _) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    Ok(u64::try_from(next - low)?)
}

/// The lower-cased words of `line`, split as the `split-words` plugin does.
fn words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

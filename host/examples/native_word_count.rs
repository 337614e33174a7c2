//! The native baseline of word count for `just bench`: a plain Rust loop over
//! rdkafka and RocksDB doing what the `split-words` -> `count` pipeline does:
//! split each line into lower-cased words, add one to each word's count in
//! RocksDB (decimal text, as `count` stores it), and after each batch
//! produce the latest count of every word the batch touched, then commit
//! once the outputs are acknowledged. A thread per input partition, eddy's
//! client settings and batch (1024 records or 10 ms), one database shared
//! by the threads (one process needs no repartitioning: that is the part
//! of eddy's cost that buys scaling out over several daemons).
//!
//! Run: `cargo run --release -p eddy --example native_word_count -- BROKERS
//! INPUT OUTPUT GROUP RECORDS STATE_DIR`. It stops once it processed
//! RECORDS input records and prints `processed N wall_s W cpu_s C rss_mib R`.

mod support;

use anyhow::Context as _;
use eddy::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, input, output, group, records, state_dir] = args.as_slice() else {
        anyhow::bail!("usage: native_word_count BROKERS INPUT OUTPUT GROUP RECORDS STATE_DIR");
    };
    let want: u64 = records.parse().context("RECORDS must be a number")?;
    let db = rocksdb::DB::open(&eddy::state::PipelineDb::options(), state_dir)?;
    let kafka = KafkaSettings::new(brokers.as_str());
    let partitions = support::partition_count(&kafka, input)?;
    let producer: FutureProducer = kafka.producer().create()?;
    let (input, output, group) = (input.clone(), output.clone(), group.clone());
    support::run_partitions(partitions, want, move |partition, remaining| {
        let run = Partition {
            consumer: kafka.consumer(&group).create()?,
            producer: &producer,
            db: &db,
            input: &input,
            output: &output,
            partition,
        };
        run.run(remaining)
    })
}

/// One input partition's loop.
struct Partition<'a> {
    consumer: BaseConsumer,
    producer: &'a FutureProducer,
    db: &'a rocksdb::DB,
    input: &'a str,
    output: &'a str,
    partition: i32,
}

impl Partition<'_> {
    /// Processes the partition from its start until `remaining` (shared by
    /// every partition's thread) reaches zero; the records processed and
    /// when the first arrived.
    fn run(&self, remaining: &AtomicU64) -> anyhow::Result<(u64, Option<Instant>)> {
        let (input, partition) = (self.input, self.partition);
        let (low, _) = self
            .consumer
            .fetch_watermarks(input, partition, Duration::from_secs(10))?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(input, partition, Offset::Offset(low))?;
        self.consumer.assign(&assignment)?;
        let mut next = low;
        let mut started = None;
        while remaining.load(Ordering::Relaxed) > 0 {
            // One batch: counts of the words it touched, read from the
            // database on first touch.
            let mut touched: BTreeMap<String, u64> = BTreeMap::new();
            let records = support::poll_batch(&self.consumer, |message| {
                started.get_or_insert_with(Instant::now);
                next = message.offset() + 1;
                let Some(line) = message.payload().and_then(|v| std::str::from_utf8(v).ok()) else {
                    return Ok(());
                };
                for word in words(line) {
                    let count = match touched.get(&word) {
                        Some(n) => *n,
                        None => self.stored_count(&word)?,
                    };
                    touched.insert(word, count + 1);
                }
                Ok(())
            })? as u64;
            if records == 0 {
                continue;
            }
            let mut write = rocksdb::WriteBatch::default();
            let mut deliveries = Vec::with_capacity(touched.len());
            for (word, count) in &touched {
                let count = count.to_string();
                write.put(word, &count);
                let record = FutureRecord::<str, str>::to(self.output)
                    .key(word)
                    .payload(&count);
                deliveries.push(support::send(self.producer, record)?);
            }
            self.db.write(write)?;
            for delivery in deliveries {
                futures::executor::block_on(delivery)
                    .context("delivery canceled")?
                    .map_err(|(e, _)| e)?;
            }
            let _ = remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                Some(r.saturating_sub(records))
            });
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset(input, partition, Offset::Offset(next))?;
            self.consumer.commit(&offsets, CommitMode::Async)?;
        }
        Ok((u64::try_from(next - low)?, started))
    }

    fn stored_count(&self, word: &str) -> anyhow::Result<u64> {
        Ok(match self.db.get_pinned(word)? {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)?.parse()?,
        })
    }
}

/// The lower-cased words of `line`, split as the `split-words` plugin does.
fn words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

//! What the benchmark's native loops share: eddy's batch shape, sending
//! through a full producer queue, and the process's CPU time.

// Each example uses its part of it.
#![allow(dead_code)]

use eddy::kafka::{FetchQueue, Fetched, KafkaSettings};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

// The daemon's allocator, so the comparison is of data paths, not allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Most records in one batch, as eddy's default.
pub(crate) const MAX_BATCH: usize = 1024;
/// How long a batch waits for more records after its first, as eddy's default.
pub(crate) const LINGER: Duration = Duration::from_millis(10);

/// Polls one batch as eddy's tasks do: up to MAX_BATCH records, waiting up
/// to 100 ms for the first and at most LINGER after it, and taking records
/// already fetched without a timeout (so without reading the clock). Hands
/// each record to `each`; returns how many it handed.
pub(crate) fn poll_batch(
    consumer: &BaseConsumer,
    mut each: impl FnMut(BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut records = 0;
    let mut deadline: Option<Instant> = None;
    while records < MAX_BATCH {
        let polled = match deadline {
            None => consumer.poll(Duration::from_millis(100)),
            Some(d) => match consumer.poll(Duration::ZERO) {
                None => match d.saturating_duration_since(Instant::now()) {
                    Duration::ZERO => None,
                    left => consumer.poll(left),
                },
                ready => ready,
            },
        };
        let Some(message) = polled else {
            break;
        };
        deadline.get_or_insert_with(|| Instant::now() + LINGER);
        records += 1;
        each(message?)?;
    }
    Ok(records)
}

/// [`poll_batch`] on eddy's path, as its tasks take a batch: what is
/// fetched already in one call, else the first record within 100 ms, then
/// the rest within LINGER; how many it handed to `each`.
pub(crate) fn take_batch<C: ConsumerContext>(
    queue: &mut FetchQueue<C>,
    mut each: impl FnMut(Fetched<'_>),
) -> usize {
    let mut taken = queue.take(MAX_BATCH, Duration::ZERO, &mut each);
    if taken == 0 {
        taken = queue.take(1, Duration::from_millis(100), &mut each);
    }
    if taken > 0 && taken < MAX_BATCH {
        taken += queue.take(MAX_BATCH - taken, LINGER, &mut each);
    }
    taken
}

/// Sends `record`, waiting while the producer's queue is full.
pub(crate) fn send<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> anyhow::Result<DeliveryFuture> {
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
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// This process's CPU time, user + sys, of every thread it ran, the ones
/// that ended included (the partition threads have by the time it is
/// read), and its peak resident memory in MiB.
pub(crate) fn usage() -> (f64, f64) {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    (cpu, usage.ru_maxrss as f64 / 1024.0)
}

/// The line the benchmark script reads: `processed N wall_s W cpu_s C rss_mib R`.
pub(crate) fn report(processed: u64, wall_seconds: f64) {
    let (cpu, rss) = usage();
    println!("processed {processed} wall_s {wall_seconds:.3} cpu_s {cpu:.3} rss_mib {rss:.0}");
}

/// Runs `run(partition, remaining)` on a thread per partition, as eddy runs
/// a task per partition, until `want` records went through (`remaining`
/// counts down, shared by the threads; each returns the records it
/// processed and when its first arrived); checks the count and prints the
/// line [`report`] prints, with the wall time from the first record.
pub(crate) fn run_partitions<F>(partitions: usize, want: u64, run: F) -> anyhow::Result<()>
where
    F: Fn(i32, &AtomicU64) -> anyhow::Result<(u64, Option<Instant>)> + Send + Sync + 'static,
{
    let remaining = Arc::new(AtomicU64::new(want));
    let run = Arc::new(run);
    let threads: Vec<_> = (0..partitions)
        .map(|p| {
            let (run, remaining) = (run.clone(), remaining.clone());
            std::thread::spawn(move || run(i32::try_from(p)?, &remaining))
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
    report(processed, first.map_or(0.0, |s| s.elapsed().as_secs_f64()));
    Ok(())
}

/// How many partitions `topic` has.
pub(crate) fn partition_count(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<usize> {
    let metadata: BaseConsumer = kafka.metadata_client().create()?;
    Ok(metadata
        .fetch_metadata(Some(topic), Duration::from_secs(10))?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()))
}

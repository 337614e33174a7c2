//! A task's input: its partition's queue of fetched records, polled a batch
//! at a time into an [`InputBatch`] whose buffers are reused from batch to
//! batch, and the seeks, pauses and consume errors around it.

use super::fault::Fault;
use super::settings::StartFrom;
use crate::kafka::{FetchQueue, Fetched, murmur2_partition};
use crate::runtime::InputBatch;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

/// How long a seek may take before the task fails and retries.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// One input partition, as its task reads it.
pub(super) struct Input<C: ConsumerContext + 'static> {
    pub(super) topic: String,
    pub(super) partition: i32,
    queue: FetchQueue<C>,
    consumer: Arc<BaseConsumer<C>>,
    /// Where the partition starts when the group has no offset for it.
    start: Offset,
    /// The batch in hand, packed as it is polled.
    pub(super) batch: InputBatch,
    /// For a pipeline's own input: whether keys arrive where murmur2 puts
    /// them.
    keys: Option<KeyPlacement>,
    /// Names the task in logs.
    label: Arc<str>,
}

/// Counts keyed records that arrive in another partition than the one
/// murmur2 gives their key. Java clients and Kafka Streams partition by
/// murmur2; librdkafka-based producers (kcat, confluent-kafka) use CRC32 by
/// default. eddy keeps a key's state where its records arrive, so nothing
/// is lost, but the operator should know: a key's records split across
/// partitions (two producers, two partitioners) would count in two places.
struct KeyPlacement {
    /// The input topic's partition count.
    partitions: i32,
    /// Off-partition keys not yet added to the task's status.
    unreported: u64,
    /// Whether the first one was logged (once per task).
    logged: bool,
}

/// How long to wait for a batch and how large it may grow.
pub(super) struct Polling {
    /// Most records in the batch.
    pub(super) max: usize,
    /// How long to wait for the first record.
    pub(super) first_wait: Duration,
    /// How long to wait for more once the first arrived.
    pub(super) linger: Duration,
}

impl<C: ConsumerContext + 'static> Input<C> {
    /// The input of `topic`/`partition`, read from `queue`. A later step
    /// reads its repartition topic from its start when the group has no
    /// offset: it exists only for this pipeline.
    ///
    /// `topic_partitions`, the input topic's partition count, is checked
    /// against the keys of a first step's records (a later step reads what
    /// eddy partitioned itself).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        topic: String,
        partition: i32,
        topic_partitions: i32,
        queue: FetchQueue<C>,
        consumer: Arc<BaseConsumer<C>>,
        start_from: StartFrom,
        later_step: bool,
        label: Arc<str>,
    ) -> Self {
        let start = match start_from {
            _ if later_step => Offset::Beginning,
            StartFrom::Earliest => Offset::Beginning,
            StartFrom::Latest => Offset::End,
        };
        let keys = (!later_step && topic_partitions > 1).then_some(KeyPlacement {
            partitions: topic_partitions,
            unreported: 0,
            logged: false,
        });
        Self {
            batch: InputBatch::new(&topic, partition),
            topic,
            partition,
            queue,
            consumer,
            start,
            keys,
            label,
        }
    }

    /// The queue, for the partition's next task; records popped and not
    /// handed out are dropped with this task.
    pub(super) fn into_queue(mut self) -> FetchQueue<C> {
        self.queue.drop_popped();
        self.queue
    }

    fn partition_list(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.partition);
        tpl
    }

    /// Stops fetching what a failed task will not process.
    pub(super) fn pause(&self) {
        if let Err(e) = self.consumer.pause(&self.partition_list()) {
            tracing::warn!(task = &*self.label, error = %e, "could not pause the partition");
        }
    }

    /// Fetches again after [`pause`](Self::pause).
    pub(super) fn resume(&self) -> Result<(), Fault> {
        self.consumer
            .resume(&self.partition_list())
            .map_err(|e| Fault::Consume(format!("could not resume fetching the partition: {e}")))
    }

    /// Moves the input to `offset`. A seek fails when the consumer has
    /// already found the offset outside the log (Apache Kafka reports that
    /// before the task's first seek, as an erroneous partition state), so a
    /// failure is explained by the log's range when that is the cause.
    pub(super) fn seek(&mut self, offset: i64) -> Result<(), Fault> {
        self.queue
            .seek(Offset::Offset(offset), SEEK_TIMEOUT)
            .map_err(|e| match self.log_range() {
                Some((low, high)) if offset < low || offset > high => {
                    outside_the_log(&self.topic, self.partition, offset, Some((low, high)), &e)
                }
                _ => Fault::Consume(format!("could not resume input at offset {offset}: {e}")),
            })
    }

    /// The offsets the partition's log holds now, if the broker says.
    fn log_range(&self) -> Option<(i64, i64)> {
        self.consumer
            .fetch_watermarks(&self.topic, self.partition, SEEK_TIMEOUT)
            .ok()
    }

    /// Fills the batch with up to `polling.max` records: waits up to
    /// `polling.first_wait` for the first, then at most the linger time for
    /// the rest. Records already fetched are taken in one call, and the
    /// clock is read only when the queue runs dry (a clock read per record
    /// was 8 % of a task's CPU).
    pub(super) fn poll(&mut self, polling: &Polling) -> Result<(), Fault> {
        self.batch.clear();
        let max = polling.max;
        let batch = &mut self.batch;
        let (partition, keys, label) = (self.partition, &mut self.keys, &*self.label);
        let mut push = |record: Fetched<'_>| {
            if let (Some(keys), Some(key)) = (keys.as_mut(), record.key) {
                keys.check(key, partition, label);
            }
            push_record(batch, &record);
        };
        let mut taken = self.queue.take(max, Duration::ZERO, &mut push);
        if taken == 0 {
            taken = self.queue.take(1, polling.first_wait, &mut push);
        }
        if taken > 0 && taken < max {
            taken += self.queue.take(max - taken, polling.linger, &mut push);
        }
        if taken == 0
            && let Some(error) = self.queue.next_error()
        {
            self.consume_error(error)?;
        }
        Ok(())
    }

    /// Keyed records that arrived off their murmur2 partition since the
    /// last call.
    pub(super) fn take_off_partition_keys(&mut self) -> u64 {
        self.keys
            .as_mut()
            .map_or(0, |k| std::mem::take(&mut k.unreported))
    }

    /// Decides what a consume error means. A position that fell out of the
    /// log is fatal for the task: eddy never skips records silently.
    fn consume_error(&mut self, error: KafkaError) -> Result<(), Fault> {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::AutoOffsetReset) {
            tracing::warn!(task = &*self.label, error = %error, "consume error");
            return Ok(());
        }
        let committed = crate::kafka::group_offsets_with(
            &*self.consumer,
            &[(self.topic.clone(), self.partition)],
        )
        .ok()
        .and_then(|o| o.first().copied().flatten());
        let Some(offset) = committed else {
            // A partition no offset was ever committed for: start where the
            // pipeline's spec says new pipelines start.
            tracing::info!(
                task = &*self.label,
                offset = ?self.start,
                "no committed offset; starting from the pipeline's start position"
            );
            return self
                .queue
                .seek(self.start, SEEK_TIMEOUT)
                .map_err(|e| Fault::Consume(format!("could not seek: {e}")));
        };
        let range = self.log_range();
        Err(outside_the_log(
            &self.topic,
            self.partition,
            offset,
            range,
            &error,
        ))
    }
}

impl KeyPlacement {
    fn check(&mut self, key: &[u8], partition: i32, label: &str) {
        let expected = murmur2_partition(key, self.partitions);
        if expected == partition {
            return;
        }
        self.unreported += 1;
        if !self.logged {
            self.logged = true;
            tracing::warn!(
                task = label,
                key = %String::from_utf8_lossy(key),
                murmur2_partition = expected,
                "a keyed input arrived in partition {partition}, not in the partition \
                 {expected} that murmur2 (Java clients, Kafka Streams) gives its key: the \
                 producer partitions differently (librdkafka's default is CRC32). Its state \
                 stays in this partition and queries find it; to agree with other Kafka \
                 clients, produce with murmur2 (librdkafka: partitioner=murmur2_random). \
                 Counted in the partition status as off-partition keys; logged once per task"
            );
        }
    }
}

/// The fault for a position the log (holding `range`, if known) no longer
/// or not yet holds.
fn outside_the_log(
    topic: &str,
    partition: i32,
    offset: i64,
    range: Option<(i64, i64)>,
    cause: &KafkaError,
) -> Fault {
    let range = range.map_or_else(
        || "unknown".to_owned(),
        |(low, high)| format!("{low}..{high}"),
    );
    Fault::Consume(format!(
        "committed offset {offset} of {topic}/{partition} is outside the log, which now holds \
         offsets {range} ({cause}); records before the log start were deleted \
         by retention before eddy processed them. eddy never skips records \
         silently: delete and re-create the pipeline to start over"
    ))
}

/// Appends `record` to `batch`: its fields are copied once, into the
/// batch's buffers.
fn push_record(batch: &mut InputBatch, record: &Fetched<'_>) {
    // Most records have no headers, and then this allocates nothing.
    let headers: Vec<_> = record.headers().collect();
    batch.push(
        record.key,
        record.value,
        headers.iter().map(|(name, value)| (name.as_ref(), *value)),
        record.timestamp,
        record.offset,
    );
}

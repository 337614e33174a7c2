//! A task's input: its partition's queue of fetched records, polled a batch
//! at a time into an [`InputBatch`] whose buffers are reused from batch to
//! batch, and the seeks, pauses and consume errors around it.

use super::fault::Fault;
use super::settings::StartFrom;
use crate::kafka::{FetchQueue, Fetched};
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
    /// Names the task in logs.
    label: Arc<str>,
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
    pub(super) fn new(
        topic: String,
        partition: i32,
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
        Self {
            batch: InputBatch::new(&topic, partition),
            topic,
            partition,
            queue,
            consumer,
            start,
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

    /// Moves the input to `offset`.
    pub(super) fn seek(&mut self, offset: i64) -> Result<(), Fault> {
        self.queue
            .seek(Offset::Offset(offset), SEEK_TIMEOUT)
            .map_err(|e| Fault::Consume(format!("could not resume input at offset {offset}: {e}")))
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
        let mut push = |record: Fetched<'_>| push_record(batch, &record);
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
        let range = self
            .consumer
            .fetch_watermarks(&self.topic, self.partition, SEEK_TIMEOUT)
            .map_or_else(
                |_| "unknown".to_owned(),
                |(low, high)| format!("{low}..{high}"),
            );
        Err(Fault::Consume(format!(
            "committed offset {offset} of {}/{} is outside the log, which now holds \
             offsets {range} ({error}); records before the log start were deleted \
             by retention before eddy processed them. eddy never skips records \
             silently: delete and re-create the pipeline to start over",
            self.topic, self.partition
        )))
    }
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

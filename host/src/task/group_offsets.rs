//! The input offsets a task commits to its consumer group. They are for
//! lag tools only: a task's progress is its checkpoint (see `commit`), so
//! these commits never wait for Kafka on the data path, and one that fails
//! costs nothing but a lag figure until the next.

use super::TaskStatus;
use crate::kafka::Unanswered;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

/// Longest a stopping task waits for its last group-offset commit: tens of
/// milliseconds when Kafka is up.
const STOP_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One partition's offset in its consumer group, as its task commits it.
pub(super) struct GroupOffsets<C: ConsumerContext + 'static> {
    consumer: Arc<BaseConsumer<C>>,
    topic: String,
    partition: i32,
    status: Arc<TaskStatus>,
    label: Arc<str>,
    /// The next offset to commit to the group, once its batch is delivered.
    uncommitted: Option<i64>,
    /// The furthest offset this task committed to the group while idle
    /// (the checkpoint, or past it over commit markers).
    idle_committed: Option<i64>,
}

impl<C: ConsumerContext + 'static> GroupOffsets<C> {
    pub(super) fn new(
        consumer: Arc<BaseConsumer<C>>,
        topic: String,
        partition: i32,
        status: Arc<TaskStatus>,
        label: Arc<str>,
    ) -> Self {
        Self {
            consumer,
            topic,
            partition,
            status,
            label,
            uncommitted: None,
            idle_committed: None,
        }
    }

    /// The state now reaches `offset` (a commit delivered): tells the group,
    /// without waiting.
    pub(super) fn reached(&mut self, offset: i64) {
        self.status.set_committed(offset);
        self.uncommitted = Some(offset);
        self.commit_async();
    }

    /// With nothing in flight, brings the group's offset up to `checkpoint`,
    /// or past it over commit markers. A transactional input ends in a
    /// commit marker, which is never a record: the checkpoint stops before
    /// it and lag tools would show 1 forever. And a commit refused in a
    /// rebalance leaves the group behind a checkpoint already reached: a
    /// task restored there with no new input would never commit again, so
    /// each task makes this commit once it is idle. Recovery reads the
    /// checkpoint, not this. (Asynchronous: a synchronous commit could hold
    /// the task for a request timeout while the brokers are away.)
    pub(super) fn commit_idle(&mut self, checkpoint: Option<i64>) {
        let Some(checkpoint) = checkpoint else {
            return;
        };
        let position = self.consumer.position().ok().and_then(|tpl| {
            match tpl.find_partition(&self.topic, self.partition)?.offset() {
                Offset::Offset(p) => Some(p),
                _ => None,
            }
        });
        let target = position.filter(|p| *p > checkpoint).unwrap_or(checkpoint);
        if self.idle_committed.is_some_and(|o| o >= target) {
            return;
        }
        self.idle_committed = Some(target);
        self.reached(target);
    }

    /// The group offset a stopping task leaves for lag tools (progress is
    /// read from the checkpoint, never from the group), committed
    /// synchronously on a thread of its own: the task stops after at most
    /// [`STOP_COMMIT_TIMEOUT`], as a group coordinator that cannot be
    /// reached (Kafka away at shutdown) would hold the commit until the
    /// consumer's session times out.
    pub(super) fn commit_on_stop(&mut self) {
        let Some((offset, tpl)) = self.uncommitted_offsets() else {
            return;
        };
        let consumer = self.consumer.clone();
        let commit = move || consumer.commit(&tpl, CommitMode::Sync);
        let label = &*self.label;
        match crate::kafka::call_within("eddy-stop-commit", STOP_COMMIT_TIMEOUT, commit) {
            Ok(Ok(())) => self.uncommitted = None,
            Ok(Err(e)) => {
                tracing::warn!(task = label, error = %e, offset, "offset commit failed; lag tools show the last commit until the partition's next owner commits")
            }
            Err(Unanswered::Spawn(e)) => {
                tracing::warn!(task = label, error = %e, "could not start a thread to commit on stop");
            }
            Err(Unanswered::TimedOut) => tracing::warn!(
                task = label,
                offset,
                "the offset commit on stop did not finish within {STOP_COMMIT_TIMEOUT:?} (is Kafka reachable?); lag tools show the last commit until the partition's next owner commits"
            ),
        }
    }

    /// The offset to commit to the group, if any, as the list to commit.
    fn uncommitted_offsets(&self) -> Option<(i64, TopicPartitionList)> {
        let offset = self.uncommitted?;
        let mut tpl = TopicPartitionList::new();
        if let Err(e) =
            tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset))
        {
            tracing::error!(task = &*self.label, error = %e, "bad offset");
            return None;
        }
        Some((offset, tpl))
    }

    /// Commits the offset the last delivered batch reached, if any, to the
    /// group, without waiting.
    fn commit_async(&mut self) {
        let Some((offset, tpl)) = self.uncommitted_offsets() else {
            return;
        };
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(task = &*self.label, error = %e, offset, "offset commit failed; lag tools show the last commit until the next");
        }
    }
}

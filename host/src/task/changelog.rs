//! A task's changelog: every batch's state mutations (the last value per
//! key) followed by a checkpoint record, in the task's partition of the
//! step's compacted changelog topic; and the restore that replays it.
//!
//! A batch's mutations are applied only when the checkpoint that closes the
//! batch follows them, so a batch cut short by a crash is never half-applied.
//! A restore that finds such a cut-off tail repairs it before the task goes
//! on: it logs each cut-off key's committed value (or a tombstone) and a
//! checkpoint, so every later replay, of this log compacted or not, lands on
//! exactly the committed state.

use super::TaskStatus;
use super::producer::TaskProducer;
use crate::kafka::{Acks, KafkaSettings, Outgoing};
use crate::state::{CHECKPOINT_KEY, Checkpoint, POSITION_KEY, StateError, TaskState, WriteBatch};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One task's partition of a changelog topic.
#[derive(Clone, Debug)]
pub struct Changelog {
    /// The topic.
    pub topic: String,
    /// The task's partition of it.
    pub partition: i32,
}

/// Why a restore did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The task was told to stop.
    #[error("stopped during restore")]
    Stopped,
    /// Kafka failed.
    #[error("restoring from changelog {topic}/{partition}: {error}")]
    Kafka {
        /// The changelog topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// What went wrong.
        error: String,
    },
    /// The local store failed.
    #[error("restoring: {0}")]
    State(#[from] StateError),
}

/// What a restore found.
#[derive(Debug, Default)]
pub struct Restored {
    /// Where the state reaches; `None` for a task that never committed.
    pub checkpoint: Option<Checkpoint>,
    /// Changelog records replayed.
    pub replayed: u64,
    /// Keys of a cut-off batch written back to their committed values.
    pub repaired: usize,
}

/// Applies changelog records to a task's store as they are read: a
/// batch's entries wait for the checkpoint that closes it, so a batch cut
/// short by a crash is never half-applied. Restores and standby copies
/// (see `standby`) apply the changelog this way.
#[derive(Default)]
pub(super) struct Replay {
    pending: WriteBatch,
}

impl Replay {
    /// Takes the record at changelog offset `next - 1`. A checkpoint
    /// applies the batch it closes, with the changelog position `next`,
    /// and is returned.
    pub(super) fn record(
        &mut self,
        state: &mut TaskState,
        key: &[u8],
        value: Option<Vec<u8>>,
        next: i64,
    ) -> Result<Option<Option<Checkpoint>>, StateError> {
        if key != CHECKPOINT_KEY {
            self.pending.insert(key.to_vec(), value);
            return Ok(None);
        }
        let checkpoint = value.as_deref().and_then(Checkpoint::decode);
        self.pending.insert(CHECKPOINT_KEY.to_vec(), value);
        self.pending
            .insert(POSITION_KEY.to_vec(), Some(next.to_be_bytes().to_vec()));
        state.apply(std::mem::take(&mut self.pending))?;
        Ok(Some(checkpoint))
    }

    /// The entries of a batch whose checkpoint never came.
    pub(super) fn into_cut_off(self) -> WriteBatch {
        self.pending
    }
}

impl Changelog {
    /// Sends a batch's entries and then its checkpoint, counted in `acks`;
    /// the caller waits for them. The checkpoint goes last, so once all are
    /// acknowledged the highest offset in `acks` is the checkpoint's.
    ///
    /// Every record carries the checkpoint's stream time as its timestamp,
    /// as Kafka Streams stamps a changelog write with the record's: left to
    /// librdkafka it would be this daemon's wall clock, and a broker refuses
    /// a batch stamped more than `log.message.timestamp.after.max.ms` (an
    /// hour by default) ahead of its own clock, so a daemon whose clock ran
    /// ahead could write no state at all.
    pub(super) fn send_batch(
        &self,
        producer: &TaskProducer,
        batch: &WriteBatch,
        checkpoint: &Checkpoint,
        acks: &Acks,
    ) -> Result<(), KafkaError> {
        let topic = &producer.topics().changelog;
        let record = |key, value| Outgoing {
            partition: Some(self.partition),
            key: Some(key),
            value,
            timestamp: checkpoint.stream_time,
            ..Outgoing::to(topic)
        };
        for (key, value) in batch {
            producer.send(record(key, value.as_deref()), acks)?;
        }
        let encoded = checkpoint.encode();
        producer.send(record(CHECKPOINT_KEY, Some(&encoded)), acks)
    }

    fn kafka_error(&self, error: impl std::fmt::Display) -> RestoreError {
        RestoreError::Kafka {
            topic: self.topic.clone(),
            partition: self.partition,
            error: error.to_string(),
        }
    }

    /// Brings `state` up to the end of the changelog: from the local
    /// position if the store has one, from the start of the log if not.
    pub(super) fn restore(
        &self,
        kafka: &KafkaSettings,
        producer: &TaskProducer,
        state: &mut TaskState,
        status: &TaskStatus,
        stop: &AtomicBool,
    ) -> Result<Restored, RestoreError> {
        let started = Instant::now();
        let position = state
            .get_raw(POSITION_KEY)?
            .and_then(|v| v.try_into().ok().map(i64::from_be_bytes));
        let mut checkpoint = state
            .get_raw(CHECKPOINT_KEY)?
            .and_then(|v| Checkpoint::decode(&v));
        let consumer: BaseConsumer = kafka
            .restore_consumer()
            .create()
            .map_err(|e| self.kafka_error(e))?;
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, self.partition, Duration::from_secs(30))
            .map_err(|e| self.kafka_error(e))?;
        let mut from = position.unwrap_or(low);
        if from < low || from > high {
            // The log no longer holds what the local store was built from
            // (the changelog was deleted and re-created, or truncated).
            tracing::warn!(
                changelog = %self.topic, partition = self.partition, local = from, low, high,
                "local state does not match the changelog; rebuilding it from the changelog"
            );
            state.clear()?;
            checkpoint = None;
            from = low;
        }
        status.restore_started(from, high);
        let mut restored = Restored::default();
        let mut replay = Replay::default();
        if from < high {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(from))
                .map_err(|e| self.kafka_error(e))?;
            consumer.assign(&tpl).map_err(|e| self.kafka_error(e))?;
            let mut next = from;
            while next < high {
                if stop.load(Ordering::Relaxed) {
                    return Err(RestoreError::Stopped);
                }
                match consumer.poll(Duration::from_millis(200)) {
                    None => {}
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    Some(Err(e)) => return Err(self.kafka_error(e)),
                    Some(Ok(message)) => {
                        next = message.offset() + 1;
                        restored.replayed += 1;
                        let Some(key) = message.key() else { continue };
                        let value = message.payload().map(<[u8]>::to_vec);
                        if let Some(applied) = replay.record(state, key, value, next)? {
                            checkpoint = applied;
                        }
                        status.restore_progress(next, restored.replayed);
                    }
                }
            }
        }
        let pending = replay.into_cut_off();
        if !pending.is_empty() {
            restored.repaired = pending.len();
            self.repair(producer, state, pending, checkpoint.unwrap_or_default())?;
        }
        restored.checkpoint = checkpoint;
        status.restore_finished(restored.replayed, started.elapsed());
        Ok(restored)
    }

    /// Logs the committed value of every key a cut-off batch touched,
    /// then a checkpoint, and records the new position.
    fn repair(
        &self,
        producer: &TaskProducer,
        state: &mut TaskState,
        cut_off: WriteBatch,
        checkpoint: Checkpoint,
    ) -> Result<(), RestoreError> {
        tracing::info!(
            changelog = %self.topic, partition = self.partition, keys = cut_off.len(),
            "the changelog ends in a batch cut off by a crash; logging its keys' committed values"
        );
        let mut committed = WriteBatch::new();
        for key in cut_off.into_keys() {
            let value = state.get_raw(&key)?;
            committed.insert(key, value);
        }
        producer.begin().map_err(|e| self.kafka_error(e))?;
        let acks = Acks::default();
        let sent = self
            .send_batch(producer, &committed, &checkpoint, &acks)
            .and_then(|()| acks.wait())
            .map_err(|e| self.kafka_error(e))
            .and_then(|offset| {
                producer.commit().map_err(|e| self.kafka_error(e))?;
                Ok(offset)
            });
        let offset = match sent {
            Ok(offset) => offset,
            Err(e) => {
                producer.abort();
                return Err(e);
            }
        };
        let mut local = WriteBatch::new();
        local.insert(CHECKPOINT_KEY.to_vec(), Some(checkpoint.encode()));
        local.insert(
            POSITION_KEY.to_vec(),
            Some((offset + 1).to_be_bytes().to_vec()),
        );
        state.apply(local)?;
        Ok(())
    }
}

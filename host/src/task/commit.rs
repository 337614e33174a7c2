//! The commit protocol. Batches are produced into what is open (a Kafka
//! transaction, for a transactional task); once per commit interval, and
//! when the input pauses, the task commits: it logs the state mutations
//! since the last commit (the last value per key) and a checkpoint to the
//! changelog, waits until Kafka acknowledges everything (and commits the
//! transaction), then writes the mutations and the checkpoint to the local
//! store in one batch. A crash anywhere before that replays what was not
//! committed: outputs may repeat under at-least-once and never under
//! exactly-once, while state stays exact under both.

use super::changelog::Changelog;
use super::fault::Fault;
use super::producer::{TaskProducer, TxnError};
use crate::kafka::{Acks, Outgoing, OutgoingHeaders, Topic};
use crate::runtime::{OutputView, Outputs};
use crate::state::{CHECKPOINT_KEY, Checkpoint, POSITION_KEY, TaskState, WriteBatch};
use rdkafka::error::KafkaError;
use std::time::{Duration, Instant};

/// How long a commit waits for Kafka's acknowledgements before it asks
/// why (see `Commits::commit`): well past a healthy cluster's latency,
/// well within the producer's message timeout.
const STALL_AFTER: Duration = Duration::from_secs(10);

/// A task's side of the commit protocol: its producer, its changelog, how
/// far its committed state reaches, and what is produced but not committed.
pub(super) struct Commits {
    changelog: Changelog,
    /// Set up when the task starts.
    producer: Option<TaskProducer>,
    /// How far the committed state reaches.
    checkpoint: Checkpoint,
    /// What was produced since the last commit.
    open: Option<OpenCommit>,
    /// The first offset processed since the last commit: where a restart
    /// resumes when no checkpoint says where.
    in_flight: Option<i64>,
}

/// The work of one commit interval, produced but not yet committed.
struct OpenCommit {
    /// When its first batch was produced.
    opened: Instant,
    /// Its outputs' acknowledgements, awaited when it commits.
    acks: Acks,
    /// Where the state will reach once it commits.
    checkpoint: Checkpoint,
}

/// What one batch hands the commit protocol.
pub(super) struct Produced<'a> {
    /// The guest's outputs.
    pub(super) outputs: &'a Outputs,
    /// Records to send to the dead-letter topic.
    pub(super) dead_letters: &'a Outputs,
    /// Where the input resumes after the batch (`None` for a batch of
    /// wall-clock timers, which reads no input).
    pub(super) next_offset: Option<i64>,
    /// The stream time after the batch.
    pub(super) stream_time: Option<i64>,
    /// The timestamp of outputs that set none.
    pub(super) default_timestamp: i64,
}

impl Commits {
    pub(super) fn new(changelog: Changelog) -> Self {
        Self {
            changelog,
            producer: None,
            checkpoint: Checkpoint::default(),
            open: None,
            in_flight: None,
        }
    }

    /// The changelog the task's state is logged to.
    pub(super) fn changelog(&self) -> &Changelog {
        &self.changelog
    }

    /// Uses `producer` from now on (a task start makes one).
    pub(super) fn set_producer(&mut self, producer: TaskProducer) -> &TaskProducer {
        self.producer.insert(producer)
    }

    /// How far the committed state reaches.
    pub(super) fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// The state was restored to `checkpoint`.
    pub(super) fn restored(&mut self, checkpoint: Checkpoint) {
        self.checkpoint = checkpoint;
    }

    /// Whether anything is produced and not committed.
    pub(super) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// How long until what is open is due to commit: `None` if nothing is.
    pub(super) fn due_in(&self, interval: Duration) -> Option<Duration> {
        let open = self.open.as_ref()?;
        Some((open.opened + interval).saturating_duration_since(Instant::now()))
    }

    /// Notes the first offset of a batch about to be processed: with no
    /// checkpoint yet, a restart after a failure resumes there.
    pub(super) fn processing_from(&mut self, offset: Option<i64>) {
        if self.in_flight.is_none() {
            self.in_flight = offset;
        }
    }

    /// Where a restarted task resumes its input when no checkpoint says
    /// where (a task that failed before its first commit).
    pub(super) fn rewind_to(&self) -> Option<i64> {
        self.in_flight.filter(|_| self.checkpoint.offset.is_none())
    }

    fn producer(&self) -> Result<&TaskProducer, Fault> {
        self.producer
            .as_ref()
            .ok_or_else(|| Fault::internal("the task has no producer"))
    }

    /// Produces a batch's outputs and dead letters into what is open
    /// (opening a transaction if nothing is); whether the commit interval
    /// is up.
    pub(super) fn produce(
        &mut self,
        batch: Produced<'_>,
        interval: Duration,
    ) -> Result<bool, Fault> {
        let open = self.open.take();
        let producer = self.producer()?;
        let mut open = match open {
            Some(open) => open,
            None => {
                producer.begin().map_err(Fault::Txn)?;
                OpenCommit {
                    opened: Instant::now(),
                    acks: Acks::default(),
                    checkpoint: self.checkpoint,
                }
            }
        };
        if let Err(fault) = send_outputs(producer, &batch, &open.acks) {
            producer.abort();
            return Err(fault);
        }
        if batch.next_offset.is_some() {
            open.checkpoint.offset = batch.next_offset;
        }
        open.checkpoint.stream_time = batch.stream_time;
        let due = open.opened.elapsed() >= interval;
        self.open = Some(open);
        Ok(due)
    }

    /// Commits what is open: logs `state`'s pending mutations and the
    /// checkpoint to the changelog, waits until everything is acknowledged,
    /// commits the transaction, then writes the mutations and the checkpoint
    /// to the local store in one write. The input offset the state now
    /// reaches, if it moved. `on_stall` is called once if Kafka has not
    /// acknowledged everything after [`STALL_AFTER`].
    pub(super) fn commit(
        &mut self,
        state: &mut TaskState,
        on_stall: impl FnOnce(),
    ) -> Result<Option<i64>, Fault> {
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        let producer = self.producer()?;
        let mut batch = state.take_pending();
        let delivered = self.deliver(producer, &open.acks, &batch, &open.checkpoint, on_stall);
        let position = match delivered {
            Ok(position) => position,
            Err(fault) => {
                producer.abort();
                return Err(fault);
            }
        };
        batch.insert(CHECKPOINT_KEY.to_vec(), Some(open.checkpoint.encode()));
        batch.insert(POSITION_KEY.to_vec(), Some(position.to_be_bytes().to_vec()));
        state.apply(batch)?;
        let moved = open.checkpoint.offset != self.checkpoint.offset;
        self.checkpoint = open.checkpoint;
        self.in_flight = None;
        Ok(open.checkpoint.offset.filter(|_| moved))
    }

    /// Aborts what is open, after a failure: nothing of it is committed,
    /// and its state writes are dropped with the guest instance.
    pub(super) fn abort(&mut self) {
        if self.open.take().is_some()
            && let Some(producer) = &self.producer
        {
            producer.abort();
        }
    }

    /// Sends the changelog records and the checkpoint of what is open,
    /// waits until they and the outputs counted in `outputs` are
    /// acknowledged and (for a transactional task) commits; the changelog
    /// position just past the checkpoint.
    fn deliver(
        &self,
        producer: &TaskProducer,
        outputs: &Acks,
        batch: &WriteBatch,
        checkpoint: &Checkpoint,
        on_stall: impl FnOnce(),
    ) -> Result<i64, Fault> {
        let logged = Acks::default();
        self.changelog
            .send_batch(producer, batch, checkpoint, &logged)
            .map_err(|e| produce_fault(producer, e, Fault::Changelog))?;
        let offsets =
            Acks::wait_all(&[outputs, &logged], STALL_AFTER, on_stall).map_err(|(index, e)| {
                if !producer.is_transactional() {
                    // Nothing aborts these records: let them all land (or
                    // fail) before the task restarts, so none of this batch
                    // arrives in the changelog after the next one's.
                    let _ = outputs.wait();
                    let _ = logged.wait();
                }
                let fault: fn(KafkaError) -> Fault = if index == 0 {
                    Fault::Produce
                } else {
                    Fault::Changelog
                };
                produce_fault(producer, e, fault)
            })?;
        let checkpoint_offset = offsets.get(1).copied().unwrap_or(-1);
        producer.commit().map_err(Fault::Txn)?;
        Ok(checkpoint_offset + 1)
    }
}

/// Sends a batch's outputs and dead letters, counted in `acks`; the commit
/// waits for them. A full producer queue blocks here: that is the
/// backpressure.
fn send_outputs(producer: &TaskProducer, batch: &Produced<'_>, acks: &Acks) -> Result<(), Fault> {
    let topics = producer.topics();
    let send_to = |topic, record: OutputView<'_>| {
        producer
            .send(outgoing(topic, record, batch.default_timestamp), acks)
            .map_err(|e| produce_fault(producer, e, Fault::Produce))
    };
    for output in batch.outputs.iter() {
        let topic = match output.output {
            None => &topics.output,
            Some(name) => topics
                .named(name)
                .ok_or_else(|| Fault::UnknownOutput(name.to_owned()))?,
        };
        send_to(topic, output)?;
    }
    if !batch.dead_letters.is_empty() {
        let topic = topics
            .dead_letter()
            .ok_or_else(|| Fault::internal("dead letters without a dead-letter topic"))?;
        for record in batch.dead_letters.iter() {
            send_to(topic, record)?;
        }
    }
    Ok(())
}

/// The fault for a producing error: a fenced producer is told apart from
/// other failures (see `producer`).
fn produce_fault(
    producer: &TaskProducer,
    error: KafkaError,
    other: fn(KafkaError) -> Fault,
) -> Fault {
    match producer.classify(error) {
        fenced @ TxnError::Fenced(_) => Fault::Txn(fenced),
        TxnError::Failed(e) | TxnError::NoCoordinator(e) => other(e),
    }
}

/// The Kafka record for `output`, to `topic`.
fn outgoing<'a>(topic: &'a Topic, output: OutputView<'a>, default_timestamp: i64) -> Outgoing<'a> {
    Outgoing {
        key: output.key,
        value: output.value,
        timestamp: Some(output.timestamp.unwrap_or(default_timestamp)),
        headers: OutgoingHeaders::new(output.headers.iter()),
        ..Outgoing::to(topic)
    }
}

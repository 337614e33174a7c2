//! A task: one input partition of one pipeline, on its own thread.
//!
//! A task first restores its state (local store plus changelog tail, see
//! [`changelog`]) and resumes its input from the checkpoint the state
//! reaches. Then the loop is the unit of everything: poll up to N records or
//! T ms from the partition's queue, make one guest call, produce the
//! outputs. Once per commit interval (100 ms by default), and when its
//! input pauses, the task commits: it logs the state mutations since the
//! last commit (the last value per key) and a checkpoint to the changelog,
//! waits until Kafka acknowledges everything (and, for a transactional
//! task, commits the transaction), then writes the mutations and the
//! checkpoint to the local store in one batch and commits the input offset
//! to the group for lag tools. A crash anywhere before that replays what
//! was not committed: outputs may repeat under at-least-once and never
//! under exactly-once, while state stays exact under both.
//!
//! The thread blocks only itself: a slow guest or a full producer queue
//! stalls this partition (backpressure through librdkafka's bounded fetch
//! queue), never the poll loop, the control plane or other pipelines.

mod changelog;
mod producer;
mod retry;
mod status;
pub(crate) mod threads;

pub use changelog::{Changelog, RestoreError, Restored};
pub use status::{RestoreProgress, TaskStatus};

use crate::kafka::{
    Acks, FetchQueue, Fetched, KafkaSettings, Outgoing, OutgoingHeaders, Producer, Unanswered,
};
use crate::pipeline::{ErrorPolicy, PipelineSpec};
use crate::runtime::bindings_types::{FiredTimer, Header, OutputRecord, TaskInfo, TimeDomain};
use crate::runtime::{
    CompiledModule, Guest, GuestError, GuestLimits, InputBatch, InputView, OutputView, Outputs,
    Runtime, TaskServices,
};
use crate::state::{CHECKPOINT_KEY, Checkpoint, POSITION_KEY, PipelineDb, StateLimits, TaskState};
use producer::{TaskProducer, TopicNames, TxnError};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use retry::Retry;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one poll waits before the task checks whether it should stop.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Longest a stopping task waits for its last group-offset commit: tens of
/// milliseconds when Kafka is up.
const STOP_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What every task of one pipeline step shares.
pub struct TaskPlan {
    /// The pipeline.
    pub spec: Arc<PipelineSpec>,
    /// The step's position in the pipeline.
    pub step: u32,
    /// The step's input topics.
    pub inputs: Vec<String>,
    /// Where the step's default output goes: the next step's repartition
    /// topic, or the pipeline's output after the last step.
    pub output: String,
    /// The step's changelog topic.
    pub changelog: String,
    /// Whether each commit is a Kafka transaction (exactly-once, or a step
    /// feeding another step: see [`producer`]).
    pub transactional: bool,
    /// Where the dead-letter policy sends records the guest fails on.
    pub dead_letter: String,
    /// The pipeline's state store.
    pub db: Arc<PipelineDb>,
    /// How to reach Kafka, for restore consumers.
    pub kafka: KafkaSettings,
    /// The compiled module of the step.
    pub module: CompiledModule,
    /// The engine.
    pub runtime: Arc<Runtime>,
    /// The pipeline's producer.
    pub producer: Producer,
    /// The step's consumer group.
    pub group: String,
    /// The pipeline's configuration, as guests see it.
    pub config: Arc<BTreeMap<String, String>>,
}

/// What a finished task hands back to its pipeline.
pub struct TaskExit<C: ConsumerContext + 'static> {
    /// The partition's queue, for the next task on this partition.
    pub queue: FetchQueue<C>,
}

/// Why a batch failed.
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("producing output failed: {0}")]
    Produce(KafkaError),
    #[error(transparent)]
    Txn(TxnError),
    #[error(
        "the guest sent a record to output `{0}`, but the pipeline has no such output \
         (define it with --named-output {0}=TOPIC)"
    )]
    UnknownOutput(String),
    #[error("{0}")]
    Consume(String),
    #[error("committing state failed: {0}")]
    State(#[from] crate::state::StateError),
    #[error("writing the changelog failed: {0}")]
    Changelog(KafkaError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The task was told to stop in the middle of a batch it is isolating
    /// failures in; the batch is left uncommitted for the next owner.
    #[error("stopped in the middle of a batch")]
    Stopping,
}

/// One partition's task.
pub struct PartitionTask<C: ConsumerContext + 'static> {
    topic: String,
    partition: i32,
    label: Arc<str>,
    queue: FetchQueue<C>,
    consumer: Arc<BaseConsumer<C>>,
    plan: Arc<TaskPlan>,
    status: Arc<TaskStatus>,
    stop: Arc<AtomicBool>,
    changelog: Changelog,
    /// Set up when the task starts.
    producer: Option<TaskProducer>,
    /// How far the committed state reaches.
    checkpoint: Checkpoint,
    /// The next offset to commit to the group, once its batch is delivered.
    uncommitted: Option<i64>,
    /// The first offset processed since the last commit: where a restart
    /// resumes when no checkpoint says where.
    in_flight: Option<i64>,
    /// What was produced since the last commit.
    open: Option<OpenCommit>,
    /// The batch in hand, packed as it is polled; its buffers are reused
    /// from batch to batch.
    input: InputBatch,
    /// The furthest offset this task committed to the group while idle
    /// (the checkpoint, or past it over commit markers).
    group_offset: Option<i64>,
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

/// What one step of the task loop did.
enum Progress {
    /// Nothing to do.
    Idle,
    /// A batch was produced; it commits with its commit interval.
    Produced,
    /// Everything produced so far was committed.
    Committed,
}

/// Where a task failed, which decides when it counts as healed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FailedIn {
    /// Restoring or starting the guest: healed once a start succeeds.
    Start,
    /// A batch: healed once a batch commits.
    Batch,
}

impl<C: ConsumerContext + 'static> PartitionTask<C> {
    /// A task for `topic`/`partition`, logging to `changelog_partition` of
    /// the step's changelog; [`run`](Self::run) it on its own thread.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topic: String,
        partition: i32,
        changelog_partition: i32,
        queue: FetchQueue<C>,
        consumer: Arc<BaseConsumer<C>>,
        plan: Arc<TaskPlan>,
        status: Arc<TaskStatus>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let label: Arc<str> = if plan.spec.steps.len() > 1 {
            format!("{}/step-{}/{topic}-{partition}", plan.spec.name, plan.step).into()
        } else {
            format!("{}/{topic}-{partition}", plan.spec.name).into()
        };
        let changelog = Changelog {
            topic: plan.changelog.clone(),
            partition: changelog_partition,
        };
        Self {
            input: InputBatch::new(&topic, partition),
            topic,
            partition,
            label,
            queue,
            consumer,
            plan,
            status,
            stop,
            changelog,
            producer: None,
            checkpoint: Checkpoint::default(),
            uncommitted: None,
            in_flight: None,
            open: None,
            group_offset: None,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs until told to stop: restores the partition's state, then
    /// processes batches. A failure stops the work: the partition stays
    /// owned and paused, nothing is committed past the failing batch, and
    /// the task restarts after a backoff (see [`retry`]) from its last
    /// checkpoint, until it makes progress or the pipeline is paused.
    pub fn run(mut self) -> TaskExit<C> {
        self.status.set_assigned(true);
        self.status.clear_failure();
        tracing::info!(task = &*self.label, "task started");
        let mut guest: Option<Guest> = None;
        let mut retry = Retry::default();
        let mut failed_in = None;
        while !self.stopping() {
            if guest.is_none() {
                let now = Instant::now();
                if !retry.due(now) {
                    std::thread::sleep(retry.remaining(now).min(IDLE_POLL));
                    continue;
                }
                retry.started();
                match self.start(retry.restarts()) {
                    Ok(started) => guest = Some(started),
                    Err(Fault::Restore(RestoreError::Stopped)) => break,
                    Err(fault) => {
                        self.fail(&fault, &mut retry);
                        failed_in = Some(FailedIn::Start);
                        continue;
                    }
                }
                if failed_in == Some(FailedIn::Start) {
                    self.healed(&mut retry);
                    failed_in = None;
                }
            }
            match self.step(&mut guest) {
                Err(Fault::Stopping) => {
                    // Part of a batch ran; what is open is replayed by the
                    // partition's next owner.
                    self.abort_open();
                    break;
                }
                Ok(Progress::Committed) if failed_in.is_some() => {
                    self.healed(&mut retry);
                    failed_in = None;
                }
                Ok(_) => {}
                Err(fault) => {
                    // The failed batch was taken off the queue, so carrying
                    // on would commit past it. What is open is aborted, its
                    // state writes die with the instance, and the restart
                    // rewinds the input to the last commit.
                    self.abort_open();
                    self.fail(&fault, &mut retry);
                    failed_in = Some(FailedIn::Batch);
                    guest = None;
                }
            }
        }
        if let Some(guest) = guest.as_mut()
            && let Err(fault) = self.commit_open(guest)
        {
            tracing::warn!(task = &*self.label, error = %fault, "could not commit on stop; the next owner replays from the last commit");
            self.abort_open();
        }
        self.commit_on_stop();
        self.status.set_assigned(false);
        tracing::info!(task = &*self.label, "task stopped");
        self.queue.drop_popped();
        TaskExit { queue: self.queue }
    }

    fn fail(&self, fault: &Fault, retry: &mut Retry) {
        let error = fault.to_string();
        let mut wait = retry.failed(Instant::now());
        if matches!(fault, Fault::Txn(TxnError::Fenced(_))) {
            // A fenced task is usually a zombie whose partition moved while
            // it was stalled: re-initialising at once would fence the new
            // owner in turn. Waiting a session timeout lets the group take
            // the partition away first (which stops this task).
            wait = retry.wait_at_least(self.plan.kafka.session_timeout, Instant::now());
        }
        let failures = retry.restarts();
        tracing::error!(
            task = &*self.label,
            error,
            failures,
            retry_in = ?wait,
            "task failed; it holds its partition and restarts from its last checkpoint"
        );
        let next_retry_at = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(0));
        self.status.fail(error);
        self.status.retry_at(failures, next_retry_at);
        // Stop fetching what the failed task will not process.
        if let Err(e) = self.consumer.pause(&self.partition_list()) {
            tracing::warn!(task = &*self.label, error = %e, "could not pause the partition");
        }
    }

    fn healed(&self, retry: &mut Retry) {
        tracing::info!(
            task = &*self.label,
            failures = retry.restarts(),
            "task recovered after restarting"
        );
        retry.reset();
        self.status.clear_failure();
    }

    fn partition_list(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.partition);
        tpl
    }

    /// Starts (`restarts == 0`) or restarts the task: restores state and
    /// the guest, after a failure rewinds the input to the checkpoint, or to
    /// the failed batch when there is none yet, and resumes fetching. A
    /// first start resumes too: a previous task of this partition may have
    /// paused it after the partition was revoked (a fenced zombie's commit
    /// failing as the group takes the partition away), and librdkafka keeps
    /// that pause when the partition is assigned again.
    fn start(&mut self, restarts: u32) -> Result<Guest, Fault> {
        if restarts > 0 {
            tracing::info!(task = &*self.label, restarts, "restarting the task");
            self.status.retrying();
        }
        // Until the restore is done, queries must not read the local store.
        self.status.restore_started(0, 0);
        let started = self.start_guest();
        self.status.restore_stopped();
        let guest = started?;
        if restarts > 0
            && self.checkpoint.offset.is_none()
            && let Some(offset) = self.in_flight
        {
            self.seek(offset)?;
        }
        self.consumer
            .resume(&self.partition_list())
            .map_err(|e| Fault::Consume(format!("could not resume fetching the partition: {e}")))?;
        Ok(guest)
    }

    fn seek(&mut self, offset: i64) -> Result<(), Fault> {
        self.queue
            .seek(Offset::Offset(offset), Duration::from_secs(10))
            .map_err(|e| Fault::Consume(format!("could not resume input at offset {offset}: {e}")))
    }

    /// Restores the task's state, moves the input to where the state
    /// reaches, and instantiates the guest over it.
    fn start_guest(&mut self) -> Result<Guest, Fault> {
        let plan = self.plan.clone();
        let store = plan.db.task_store(
            plan.step,
            u32::try_from(self.changelog.partition).unwrap_or(0),
        );
        let mut state = TaskState::new(Box::new(store), StateLimits::default());
        let topics = TopicNames {
            output: &plan.output,
            changelog: &plan.changelog,
            named: plan
                .spec
                .named_outputs
                .iter()
                .map(|(name, topic)| (name.as_str(), topic.as_str()))
                .collect(),
            dead_letter: (plan.spec.error_policy == ErrorPolicy::DeadLetter)
                .then_some(plan.dead_letter.as_str()),
        };
        let producer = if plan.transactional {
            let id = format!("{}-{}-{}", plan.group, self.topic, self.partition);
            TaskProducer::transactional(&plan.kafka, &id, plan.spec.transaction_timeout, &topics)
        } else {
            TaskProducer::shared(&plan.producer, &topics)
        }
        .map_err(Fault::Txn)?;
        let producer = self.producer.insert(producer);
        let restored =
            self.changelog
                .restore(&plan.kafka, producer, &mut state, &self.status, &self.stop)?;
        tracing::info!(
            task = &*self.label,
            replayed = restored.replayed,
            repaired = restored.repaired,
            checkpoint = ?restored.checkpoint,
            "state restored"
        );
        if let Some(checkpoint) = restored.checkpoint {
            self.checkpoint = checkpoint;
            if let Some(offset) = checkpoint.offset {
                self.seek(offset)?;
                self.status.set_committed(offset);
            }
        }
        let timers = state.stored_timers()?.into_iter().collect();
        let services = TaskServices {
            label: self.label.clone(),
            config: plan.config.clone(),
            state,
            timers,
            stream_time: self.checkpoint.stream_time,
            status: self.status.clone(),
        };
        let spec_limits = &plan.spec.limits;
        let limits = GuestLimits {
            memory_bytes: spec_limits.memory_bytes,
            call_timeout: spec_limits.call_timeout,
            max_output_records: spec_limits.max_output_records,
            max_output_bytes: spec_limits.max_output_bytes,
            max_record_bytes: spec_limits.max_record_bytes,
        };
        let instantiating = (Instant::now(), crate::runtime::thread_cpu_time());
        let mut guest = plan.runtime.instantiate(&plan.module, services, limits)?;
        let instantiate_us = instantiating.0.elapsed().as_micros();
        // Its own CPU time beside the wall time: tasks start together, and
        // on a busy machine the wall time is mostly waiting for a core.
        let instantiate_cpu_us = crate::runtime::thread_cpu_time()
            .zip(instantiating.1)
            .map_or(0, |(now, then)| now.saturating_sub(then).as_micros());
        guest.init(&self.task_info())?;
        tracing::info!(
            task = &*self.label,
            instantiate_us,
            instantiate_cpu_us,
            thread_tasks_before = threads::tasks_before(),
            "guest instantiated"
        );
        Ok(guest)
    }

    fn task_info(&self) -> TaskInfo {
        TaskInfo {
            pipeline: self.plan.spec.name.clone(),
            step: self.plan.step,
            partition: self.partition,
        }
    }

    /// Polls one batch and carries it through; with no records, fires the
    /// wall-clock timers that are due.
    fn step(&mut self, slot: &mut Option<Guest>) -> Result<Progress, Fault> {
        self.poll_batch()?;
        if self.input.is_empty() {
            let guest = live(slot)?;
            let due = guest
                .services()
                .take_due_timers(TimeDomain::WallClock, now_ms());
            if due.is_empty() {
                if self.open.is_some() {
                    // The input went quiet: commit what is open now.
                    self.commit_open(guest)?;
                    return Ok(Progress::Committed);
                }
                self.commit_idle_position();
                return Ok(Progress::Idle);
            }
            let outputs = self.timed(|| guest.on_timers(&fired(due)))?;
            self.status.record_output(outputs.len());
            return self.finish_batch(guest, &outputs, &[], None, now_ms());
        }
        if self.in_flight.is_none() {
            self.in_flight = self.input.offsets().first().copied();
        }
        let span = BatchSpan::of(&self.input);
        // The guest sees the stream time before this batch, and tracks it
        // record by record within the batch (the SDK's windows do).
        let (outputs, dead_letters) = match self.plan.spec.error_policy {
            ErrorPolicy::Fail => {
                let guest = live(slot)?;
                (self.timed(|| guest.process(&self.input))?, Vec::new())
            }
            ErrorPolicy::Skip | ErrorPolicy::DeadLetter => self.process_isolating(slot)?,
        };
        self.finish_records(live(slot)?, outputs, dead_letters, &span)
    }

    /// Makes one processor call, timing it for the partition's status.
    fn timed<T>(&self, call: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = call();
        self.status.record_call(started.elapsed());
        result
    }

    /// The rest of a batch once the guest processed its records: advance
    /// stream time, fire event-time timers, produce, commit when due.
    fn finish_records(
        &mut self,
        guest: &mut Guest,
        mut outputs: Outputs,
        dead_letters: Vec<OutputRecord>,
        span: &BatchSpan,
    ) -> Result<Progress, Fault> {
        let services = guest.services();
        if let Some(max) = span.max_timestamp {
            services.stream_time = Some(services.stream_time.map_or(max, |t| t.max(max)));
        }
        let due = match services.stream_time {
            Some(now) => services.take_due_timers(TimeDomain::EventTime, now),
            None => Vec::new(),
        };
        if !due.is_empty() {
            outputs.append(self.timed(|| guest.on_timers(&fired(due)))?);
        }
        self.status.record_batch(span.count, outputs.len());
        self.finish_batch(
            guest,
            &outputs,
            &dead_letters,
            Some(span.next_offset),
            span.last_timestamp,
        )
    }

    /// Processes the batch in hand under the skip or dead-letter policy:
    /// when the guest fails on it, its state writes are rolled back and its
    /// records are retried on a fresh instance until the failing ones are
    /// isolated (see [`Self::isolate`]); those are skipped or dead-lettered,
    /// every other record is processed once. The outputs, and the dead
    /// letters to deliver with them.
    fn process_isolating(
        &self,
        slot: &mut Option<Guest>,
    ) -> Result<(Outputs, Vec<OutputRecord>), Fault> {
        let mut outputs = Outputs::default();
        let mut failed = Vec::new();
        self.isolate(slot, &mut outputs, &mut failed)?;
        let mut dead_letters = Vec::new();
        for (index, error) in failed {
            // A failed record is never dropped: a batch that cannot give it
            // back fails the task (a bug, the batch is replayed).
            let record = self.input.record(index).map_err(|e| {
                Fault::Consume(format!(
                    "internal error: record {index} of the batch could not be read back: {e}"
                ))
            })?;
            match self.plan.spec.error_policy {
                ErrorPolicy::DeadLetter => {
                    dead_letters.push(self.dead_letter(record, &error));
                    self.status.count("records-dead-lettered", 1);
                }
                _ => {
                    tracing::warn!(
                        task = &*self.label, topic = %self.topic, partition = self.partition,
                        offset = record.offset, error = %error,
                        "skipped a record the guest failed on"
                    );
                    self.status.count("records-skipped", 1);
                }
            }
        }
        Ok((outputs, dead_letters))
    }

    /// Runs the batch in hand through the guest in one call; when it fails,
    /// retries its records one call per record, so each failing record
    /// costs one failed call. Failed calls are the expensive ones (a
    /// deadline, an instance renewed, a memory cap filled); a successful
    /// call of one record costs microseconds. A guest that names the
    /// failing record (an error with its index) is taken at its word: the
    /// records before it are retried together, it fails without another
    /// call, the rest start over. The failed records are given by their
    /// index in the batch.
    fn isolate(
        &self,
        slot: &mut Option<Guest>,
        outputs: &mut Outputs,
        failed: &mut Vec<(usize, String)>,
    ) -> Result<(), Fault> {
        // Groups of records still to call the guest with, in offset order.
        let mut queue = VecDeque::new();
        queue.push_back(0..self.input.len());
        while let Some(group) = queue.pop_front() {
            if group.is_empty() {
                continue;
            }
            // A looping guest costs a deadline per failing record: pausing
            // or deleting the pipeline must not wait for all of them.
            if self.stopping() {
                return Err(Fault::Stopping);
            }
            let error = match self.call_once(slot, group.clone())? {
                Ok(out) => {
                    outputs.append(out);
                    continue;
                }
                Err(error) => error,
            };
            let named = match error {
                GuestError::Failed {
                    record_index: Some(i),
                    ..
                } => usize::try_from(i).ok().filter(|i| *i < group.len()),
                _ => None,
            };
            match named {
                _ if group.len() == 1 => failed.push((group.start, error.to_string())),
                Some(i) => {
                    let at = group.start + i;
                    failed.push((at, error.to_string()));
                    queue.push_front(at + 1..group.end);
                    queue.push_front(group.start..at);
                }
                None => {
                    for record in group.rev() {
                        queue.push_front(record..record + 1);
                    }
                }
            }
        }
        Ok(())
    }

    /// One guest call with the records of the batch in hand in `range`. On
    /// failure its state writes are rolled back and the instance renewed (a
    /// trap leaves it unusable, and any guest may hold half the batch in its
    /// own memory), and the call's error is returned.
    fn call_once(
        &self,
        slot: &mut Option<Guest>,
        range: Range<usize>,
    ) -> Result<Result<Outputs, GuestError>, Fault> {
        let guest = live(slot)?;
        let savepoint = guest.services().state.pending().clone();
        // The whole batch on the first try; part of it only after a failure.
        let part;
        let batch = if range == (0..self.input.len()) {
            &self.input
        } else {
            part = self.input.slice(range);
            &part
        };
        let error = match self.timed(|| guest.process(batch)) {
            Ok(out) => return Ok(Ok(out)),
            Err(e) => e,
        };
        let mut guest = slot.take().ok_or_else(no_guest)?;
        guest.services().rollback(savepoint)?;
        *slot = Some(guest.renew(&self.plan.runtime, &self.plan.module, &self.task_info())?);
        Ok(Err(error))
    }

    /// The dead-letter record for `record`: its key, value and headers, and
    /// where it came from and why it failed in `eddy.*` headers.
    fn dead_letter(&self, record: InputView<'_>, error: &str) -> OutputRecord {
        let plan = &self.plan;
        let mut headers = record.owned_headers();
        let digest = plan
            .spec
            .steps
            .get(plan.step as usize)
            .cloned()
            .unwrap_or_default();
        for (key, value) in [
            ("eddy.error", error.to_owned()),
            ("eddy.source.topic", self.topic.clone()),
            ("eddy.source.partition", self.partition.to_string()),
            ("eddy.source.offset", record.offset.to_string()),
            ("eddy.pipeline", plan.spec.name.clone()),
            ("eddy.step", plan.step.to_string()),
            ("eddy.module", digest),
        ] {
            headers.push(Header {
                key: key.to_owned(),
                value: Some(value.into_bytes()),
            });
        }
        OutputRecord {
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers,
            timestamp: Some(record.timestamp),
            output: None,
        }
    }

    /// Produces a batch's outputs and dead letters into what is open (a
    /// transaction, for a transactional task) and commits when the commit
    /// interval is up. `next_offset` is where the input resumes after the
    /// batch (`None` for a batch of wall-clock timers).
    fn finish_batch(
        &mut self,
        guest: &mut Guest,
        outputs: &Outputs,
        dead_letters: &[OutputRecord],
        next_offset: Option<i64>,
        default_timestamp: i64,
    ) -> Result<Progress, Fault> {
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
        let sent = self.send_outputs(
            producer,
            outputs,
            dead_letters,
            default_timestamp,
            &open.acks,
        );
        if let Err(fault) = sent {
            producer.abort();
            return Err(fault);
        }
        if next_offset.is_some() {
            open.checkpoint.offset = next_offset;
        }
        open.checkpoint.stream_time = guest.services().stream_time;
        let due = open.opened.elapsed() >= self.plan.spec.commit_interval;
        self.open = Some(open);
        if due {
            self.commit_open(guest)?;
            return Ok(Progress::Committed);
        }
        Ok(Progress::Produced)
    }

    fn producer(&self) -> Result<&TaskProducer, Fault> {
        self.producer
            .as_ref()
            .ok_or_else(|| Fault::Consume("internal error: the task has no producer".into()))
    }

    /// Commits what is open: logs the state mutations since the last commit
    /// and the checkpoint to the changelog, waits until everything is
    /// acknowledged, commits the transaction, then writes the mutations and
    /// the checkpoint to the local store in one write and the input offset
    /// to the group.
    fn commit_open(&mut self, guest: &mut Guest) -> Result<(), Fault> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let producer = self.producer()?;
        let mut batch = guest.services().state.take_pending();
        let position = match self.deliver(producer, &open.acks, &batch, &open.checkpoint) {
            Ok(position) => position,
            Err(fault) => {
                producer.abort();
                return Err(fault);
            }
        };
        batch.insert(CHECKPOINT_KEY.to_vec(), Some(open.checkpoint.encode()));
        batch.insert(POSITION_KEY.to_vec(), Some(position.to_be_bytes().to_vec()));
        guest.services().state.apply(batch)?;
        let moved = open.checkpoint.offset != self.checkpoint.offset;
        self.checkpoint = open.checkpoint;
        self.in_flight = None;
        if let Some(offset) = open.checkpoint.offset.filter(|_| moved) {
            self.status.set_committed(offset);
            self.uncommitted = Some(offset);
            self.commit_async();
        }
        Ok(())
    }

    /// Aborts what is open, after a failure: nothing of it is committed,
    /// and its state writes are dropped with the guest instance.
    fn abort_open(&mut self) {
        if self.open.take().is_some()
            && let Some(producer) = &self.producer
        {
            producer.abort();
        }
    }

    /// Up to `max_batch_records` records: waits up to [`IDLE_POLL`] (or
    /// until the open commit is due) for the first, then at most the linger
    /// time for the rest. Records already fetched are taken in one call,
    /// and the clock is read only when the queue runs dry (a clock read per
    /// record was 8 % of a task's CPU).
    fn poll_batch(&mut self) -> Result<(), Fault> {
        self.input.clear();
        let limits = &self.plan.spec.limits;
        let max = limits.max_batch_records as usize;
        let input = &mut self.input;
        let mut push = |record: Fetched<'_>| push_record(input, &record);
        let mut taken = self.queue.take(max, Duration::ZERO, &mut push);
        if taken == 0 {
            // While a commit is open, wait no longer than until it is due.
            let first_wait = self.open.as_ref().map_or(IDLE_POLL, |open| {
                (open.opened + self.plan.spec.commit_interval)
                    .saturating_duration_since(Instant::now())
                    .min(IDLE_POLL)
            });
            taken = self.queue.take(1, first_wait, &mut push);
        }
        if taken > 0 && taken < max {
            taken += self.queue.take(max - taken, limits.batch_linger, &mut push);
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
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AutoOffsetReset) => {
                let committed = crate::kafka::group_offsets_with(
                    &*self.consumer,
                    &[(self.topic.clone(), self.partition)],
                )
                .ok()
                .and_then(|o| o.first().copied().flatten());
                match committed {
                    None => {
                        // A partition no offset was ever committed for: start
                        // where the pipeline's spec says new pipelines start.
                        // Later steps read their repartition topic from its
                        // start: it exists only for this pipeline.
                        let offset = match self.plan.spec.start_from {
                            _ if self.plan.step > 0 => Offset::Beginning,
                            crate::pipeline::StartFrom::Earliest => Offset::Beginning,
                            crate::pipeline::StartFrom::Latest => Offset::End,
                        };
                        tracing::info!(
                            task = &*self.label,
                            ?offset,
                            "no committed offset; starting from the pipeline's start position"
                        );
                        self.queue
                            .seek(offset, Duration::from_secs(10))
                            .map_err(|e| Fault::Consume(format!("could not seek: {e}")))
                    }
                    Some(offset) => {
                        let range = self
                            .consumer
                            .fetch_watermarks(&self.topic, self.partition, Duration::from_secs(10))
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
            }
            _ => {
                tracing::warn!(task = &*self.label, error = %error, "consume error");
                Ok(())
            }
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
        batch: &crate::state::WriteBatch,
        checkpoint: &Checkpoint,
    ) -> Result<i64, Fault> {
        let logged = Acks::default();
        self.changelog
            .send_batch(producer, batch, checkpoint, &logged)
            .map_err(|e| produce_fault(producer, e, Fault::Changelog))?;
        outputs
            .wait()
            .map_err(|e| produce_fault(producer, e, Fault::Produce))?;
        let checkpoint_offset = logged
            .wait()
            .map_err(|e| produce_fault(producer, e, Fault::Changelog))?;
        producer.commit().map_err(Fault::Txn)?;
        Ok(checkpoint_offset + 1)
    }

    /// Sends a batch's outputs and dead letters, counted in `acks`; the
    /// commit waits for them. A full producer queue blocks here: that is
    /// the backpressure.
    fn send_outputs(
        &self,
        producer: &TaskProducer,
        outputs: &Outputs,
        dead_letters: &[OutputRecord],
        default_timestamp: i64,
        acks: &Acks,
    ) -> Result<(), Fault> {
        let topics = producer.topics();
        let send_to = |topic, record: OutputView<'_>| {
            producer
                .send(outgoing(topic, record, default_timestamp), acks)
                .map_err(|e| produce_fault(producer, e, Fault::Produce))
        };
        for output in outputs.iter() {
            let topic = match output.output {
                None => &topics.output,
                Some(name) => topics
                    .named(name)
                    .ok_or_else(|| Fault::UnknownOutput(name.to_owned()))?,
            };
            send_to(topic, output)?;
        }
        if !dead_letters.is_empty() {
            let topic = topics.dead_letter().ok_or_else(|| {
                Fault::Consume("internal error: dead letters without a dead-letter topic".into())
            })?;
            for record in dead_letters {
                send_to(topic, record.into())?;
            }
        }
        Ok(())
    }

    /// With nothing in flight, brings the group's offset up to the
    /// checkpoint, or past it over commit markers. A transactional input
    /// ends in a commit marker, which is never a record: the checkpoint
    /// stops before it and lag tools would show 1 forever. And a commit
    /// refused in a rebalance leaves the group behind a checkpoint already
    /// reached: a task restored there with no new input would never commit
    /// again, so each task makes this commit once it is idle. Recovery reads
    /// the checkpoint, not this. (Asynchronous: a synchronous commit could
    /// hold the task for a request timeout while the brokers are away.)
    fn commit_idle_position(&mut self) {
        let Some(checkpoint) = self.checkpoint.offset else {
            return;
        };
        let position = self.consumer.position().ok().and_then(|tpl| {
            match tpl.find_partition(&self.topic, self.partition)?.offset() {
                Offset::Offset(p) => Some(p),
                _ => None,
            }
        });
        let target = position.filter(|p| *p > checkpoint).unwrap_or(checkpoint);
        if self.group_offset.is_some_and(|o| o >= target) {
            return;
        }
        self.group_offset = Some(target);
        self.uncommitted = Some(target);
        self.status.set_committed(target);
        self.commit_async();
    }

    /// The group offset a stopping task leaves for lag tools (progress is
    /// read from the checkpoint, never from the group), committed
    /// synchronously on a thread of its own: the task stops after at most
    /// [`STOP_COMMIT_TIMEOUT`], as a group coordinator that cannot be
    /// reached (Kafka away at shutdown) would hold the commit until the
    /// consumer's session times out.
    fn commit_on_stop(&mut self) {
        let Some((offset, tpl)) = self.uncommitted_offsets() else {
            return;
        };
        let consumer = self.consumer.clone();
        let commit = move || consumer.commit(&tpl, CommitMode::Sync);
        match crate::kafka::call_within("eddy-stop-commit", STOP_COMMIT_TIMEOUT, commit) {
            Ok(Ok(())) => self.uncommitted = None,
            Ok(Err(e)) => {
                tracing::warn!(task = &*self.label, error = %e, offset, "offset commit failed; lag tools show the last commit until the partition's next owner commits")
            }
            Err(Unanswered::Spawn(e)) => {
                tracing::warn!(task = &*self.label, error = %e, "could not start a thread to commit on stop");
            }
            Err(Unanswered::TimedOut) => tracing::warn!(
                task = &*self.label,
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
    /// group, without waiting: lag tools read it; the task's progress is its
    /// checkpoint.
    fn commit_async(&mut self) {
        let Some((offset, tpl)) = self.uncommitted_offsets() else {
            return;
        };
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(task = &*self.label, error = %e, offset, "offset commit failed; lag tools show the last commit until the next");
        }
    }
}

/// The fault for a producing error: a fenced producer is told apart from
/// other failures (see [`producer`]).
fn produce_fault(
    producer: &TaskProducer,
    error: KafkaError,
    other: fn(KafkaError) -> Fault,
) -> Fault {
    match producer.classify(error) {
        fenced @ TxnError::Fenced(_) => Fault::Txn(fenced),
        TxnError::Failed(e) => other(e),
    }
}

/// The task's guest instance; a task without one has failed and never
/// calls this.
fn live(slot: &mut Option<Guest>) -> Result<&mut Guest, Fault> {
    slot.as_mut().ok_or_else(no_guest)
}

fn no_guest() -> Fault {
    Fault::Consume("internal error: the task has no guest instance".into())
}

/// What the end of a batch needs to know about its records.
struct BatchSpan {
    count: usize,
    /// The offset after the last record.
    next_offset: i64,
    last_timestamp: i64,
    /// The highest valid timestamp, to advance stream time.
    max_timestamp: Option<i64>,
}

impl BatchSpan {
    fn of(batch: &InputBatch) -> Self {
        let timestamps = batch.timestamps();
        Self {
            count: batch.len(),
            next_offset: batch.offsets().last().map_or(0, |offset| offset + 1),
            last_timestamp: timestamps.last().copied().unwrap_or(0),
            max_timestamp: timestamps.iter().copied().filter(|t| *t >= 0).max(),
        }
    }
}

/// The Kafka record for `output`, to `topic`.
fn outgoing<'a>(
    topic: &'a crate::kafka::Topic,
    output: OutputView<'a>,
    default_timestamp: i64,
) -> Outgoing<'a> {
    Outgoing {
        key: output.key,
        value: output.value,
        timestamp: Some(output.timestamp.unwrap_or(default_timestamp)),
        headers: OutgoingHeaders::new(output.headers.iter()),
        ..Outgoing::to(topic)
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

fn fired(due: Vec<crate::runtime::TimerKey>) -> Vec<FiredTimer> {
    due.into_iter()
        .map(|(at, domain, key)| FiredTimer { domain, at, key })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

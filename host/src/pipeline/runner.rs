//! A running pipeline on this daemon: per step, its consumer group
//! membership, a thread that serves the consumer (rebalances, errors), and
//! one task thread per assigned input partition.
//!
//! Every input partition's messages are split into their own queue before
//! the consumer subscribes, so each task pulls from its partition at its own
//! pace. On revoke, tasks finish their batch and commit before the partition
//! is handed over.
//!
//! Each consumer is a static member of its group (`group.instance.id`, see
//! [`KafkaSettings::group_member`]): a daemon killed and restarted within the
//! session timeout gets its partitions back without a rebalance. Only a
//! pipeline paused or deleted here leaves the group at once
//! ([`GroupExit::Leave`]); a daemon shutting down stays a member, as a
//! restart is the usual reason.

use super::lock;
use crate::kafka::{FetchQueue, InternalTopic, KafkaMetadata, KafkaSettings, group_offsets_with};
use crate::runtime::WALL_DEADLINE_FACTOR;
use crate::task::threads::{self, TaskThread};
use crate::task::{
    Assignment, DaemonList, PartitionTask, Standbys, TaskExit, TaskPlan, TaskStatus,
};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a stopping task may take beyond its guest call's longest
/// possible run (its wall deadline), to commit what it processed, before
/// the wait for it is logged.
const STOP_MARGIN: Duration = Duration::from_secs(30);

/// A topic and partition.
pub type TopicPartition = (String, i32);

struct TaskHandle {
    stop: Arc<AtomicBool>,
    thread: TaskThread<TaskExit<RebalanceHandler>>,
}

/// What the poll thread, the rebalance callbacks and the control plane share.
struct Shared {
    plan: Arc<TaskPlan>,
    consumer: Mutex<Weak<BaseConsumer<RebalanceHandler>>>,
    queues: Mutex<HashMap<TopicPartition, FetchQueue<RebalanceHandler>>>,
    /// The step's input partitions, in changelog partition order.
    inputs: Mutex<Vec<TopicPartition>>,
    tasks: Mutex<HashMap<TopicPartition, TaskHandle>>,
    statuses: Mutex<BTreeMap<TopicPartition, Arc<TaskStatus>>>,
    error: Mutex<Option<String>>,
    /// Warm copies of the state of partitions other daemons own, for a
    /// pipeline with standby replicas.
    standbys: Option<Standbys>,
}

impl Shared {
    fn status(&self, tp: &TopicPartition) -> Arc<TaskStatus> {
        lock(&self.statuses).entry(tp.clone()).or_default().clone()
    }

    fn start_task(&self, tp: TopicPartition) {
        if lock(&self.tasks).contains_key(&tp) {
            return;
        }
        let Some(consumer) = lock(&self.consumer).upgrade() else {
            return;
        };
        let Some(queue) = lock(&self.queues).remove(&tp) else {
            let message = format!(
                "partition {}/{} was assigned but has no queue (partitions added while the \
                 pipeline ran?): pause and resume the pipeline to pick it up",
                tp.0, tp.1
            );
            tracing::error!(pipeline = %self.plan.settings.pipeline, "{message}");
            self.status(&tp).fail(message);
            return;
        };
        let Some(changelog_partition) = self.changelog_partition(&tp) else {
            self.status(&tp).fail(format!(
                "partition {}/{} is not an input of this step",
                tp.0, tp.1
            ));
            return;
        };
        let topic_partitions = lock(&self.inputs)
            .iter()
            .filter(|(topic, _)| *topic == tp.0)
            .count();
        let stop = Arc::new(AtomicBool::new(false));
        let assignment = Assignment {
            topic: tp.0.clone(),
            partition: tp.1,
            changelog_partition,
            topic_partitions: i32::try_from(topic_partitions).unwrap_or(i32::MAX),
            queue,
            consumer,
        };
        let task = PartitionTask::new(
            assignment,
            self.plan.clone(),
            self.status(&tp),
            stop.clone(),
        );
        if let Some(standbys) = &self.standbys {
            standbys.claim(changelog_partition);
        }
        let name = format!("task-{}-{}", tp.0, tp.1);
        match threads::spawn(name, move || task.run()) {
            Ok(thread) => {
                lock(&self.tasks).insert(tp, TaskHandle { stop, thread });
            }
            Err(e) => self
                .status(&tp)
                .fail(format!("could not start a thread: {e}")),
        }
    }

    /// Stops the tasks of `partitions` (all if `None`), waiting until each
    /// has finished its batch and committed.
    fn stop_tasks(&self, partitions: Option<&[TopicPartition]>) {
        let handles: Vec<(TopicPartition, TaskHandle)> = {
            let mut tasks = lock(&self.tasks);
            let keys: Vec<TopicPartition> = match partitions {
                Some(list) => list.to_vec(),
                None => tasks.keys().cloned().collect(),
            };
            keys.into_iter()
                .filter_map(|tp| tasks.remove(&tp).map(|h| (tp, h)))
                .collect()
        };
        for (_, handle) in &handles {
            handle.stop.store(true, Ordering::Relaxed);
        }
        // Each task finishes the call it is in (its deadline bounds that)
        // and commits, which waits as long as Kafka refuses the writes; its
        // partition's queue comes back only with it, so it is waited for,
        // and said once it takes longer than a call and a margin. The
        // registry thread never waits here (`pipeline::appliers`).
        let grace = self.plan.settings.guest.call_timeout * WALL_DEADLINE_FACTOR + STOP_MARGIN;
        let pipeline = &self.plan.settings.pipeline;
        for (tp, handle) in handles {
            let started = Instant::now();
            let mut thread = handle.thread;
            let joined = loop {
                match thread.join_by(Instant::now() + grace) {
                    Ok(joined) => break joined,
                    Err(still) => {
                        tracing::warn!(
                            %pipeline, partition = ?tp, waited = ?started.elapsed(),
                            "a stopping task has not stopped yet (a commit waiting on Kafka?); still waiting"
                        );
                        thread = still;
                    }
                }
            };
            if let Some(standbys) = &self.standbys
                && let Some(partition) = self.changelog_partition(&tp)
            {
                standbys.release(partition);
            }
            match joined {
                Ok(exit) => {
                    lock(&self.queues).insert(tp, exit.queue);
                }
                Err(_) => {
                    tracing::error!(%pipeline, partition = ?tp, "task thread panicked");
                    self.status(&tp)
                        .fail("internal error: the task panicked".into());
                }
            }
        }
    }

    /// The changelog partition of input partition `tp`: its place among
    /// the step's input partitions.
    fn changelog_partition(&self, tp: &TopicPartition) -> Option<i32> {
        lock(&self.inputs)
            .iter()
            .position(|t| t == tp)
            .and_then(|i| i32::try_from(i).ok())
    }

    fn set_error(&self, error: Option<String>) {
        *lock(&self.error) = error;
    }
}

/// The consumer's context: turns rebalances into task starts and stops.
struct RebalanceHandler {
    shared: Weak<Shared>,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for RebalanceHandler {}

impl ConsumerContext for RebalanceHandler {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked = partitions(tpl);
                tracing::info!(pipeline = %shared.plan.settings.pipeline, ?revoked, "partitions revoked");
                shared.stop_tasks(Some(&revoked));
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(pipeline = %shared.plan.settings.pipeline, error = %e, "rebalance error");
                shared.set_error(Some(format!("rebalance error: {e}")));
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned = partitions(tpl);
            tracing::info!(pipeline = %shared.plan.settings.pipeline, ?assigned, "partitions assigned");
            for tp in assigned {
                shared.start_task(tp);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result
            && let Some(shared) = self.shared.upgrade()
        {
            tracing::warn!(pipeline = %shared.plan.settings.pipeline, error = %e, "offset commit failed");
        }
    }
}

/// What a stopping pipeline does with its consumers' group membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupExit {
    /// Leave the group: the partitions move to the other daemons at once.
    /// For a pipeline paused or deleted here.
    Leave,
    /// Stay a member until the session times out: the same daemon started
    /// again within it (a restart, a deploy, a pipeline replaced by its new
    /// version) gets the same partitions back without a rebalance.
    Stay,
}

/// A pipeline running on this daemon: one runner per step.
pub struct PipelineRunner {
    steps: Vec<StepRunner>,
}

impl PipelineRunner {
    /// Starts every step of a pipeline, one plan per step.
    pub fn start(
        plans: Vec<Arc<TaskPlan>>,
        kafka: &KafkaSettings,
        metadata: &Arc<KafkaMetadata>,
        daemons: &DaemonList,
    ) -> anyhow::Result<Self> {
        let steps = plans
            .into_iter()
            .map(|plan| StepRunner::start(plan, kafka.clone(), metadata.clone(), daemons))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { steps })
    }

    /// A handle on the pipeline's status, usable without holding on to the
    /// runner (queries through it may wait on Kafka).
    pub fn status(&self) -> RunnerStatus {
        RunnerStatus(self.steps.iter().map(|s| s.shared.clone()).collect())
    }

    /// Stops every step, first to last, each task finishing its batch.
    pub fn stop(self, exit: GroupExit) {
        for step in self.steps {
            step.stop(exit);
        }
    }
}

/// One step of a pipeline running on this daemon.
struct StepRunner {
    shared: Arc<Shared>,
    stop: Arc<StopFlags>,
    poller: Option<JoinHandle<()>>,
}

/// Tells the poll thread to stop, and how.
#[derive(Default)]
struct StopFlags {
    stop: AtomicBool,
    leave: AtomicBool,
}

impl StopFlags {
    fn stopping(&self) -> bool {
        // Acquire pairs with `set`'s Release: whoever sees the stop sees
        // how to leave.
        self.stop.load(Ordering::Acquire)
    }

    fn set(&self, exit: GroupExit) {
        self.leave
            .store(exit == GroupExit::Leave, Ordering::Relaxed);
        self.stop.store(true, Ordering::Release);
    }
}

/// What a running pipeline reports about itself.
#[derive(Clone)]
pub struct RunnerStatus(Vec<Arc<Shared>>);

/// The tasks of one step on this daemon, for state queries.
pub struct StepTasks {
    /// The step's input partitions, in changelog partition order.
    pub inputs: Vec<TopicPartition>,
    /// The status of each partition's task.
    pub statuses: BTreeMap<TopicPartition, Arc<TaskStatus>>,
    /// The plan the step's tasks run.
    pub plan: Arc<TaskPlan>,
}

impl RunnerStatus {
    /// The partitions this pipeline has seen, with their task status.
    pub fn partitions(&self) -> Vec<PartitionView> {
        self.0
            .iter()
            .flat_map(|shared| {
                let step = shared.plan.settings.step;
                lock(&shared.statuses)
                    .iter()
                    .map(|(tp, status)| PartitionView {
                        step,
                        partition: tp.clone(),
                        status: status.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The offsets each step's group has committed for `partitions`, read
    /// from Kafka through the step's own consumer; `None` before it exists.
    pub fn committed(&self, partitions: &[PartitionView]) -> Option<Vec<Option<i64>>> {
        let mut out = vec![None; partitions.len()];
        // One query per step's group, not one per partition.
        for shared in &self.0 {
            let (indices, keys): (Vec<usize>, Vec<TopicPartition>) = partitions
                .iter()
                .enumerate()
                .filter(|(_, v)| v.step == shared.plan.settings.step)
                .map(|(i, v)| (i, v.partition.clone()))
                .unzip();
            if keys.is_empty() {
                continue;
            }
            let consumer = lock(&shared.consumer).upgrade()?;
            let offsets = group_offsets_with(&*consumer, &keys).ok()?;
            for (i, offset) in indices.into_iter().zip(offsets) {
                out[i] = offset;
            }
        }
        Some(out)
    }

    /// A pipeline-level error (consumer or broker trouble), if any.
    pub fn error(&self) -> Option<String> {
        self.0.iter().find_map(|s| lock(&s.error).clone())
    }

    /// Whether any task failed.
    pub fn failed(&self) -> bool {
        self.0
            .iter()
            .any(|s| lock(&s.statuses).values().any(|s| s.failed()))
    }

    /// The tasks of `step` on this daemon, `None` if there is no such step.
    pub fn step(&self, step: u32) -> Option<StepTasks> {
        let shared = self.0.iter().find(|s| s.plan.settings.step == step)?;
        Some(StepTasks {
            inputs: lock(&shared.inputs).clone(),
            statuses: lock(&shared.statuses).clone(),
            plan: shared.plan.clone(),
        })
    }
}

/// One partition as the status shows it.
pub struct PartitionView {
    /// The pipeline step the partition is an input of.
    pub step: u32,
    /// Topic and partition.
    pub partition: TopicPartition,
    /// The task's counters.
    pub status: Arc<TaskStatus>,
}

impl StepRunner {
    /// Starts the step: its consumer joins the group on a thread of its
    /// own, retrying while the broker is unreachable.
    fn start(
        plan: Arc<TaskPlan>,
        kafka: KafkaSettings,
        metadata: Arc<KafkaMetadata>,
        daemons: &DaemonList,
    ) -> anyhow::Result<Self> {
        // Copies are placed among daemons by id: a client of no daemon
        // keeps none.
        let standbys = match &kafka.daemon_id {
            Some(me) if plan.settings.standby_replicas > 0 => {
                Some(Standbys::start(plan.clone(), me.clone(), daemons.clone())?)
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            standbys,
            plan,
            consumer: Mutex::new(Weak::new()),
            queues: Mutex::new(HashMap::new()),
            inputs: Mutex::new(Vec::new()),
            tasks: Mutex::new(HashMap::new()),
            statuses: Mutex::new(BTreeMap::new()),
            error: Mutex::new(None),
        });
        let config = kafka.group_member(&shared.plan.group);
        let stop = Arc::new(StopFlags::default());
        let poller = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("poll-{}", shared.plan.settings.pipeline))
                .spawn(move || serve_consumer(&shared, &kafka, &metadata, &config, &stop))?
        };
        Ok(Self {
            shared,
            stop,
            poller: Some(poller),
        })
    }

    /// Stops every task (each finishes its batch and commits), leaves the
    /// consumer group or stays in it (`exit`) and flushes the producer.
    fn stop(mut self, exit: GroupExit) {
        self.stop.set(exit);
        if let Some(poller) = self.poller.take()
            && poller.join().is_err()
        {
            tracing::error!(pipeline = %self.shared.plan.settings.pipeline, "poll thread panicked");
        }
        // `Drop` stops the standby copies, after this.
    }
}

impl Drop for StepRunner {
    fn drop(&mut self) {
        self.stop.set(GroupExit::Stay);
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        // Here, not with `Shared`: a status handle may keep that alive,
        // and the copies must stop with the runner.
        if let Some(standbys) = &self.shared.standbys {
            standbys.stop();
        }
    }
}

/// The poll thread: finds the input partitions, splits their queues,
/// subscribes, then serves the consumer until told to stop.
fn serve_consumer(
    shared: &Arc<Shared>,
    kafka: &KafkaSettings,
    metadata: &KafkaMetadata,
    config: &ClientConfig,
    stop: &StopFlags,
) {
    let name = shared.plan.settings.pipeline.clone();
    let mut inputs = Vec::new();
    for topic in &shared.plan.inputs {
        loop {
            if stop.stopping() {
                return;
            }
            match metadata.partition_count(topic) {
                Ok(count) => {
                    inputs.extend((0..count).map(|p| (topic.clone(), p)));
                    break;
                }
                Err(e) => {
                    let message = format!("waiting for input topic: {e}");
                    tracing::warn!(pipeline = %name, "{message}");
                    shared.set_error(Some(message));
                    std::thread::sleep(Duration::from_secs(2));
                }
            }
        }
    }
    // The changelog has one partition per input partition.
    let changelog = InternalTopic::changelog(&shared.plan.changelog, inputs.len());
    loop {
        if stop.stopping() {
            return;
        }
        match crate::kafka::ensure_topic(kafka, metadata, &changelog) {
            Ok(()) => break,
            Err(e) => {
                let message = format!("could not prepare the changelog: {e}");
                tracing::warn!(pipeline = %name, "{message}");
                shared.set_error(Some(message));
                if e.is_permanent() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
    *lock(&shared.inputs) = inputs.clone();
    if let Some(standbys) = &shared.standbys {
        standbys.set_partitions(i32::try_from(inputs.len()).unwrap_or(i32::MAX));
    }
    let mut fatal_in_a_row = 0u32;
    while !stop.stopping() {
        let started = std::time::Instant::now();
        match serve_one_consumer(shared, config, &inputs, stop) {
            ConsumerEnd::Stopped => break,
            ConsumerEnd::NotStarted => return,
            ConsumerEnd::Fatal => {
                // A new consumer replaces the fenced member. When this
                // member fenced itself (its session lost while the group
                // coordinator moved, its rejoin then fencing its own late
                // commit), that is the whole remedy; two daemons sharing
                // one id fence each other in turn, slowly, with the error
                // shown in the pipeline's status.
                if started.elapsed() > Duration::from_secs(60) {
                    fatal_in_a_row = 0;
                }
                fatal_in_a_row += 1;
                let wait = (Duration::from_millis(500) * 2u32.pow(fatal_in_a_row.min(8)))
                    .min(kafka.session_timeout.max(Duration::from_secs(1)));
                tracing::info!(pipeline = %name, group = %shared.plan.group, retry_in = ?wait,
                    "rejoining the group with a new consumer");
                let until = std::time::Instant::now() + wait;
                while !stop.stopping() && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    if let Err(e) =
        rdkafka::producer::Producer::flush(shared.plan.producer.rdkafka(), Duration::from_secs(10))
    {
        tracing::warn!(pipeline = %name, error = %e, "producer flush failed");
    }
    tracing::info!(pipeline = %name, "pipeline stopped on this daemon");
}

/// How one consumer of a step ended.
enum ConsumerEnd {
    /// Told to stop.
    Stopped,
    /// It could not be created or subscribe (the error is in the status).
    NotStarted,
    /// It failed fatally (fenced) and must be replaced by a new one.
    Fatal,
}

/// Creates the step's consumer, splits each input partition's queue off,
/// subscribes, and serves it until told to stop or it fails fatally; then
/// stops the tasks it fed.
fn serve_one_consumer(
    shared: &Arc<Shared>,
    config: &ClientConfig,
    inputs: &[TopicPartition],
    stop: &StopFlags,
) -> ConsumerEnd {
    let name = &shared.plan.settings.pipeline;
    let handler = RebalanceHandler {
        shared: Arc::downgrade(shared),
    };
    let consumer: Arc<BaseConsumer<RebalanceHandler>> = match config.create_with_context(handler) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            shared.set_error(Some(format!("could not create the consumer: {e}")));
            return ConsumerEnd::NotStarted;
        }
    };
    *lock(&shared.consumer) = Arc::downgrade(&consumer);
    for tp in inputs {
        shared.status(tp);
        match FetchQueue::split(&consumer, &tp.0, tp.1) {
            Some(queue) => {
                lock(&shared.queues).insert(tp.clone(), queue);
            }
            None => shared
                .status(tp)
                .fail("could not split the partition's queue".into()),
        }
    }
    let topics: Vec<&str> = shared.plan.inputs.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&topics) {
        shared.set_error(Some(format!("could not subscribe: {e}")));
        return ConsumerEnd::NotStarted;
    }
    shared.set_error(None);
    tracing::info!(pipeline = %name, group = %shared.plan.group, "consumer subscribed");
    let mut end = ConsumerEnd::Stopped;
    while !stop.stopping() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                use rdkafka::Message as _;
                tracing::warn!(pipeline = %name, topic = message.topic(), partition = message.partition(),
                    "message on the main queue (partition not split); it will be redelivered after a restart");
            }
            Some(Err(rdkafka::error::KafkaError::MessageConsumptionFatal(code))) => {
                let message = fenced_member_message(&shared.plan.group, code);
                tracing::error!(pipeline = %name, "{message}");
                shared.set_error(Some(message));
                end = ConsumerEnd::Fatal;
                break;
            }
            Some(Err(e)) => {
                tracing::warn!(pipeline = %name, error = %e, "consumer error");
                shared.set_error(Some(format!("consumer error: {e}")));
            }
        }
    }
    // Tasks finish their batches and commit; then the queues (which hold
    // the consumer) are dropped so the consumer closes. Unsubscribing first
    // leaves the group; a static member closed without it stays one until
    // its session times out.
    shared.stop_tasks(None);
    lock(&shared.queues).clear();
    if matches!(end, ConsumerEnd::Stopped) && stop.leave.load(Ordering::Relaxed) {
        consumer.unsubscribe();
    }
    drop(consumer);
    end
}

/// What a fatal consumer error means for a static member, and what to do.
fn fenced_member_message(group: &str, code: rdkafka::types::RDKafkaErrorCode) -> String {
    if code == rdkafka::types::RDKafkaErrorCode::FencedInstanceId {
        format!(
            "the consumer of group {group} was fenced by another with this daemon's instance id; \
             a new consumer rejoins. Once, after the group's coordinator moved, this is the \
             daemon fencing its own late commit; again and again, two daemons run with one \
             daemon id (a copied --data-dir?): give each its own data directory"
        )
    } else {
        format!("the consumer of group {group} failed fatally ({code}); a new consumer rejoins")
    }
}

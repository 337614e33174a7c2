//! A task: one input partition of one pipeline, on its own thread.
//!
//! The loop is the unit of everything: poll up to N records or T ms from the
//! partition's queue, make one guest call, produce the outputs, wait until
//! Kafka acknowledges them, then commit the input offset and the batch's
//! state. A crash anywhere before the commit replays the batch
//! (at-least-once); nothing is committed that was not delivered.
//!
//! The thread blocks only itself: a slow guest or a full producer queue
//! stalls this partition (backpressure through librdkafka's bounded fetch
//! queue), never the poll loop, the control plane or other pipelines.

mod status;

pub use status::TaskStatus;

use crate::pipeline::PipelineSpec;
use crate::runtime::bindings_types::{
    Batch, FiredTimer, Header, InputRecord, OutputRecord, TaskInfo, TimeDomain,
};
use crate::runtime::{CompiledModule, Guest, GuestError, GuestLimits, Runtime, TaskServices};
use crate::state::{MemoryStore, StateLimits, TaskState};
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one poll waits before the task checks whether it should stop.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// What every task of one pipeline shares.
pub struct TaskPlan {
    /// The pipeline.
    pub spec: Arc<PipelineSpec>,
    /// The compiled module of its step.
    pub module: CompiledModule,
    /// The engine.
    pub runtime: Arc<Runtime>,
    /// The pipeline's producer.
    pub producer: FutureProducer,
    /// The pipeline's consumer group, for offset queries.
    pub group: String,
    /// The pipeline's configuration, as guests see it.
    pub config: Arc<BTreeMap<String, String>>,
}

/// State a task leaves behind when its partition is revoked, picked up
/// again if the partition comes back to this daemon.
pub struct Parked {
    state: TaskState,
    timers: std::collections::BTreeSet<crate::runtime::TimerKey>,
    stream_time: Option<i64>,
}

/// What a finished task hands back to its pipeline.
pub struct TaskExit<C: ConsumerContext + 'static> {
    /// The partition's queue, for the next task on this partition.
    pub queue: PartitionQueue<C>,
    /// The task's state, if it has any worth keeping.
    pub parked: Option<Parked>,
}

/// Why a batch failed.
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("producing output failed: {0}")]
    Produce(KafkaError),
    #[error(
        "the guest sent a record to output `{0}`, but the pipeline has no such output \
         (define it with --named-output {0}=TOPIC)"
    )]
    UnknownOutput(String),
    #[error("{0}")]
    Consume(String),
    #[error("committing state failed: {0}")]
    State(#[from] crate::state::StateError),
}

/// One partition's task.
pub struct PartitionTask<C: ConsumerContext + 'static> {
    topic: String,
    partition: i32,
    label: Arc<str>,
    queue: PartitionQueue<C>,
    consumer: Arc<BaseConsumer<C>>,
    plan: Arc<TaskPlan>,
    status: Arc<TaskStatus>,
    stop: Arc<AtomicBool>,
    /// The next offset to commit, once the batch that reached it is delivered.
    uncommitted: Option<i64>,
}

impl<C: ConsumerContext + 'static> PartitionTask<C> {
    /// A task for `topic`/`partition`; [`run`](Self::run) it on its own thread.
    pub fn new(
        topic: String,
        partition: i32,
        queue: PartitionQueue<C>,
        consumer: Arc<BaseConsumer<C>>,
        plan: Arc<TaskPlan>,
        status: Arc<TaskStatus>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let label: Arc<str> = format!("{}/{topic}-{partition}", plan.spec.name).into();
        Self {
            topic,
            partition,
            label,
            queue,
            consumer,
            plan,
            status,
            stop,
            uncommitted: None,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs until told to stop. Any failure stops the task: the partition
    /// stays owned and paused, nothing is committed past the failing batch,
    /// until the pipeline is resumed.
    pub fn run(mut self, parked: Option<Parked>) -> TaskExit<C> {
        self.status.set_assigned(true);
        self.status.clear_failure();
        tracing::info!(task = &*self.label, "task started");
        let mut guest = match self.start_guest(parked) {
            Ok(guest) => Some(guest),
            Err(e) => {
                self.fail(&e.to_string());
                None
            }
        };
        while !self.stopping() {
            let Some(g) = guest.as_mut() else {
                // Failed: hold the partition idle until stopped.
                std::thread::sleep(IDLE_POLL);
                continue;
            };
            if let Err(fault) = self.step(g) {
                // Whatever failed, the task stops here: the failed batch was
                // taken off the queue, so carrying on would commit past it.
                // Its state writes die with the instance.
                self.fail(&fault.to_string());
                guest = None;
            }
        }
        self.commit(CommitMode::Sync);
        self.status.set_assigned(false);
        tracing::info!(task = &*self.label, "task stopped");
        let parked = guest.map(|mut g| {
            let services = g.services();
            Parked {
                state: std::mem::replace(
                    &mut services.state,
                    TaskState::new(Box::new(MemoryStore::default()), StateLimits::default()),
                ),
                timers: std::mem::take(&mut services.timers),
                stream_time: services.stream_time,
            }
        });
        TaskExit {
            queue: self.queue,
            parked,
        }
    }

    fn fail(&self, error: &str) {
        tracing::error!(
            task = &*self.label,
            error,
            "task failed; it holds its partition until the pipeline is resumed"
        );
        self.status.fail(error.to_owned());
        // Stop fetching what the failed task will not process.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(task = &*self.label, error = %e, "could not pause the partition");
        }
    }

    fn start_guest(&self, parked: Option<Parked>) -> Result<Guest, GuestError> {
        let (state, timers, stream_time) = match parked {
            Some(p) => (p.state, p.timers, p.stream_time),
            None => (
                TaskState::new(Box::new(MemoryStore::default()), StateLimits::default()),
                Default::default(),
                None,
            ),
        };
        let services = TaskServices {
            label: self.label.clone(),
            config: self.plan.config.clone(),
            state,
            timers,
            stream_time,
        };
        let limits = GuestLimits {
            memory_bytes: self.plan.spec.limits.memory_bytes,
            call_timeout: self.plan.spec.limits.call_timeout,
        };
        let mut guest = self
            .plan
            .runtime
            .instantiate(&self.plan.module, services, limits)?;
        guest.init(&TaskInfo {
            pipeline: self.plan.spec.name.clone(),
            step: 0,
            partition: self.partition,
        })?;
        Ok(guest)
    }

    /// Polls one batch and carries it through; with no records, fires the
    /// wall-clock timers that are due.
    fn step(&mut self, guest: &mut Guest) -> Result<(), Fault> {
        let records = self.poll_batch()?;
        if records.is_empty() {
            let due = guest
                .services()
                .take_due_timers(TimeDomain::WallClock, now_ms());
            if !due.is_empty() {
                let outputs = guest.on_timers(&fired(due))?;
                self.produce(&outputs, now_ms())?;
                guest.services().state.commit()?;
                self.status.record_output(outputs.len());
            }
            return Ok(());
        }
        let count = records.len();
        let next_offset = records.last().map_or(0, |r| r.offset + 1);
        let last_timestamp = records.last().map_or(0, |r| r.timestamp);
        if let Some(max) = records
            .iter()
            .map(|r| r.timestamp)
            .filter(|t| *t >= 0)
            .max()
        {
            let services = guest.services();
            services.stream_time = Some(services.stream_time.map_or(max, |t| t.max(max)));
        }
        let batch = Batch {
            topic: self.topic.clone(),
            partition: self.partition,
            records,
        };
        let mut outputs = guest.process(&batch)?;
        let services = guest.services();
        let due = match services.stream_time {
            Some(now) => services.take_due_timers(TimeDomain::EventTime, now),
            None => Vec::new(),
        };
        if !due.is_empty() {
            outputs.extend(guest.on_timers(&fired(due))?);
        }
        self.produce(&outputs, last_timestamp)?;
        guest.services().state.commit()?;
        self.uncommitted = Some(next_offset);
        self.commit(CommitMode::Async);
        self.status.record_batch(count, outputs.len(), next_offset);
        Ok(())
    }

    /// Up to `max_batch_records` records: waits up to [`IDLE_POLL`] for the
    /// first, then at most the linger time for the rest.
    fn poll_batch(&self) -> Result<Vec<InputRecord>, Fault> {
        let limits = &self.plan.spec.limits;
        let max = limits.max_batch_records as usize;
        let mut records = Vec::new();
        let mut deadline: Option<Instant> = None;
        while records.len() < max {
            let timeout = match deadline {
                None => IDLE_POLL,
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            match self.queue.poll(timeout) {
                None => break,
                Some(Ok(message)) => {
                    records.push(input_record(&message));
                    deadline.get_or_insert_with(|| Instant::now() + limits.batch_linger);
                }
                Some(Err(e)) => {
                    if records.is_empty() {
                        self.consume_error(e)?;
                    } else {
                        // Process what we have; the error comes back next poll.
                        tracing::warn!(task = &*self.label, error = %e, "consume error after partial batch");
                    }
                    break;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        Ok(records)
    }

    /// Decides what a consume error means. A position that fell out of the
    /// log is fatal for the task: eddy never skips records silently.
    fn consume_error(&self, error: KafkaError) -> Result<(), Fault> {
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
                        let offset = match self.plan.spec.start_from {
                            crate::pipeline::StartFrom::Earliest => Offset::Beginning,
                            crate::pipeline::StartFrom::Latest => Offset::End,
                        };
                        tracing::info!(
                            task = &*self.label,
                            ?offset,
                            "no committed offset; starting from the pipeline's start position"
                        );
                        self.consumer
                            .seek(&self.topic, self.partition, offset, Duration::from_secs(10))
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

    /// Produces `outputs` and waits until Kafka acknowledges every one.
    /// A full producer queue blocks here: that is the backpressure.
    fn produce(&self, outputs: &[OutputRecord], default_timestamp: i64) -> Result<(), Fault> {
        let spec = &self.plan.spec;
        let mut deliveries = Vec::with_capacity(outputs.len());
        for output in outputs {
            let topic = match &output.output {
                None => spec.output.as_str(),
                Some(name) => spec
                    .named_outputs
                    .get(name)
                    .map(String::as_str)
                    .ok_or_else(|| Fault::UnknownOutput(name.clone()))?,
            };
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(topic).timestamp(output.timestamp.unwrap_or(default_timestamp));
            if let Some(key) = &output.key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = &output.value {
                record = record.payload(value.as_slice());
            }
            if !output.headers.is_empty() {
                record = record.headers(headers(&output.headers));
            }
            loop {
                match self.plan.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err((e, _)) => return Err(Fault::Produce(e)),
                }
            }
        }
        for delivery in deliveries {
            match futures::executor::block_on(delivery) {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(Fault::Produce(e)),
                Err(_) => {
                    return Err(Fault::Produce(KafkaError::Canceled));
                }
            }
        }
        Ok(())
    }

    /// Commits the offset the last delivered batch reached, if any.
    fn commit(&mut self, mode: CommitMode) {
        let Some(offset) = self.uncommitted else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        if let Err(e) =
            tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset))
        {
            tracing::error!(task = &*self.label, error = %e, "bad offset");
            return;
        }
        match self.consumer.commit(&tpl, mode) {
            Ok(()) => {
                if matches!(mode, CommitMode::Sync) {
                    self.uncommitted = None;
                }
            }
            Err(e) => {
                tracing::warn!(task = &*self.label, error = %e, offset, "offset commit failed; the batch may be replayed")
            }
        }
    }
}

fn input_record(message: &BorrowedMessage<'_>) -> InputRecord {
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    key: h.key.to_owned(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect()
        })
        .unwrap_or_default();
    InputRecord {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: message.timestamp().to_millis().unwrap_or(-1),
        offset: message.offset(),
    }
}

fn headers(list: &[Header]) -> OwnedHeaders {
    list.iter().fold(OwnedHeaders::new(), |hs, h| {
        hs.insert(rdkafka::message::Header {
            key: &h.key,
            value: h.value.as_deref(),
        })
    })
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

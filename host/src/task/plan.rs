//! What a pipeline hands its tasks: the plan every task of a step shares,
//! the partition each one takes over, and what each hands back.

use super::TaskServices;
use super::settings::TaskSettings;
use crate::kafka::{FetchQueue, KafkaSettings, Producer};
use crate::runtime::{CompiledModule, Guest, Runtime};
use crate::state::PipelineDb;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The runtime as tasks use it: guests whose imports reach a task.
pub type TaskRuntime = Runtime<TaskServices>;
/// A module compiled for tasks' guests.
pub type TaskModule = CompiledModule<TaskServices>;
/// A task's guest instance.
pub type TaskGuest = Guest<TaskServices>;

/// What every task of one pipeline step shares.
pub struct TaskPlan {
    /// How the tasks behave.
    pub settings: TaskSettings,
    /// The step's input topics.
    pub inputs: Vec<String>,
    /// Where the step's default output goes: the next step's repartition
    /// topic, or the pipeline's output after the last step.
    pub output: String,
    /// The pipeline's named outputs: output name -> topic.
    pub named_outputs: BTreeMap<String, String>,
    /// The step's changelog topic.
    pub changelog: String,
    /// Whether each commit is a Kafka transaction (exactly-once, or a step
    /// feeding another step: see `producer`).
    pub transactional: bool,
    /// Where records the guest fails on go, under the dead-letter policy.
    pub dead_letter: Option<String>,
    /// The pipeline's state store.
    pub db: Arc<PipelineDb>,
    /// How to reach Kafka, for restore consumers.
    pub kafka: KafkaSettings,
    /// The compiled module of the step.
    pub module: TaskModule,
    /// The engine.
    pub runtime: Arc<TaskRuntime>,
    /// The pipeline's producer.
    pub producer: Producer,
    /// The step's consumer group.
    pub group: String,
    /// The daemon's task slots, one of which each task runs in.
    pub slots: Arc<super::TaskSlots>,
}

impl TaskPlan {
    /// Every topic the step's tasks write to.
    pub fn written_topics(&self) -> Vec<&str> {
        let mut topics = vec![self.output.as_str(), self.changelog.as_str()];
        topics.extend(self.named_outputs.values().map(String::as_str));
        topics.extend(self.dead_letter.as_deref());
        topics.sort_unstable();
        topics.dedup();
        topics
    }

    /// Why Kafka refuses the tasks' writes, if it does, as their status
    /// says it (see [`crate::kafka::refused_writes`]).
    pub fn refused_writes(&self) -> Option<String> {
        crate::kafka::refused_writes(&self.kafka, &self.written_topics())
    }
}

/// A partition assigned to this daemon, as its task takes it over.
pub struct Assignment<C: ConsumerContext + 'static> {
    /// The input topic.
    pub topic: String,
    /// The input partition.
    pub partition: i32,
    /// The task's partition of the step's changelog: the input partition's
    /// place among all of the step's input partitions.
    pub changelog_partition: i32,
    /// How many partitions the input topic has.
    pub topic_partitions: i32,
    /// The partition's queue of fetched records.
    pub queue: FetchQueue<C>,
    /// The step's consumer, which fetches the partition.
    pub consumer: Arc<BaseConsumer<C>>,
}

/// What a finished task hands back to its pipeline.
pub struct TaskExit<C: ConsumerContext + 'static> {
    /// The partition's queue, for the next task on this partition.
    pub queue: FetchQueue<C>,
}

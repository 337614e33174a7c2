//! Pipelines: their specs, the manager that creates, persists and operates
//! them, and the runner that executes one on this daemon.

mod manager;
mod query;
mod registry;
mod runner;
mod spec;

pub use manager::{DaemonIdentity, LocalAnswer, ManagerError, PipelineManager, PipelineView};
pub use query::scan_limit;
pub use runner::{PartitionView, PipelineRunner, RunnerStatus, StepTasks, TopicPartition};
pub use spec::{
    ErrorPolicy, Guarantee, InternalNames, Limits, PipelineSpec, SpecError, StartFrom, check_name,
};

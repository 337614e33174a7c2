//! Pipelines: their specs, the manager that creates, persists and operates
//! them, and the runner that executes one on this daemon.

mod manager;
mod query;
mod registry;
mod runner;
mod spec;

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, poisoned or not: nothing the pipeline modules guard can
/// be left half-updated by a panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub use manager::{DaemonIdentity, LocalAnswer, ManagerError, PipelineManager, PipelineView};
pub use query::scan_limit;
pub use runner::{PartitionView, PipelineRunner, RunnerStatus, StepTasks, TopicPartition};
pub use spec::{
    ErrorPolicy, Guarantee, InternalNames, Limits, PipelineSpec, SpecError, StartFrom, check_name,
};

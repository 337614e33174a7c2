//! Pipelines: their specs, the registry every daemon follows to learn
//! which exist, the pipelines this daemon runs, and the manager that the
//! control plane asks to create, operate and query them.
//!
//! A request goes `manager` -> `cluster` (published to the `registry`
//! topic) -> every daemon's `appliers` (a thread per pipeline changing)
//! -> its `local` pipelines -> a `runner` per pipeline (one consumer per
//! step) -> a task per input partition (`crate::task`).

mod appliers;
mod cluster;
mod error;
mod local;
mod manager;
mod query;
mod registry;
mod runner;
mod signing;
mod stored;
mod stores;
mod view;

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, poisoned or not: nothing the pipeline modules guard can
/// be left half-updated by a panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub use cluster::DaemonIdentity;
pub use eddy_spec::{
    ErrorPolicy, Guarantee, InternalNames, Limits, LimitsRequest, PipelineSpec, Rules, SpecError,
    SpecRequest, StartFrom,
};
pub use error::ManagerError;
pub use manager::{ManagerOptions, PipelineManager};
pub use query::{LocalAnswer, StateAnswer, StateEntry, StateQuery, StateRead, StateScan};
pub use runner::{PartitionView, PipelineRunner, RunnerStatus, StepTasks, TopicPartition};
pub use signing::{ClusterSecret, SECRET_ENV, SecretError};
pub use view::{PartitionStatus, PipelineState, PipelineView};

//! How a pipeline's tasks behave: what the pipeline layer resolves from a
//! spec and hands down, so a task never reads the spec itself.

use crate::runtime::GuestLimits;
pub use eddy_spec::{ErrorPolicy, GuestBudgets, StartFrom};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What every task of one pipeline step runs by.
#[derive(Clone, Debug)]
pub struct TaskSettings {
    /// The pipeline's name.
    pub pipeline: String,
    /// The step's position in the pipeline, from 0.
    pub step: u32,
    /// Whether the pipeline has more than one step (task labels then name
    /// the step).
    pub multi_step: bool,
    /// The step's module reference (a digest, or `builtin:<name>`), which
    /// dead letters name.
    pub module: String,
    /// Where a partition without a committed offset starts.
    pub start_from: StartFrom,
    /// What happens to records the guest fails on.
    pub error_policy: ErrorPolicy,
    /// Limits on each guest instance and call.
    pub guest: GuestLimits,
    /// Most records per guest call.
    pub max_batch_records: u32,
    /// How long a batch waits to fill once its first record arrived.
    pub batch_linger: Duration,
    /// How often a task commits (besides when its input pauses).
    pub commit_interval: Duration,
    /// How long a transaction may stay open.
    pub transaction_timeout: Duration,
    /// How many daemons besides a partition's owner keep its state warm.
    pub standby_replicas: u32,
    /// The pipeline's configuration, as guests see it.
    pub config: Arc<BTreeMap<String, String>>,
    /// What each task's guest may make the daemon hold (the daemon's).
    pub budgets: GuestBudgets,
}

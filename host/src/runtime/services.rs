//! What a guest's imports reach. The runtime implements the WIT imports
//! (`host_api`) by calling into a [`GuestServices`] that whoever runs the
//! guest provides, and never names that type: a task keeps its state,
//! timers and counters, and decides what they mean; the runtime only
//! translates between the guest's types and the host's. This is how
//! wasmtime-wasi's `WasiView` lets the embedder own its store data.

use crate::state::{Entries, StateError, Timer};
use std::collections::BTreeMap;
use std::ops::Bound;

/// The host services one guest instance calls, implemented by its
/// embedder (in the daemon, a task's `TaskServices`).
pub trait GuestServices: Send + 'static {
    /// Names the guest in logs, e.g. `pipeline/topic-partition`.
    fn label(&self) -> &str;

    /// A guest call starts: budgets per call count from here.
    fn call_started(&mut self);

    /// A message the guest logs.
    fn log(&mut self, level: tracing::Level, message: &str);

    /// The pipeline's configuration.
    fn config(&self) -> &BTreeMap<String, String>;

    /// The value under the guest's `key`, this batch's writes included.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;

    /// Buffers a write, which commits with the batch.
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError>;

    /// Buffers a delete, which commits with the batch.
    fn delete(&mut self, key: Vec<u8>) -> Result<(), StateError>;

    /// Up to `limit` entries within the bounds, in key order.
    fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError>;

    /// Up to `limit` entries whose key starts with `prefix`, after
    /// `start_after` when given, in key order.
    fn scan_prefix(
        &mut self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError>;

    /// Sets a timer; setting one that is pending changes nothing.
    fn set_timer(&mut self, timer: Timer) -> Result<(), OverBudget>;

    /// Cancels a pending timer, if there is one.
    fn cancel_timer(&mut self, timer: Timer);

    /// The highest record timestamp before the current batch, if any.
    fn stream_time(&self) -> Option<i64>;

    /// Adds `delta` to the guest's counter `name`.
    fn increment(&mut self, name: &str, delta: u64) -> Result<(), OverBudget>;
}

/// A host-side budget a guest's host call ran over (timers, counters; state
/// writes say it with [`StateError::OverBudget`]): the call stops, whatever
/// the guest would do with an error, and fails like a guest error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OverBudget(pub String);

/// Where a guest instance runs, handed to its `init`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestInfo {
    /// The pipeline's name.
    pub pipeline: String,
    /// The step's position in the pipeline, from 0.
    pub step: u32,
    /// The input partition whose records and state the instance handles.
    pub partition: i32,
}

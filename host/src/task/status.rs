//! What a task reports about itself, read by the control plane while the
//! task runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Counters and the last error of one partition's task. Survives the task,
/// so the status shows what happened to a task that stopped.
#[derive(Debug)]
pub struct TaskStatus {
    records_in: AtomicU64,
    records_out: AtomicU64,
    committed: AtomicI64,
    assigned: AtomicBool,
    failed: AtomicBool,
    last_error: Mutex<String>,
}

impl Default for TaskStatus {
    fn default() -> Self {
        Self {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            committed: AtomicI64::new(-1),
            assigned: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
        }
    }
}

impl TaskStatus {
    pub(crate) fn record_batch(&self, records_in: usize, records_out: usize, next_offset: i64) {
        self.records_in
            .fetch_add(records_in as u64, Ordering::Relaxed);
        self.records_out
            .fetch_add(records_out as u64, Ordering::Relaxed);
        self.committed.store(next_offset, Ordering::Relaxed);
    }

    pub(crate) fn record_output(&self, records_out: usize) {
        self.records_out
            .fetch_add(records_out as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_assigned(&self, assigned: bool) {
        self.assigned.store(assigned, Ordering::Relaxed);
    }

    /// Marks the task failed with `error`.
    pub(crate) fn fail(&self, error: String) {
        self.failed.store(true, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Clears a failure (the task was restarted).
    pub(crate) fn clear_failure(&self) {
        self.failed.store(false, Ordering::Relaxed);
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Records processed since the daemon started.
    pub fn records_in(&self) -> u64 {
        self.records_in.load(Ordering::Relaxed)
    }

    /// Records produced since the daemon started.
    pub fn records_out(&self) -> u64 {
        self.records_out.load(Ordering::Relaxed)
    }

    /// The next offset to process as this task last committed it, or -1.
    pub fn committed(&self) -> i64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Whether this daemon currently runs the partition.
    pub fn assigned(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
    }

    /// Whether the task stopped on an error.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The last error, empty if none.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

//! What a task reports about itself, read by the control plane while the
//! task runs.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Counters and the last error of one partition's task. Survives the task,
/// so the status shows what happened to a task that stopped.
#[derive(Debug)]
pub struct TaskStatus {
    records_in: AtomicU64,
    records_out: AtomicU64,
    committed: AtomicI64,
    assigned: AtomicBool,
    failed: AtomicBool,
    retries: AtomicU32,
    next_retry_at_ms: AtomicI64,
    last_error: Mutex<String>,
    restore: Mutex<RestoreProgress>,
    counters: Mutex<BTreeMap<String, u64>>,
    off_partition_keys: AtomicU64,
    /// Processor call durations in microseconds.
    calls: Mutex<Histogram<u64>>,
}

/// Percentiles of a task's processor call durations, in microseconds
/// (the histogram's unit, and the status API's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallTimes {
    /// Calls timed.
    pub calls: u64,
    /// Median duration.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Longest.
    pub max_us: u64,
}

/// Two significant digits: 1 % precision, a few KiB per task.
const CALL_TIME_DIGITS: u8 = 2;

/// Where a task's state restore stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreProgress {
    /// Whether the task is replaying its changelog now; queries wait.
    pub restoring: bool,
    /// The changelog offsets the restore replays, `start..end`.
    pub start: i64,
    /// See `start`.
    pub end: i64,
    /// The next changelog offset to replay.
    pub position: i64,
    /// Changelog records the last restore replayed.
    pub replayed: u64,
    /// How long the last restore took.
    pub duration: Duration,
}

impl Default for TaskStatus {
    fn default() -> Self {
        Self {
            records_in: AtomicU64::new(0),
            off_partition_keys: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            committed: AtomicI64::new(-1),
            assigned: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            retries: AtomicU32::new(0),
            next_retry_at_ms: AtomicI64::new(0),
            last_error: Mutex::new(String::new()),
            restore: Mutex::new(RestoreProgress::default()),
            counters: Mutex::new(BTreeMap::new()),
            calls: Mutex::new(call_histogram()),
        }
    }
}

/// An auto-resizing histogram, so no duration is ever out of range.
fn call_histogram() -> Histogram<u64> {
    let mut histogram = Histogram::new(CALL_TIME_DIGITS)
        .expect("two significant digits are within the one to five the crate takes");
    histogram.auto(true);
    histogram
}

impl TaskStatus {
    pub(crate) fn record_batch(&self, records_in: usize, records_out: usize) {
        self.records_in
            .fetch_add(records_in as u64, Ordering::Relaxed);
        self.records_out
            .fetch_add(records_out as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_off_partition_keys(&self, count: u64) {
        self.off_partition_keys.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn set_committed(&self, next_offset: i64) {
        self.committed.store(next_offset, Ordering::Relaxed);
    }

    pub(crate) fn restore_started(&self, start: i64, end: i64) {
        *lock(&self.restore) = RestoreProgress {
            restoring: true,
            start,
            end,
            position: start,
            replayed: 0,
            duration: Duration::ZERO,
        };
    }

    pub(crate) fn restore_progress(&self, position: i64, replayed: u64) {
        let mut restore = lock(&self.restore);
        restore.position = position;
        restore.replayed = replayed;
    }

    pub(crate) fn restore_finished(&self, replayed: u64, duration: Duration) {
        let mut restore = lock(&self.restore);
        restore.restoring = false;
        restore.position = restore.end;
        restore.replayed = replayed;
        restore.duration = duration;
    }

    /// Marks a restore that ended without finishing (failed or stopped).
    pub(crate) fn restore_stopped(&self) {
        lock(&self.restore).restoring = false;
    }

    /// Adds `delta` to the counter `name` (late records dropped, say).
    pub(crate) fn count(&self, name: &str, delta: u64) {
        self.count_within(name, delta, usize::MAX);
    }

    /// Adds `delta` to the guest's counter `name`, unless the name is new
    /// and the task already has `max` counters; `false` then.
    pub(crate) fn count_within(&self, name: &str, delta: u64, max: usize) -> bool {
        let mut counters = lock(&self.counters);
        let known = counters.len();
        match counters.get_mut(name) {
            Some(n) => *n = n.saturating_add(delta),
            None if known >= max => return false,
            None => {
                counters.insert(name.to_owned(), delta);
            }
        }
        true
    }

    /// The task's restore, current or last.
    pub fn restore(&self) -> RestoreProgress {
        lock(&self.restore).clone()
    }

    /// Counters the guest reported.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        lock(&self.counters).clone()
    }

    /// Records one processor call's duration.
    pub(crate) fn record_call(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // Auto-resizing: recording cannot fail short of memory.
        let _ = lock(&self.calls).record(micros.max(1));
    }

    /// Percentiles of the processor calls so far.
    pub fn call_times(&self) -> CallTimes {
        let calls = lock(&self.calls);
        CallTimes {
            calls: calls.len(),
            p50_us: calls.value_at_quantile(0.5),
            p99_us: calls.value_at_quantile(0.99),
            max_us: calls.max(),
        }
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
        // The error first: whoever sees the task failed sees why.
        *lock(&self.last_error) = error;
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Records the `retries`th failure since the task last made progress;
    /// it restarts at `next_retry_at_ms` (Unix ms).
    pub(crate) fn retry_at(&self, retries: u32, next_retry_at_ms: i64) {
        self.retries.store(retries, Ordering::Relaxed);
        self.next_retry_at_ms
            .store(next_retry_at_ms, Ordering::Relaxed);
    }

    /// Marks the scheduled restart as under way.
    pub(crate) fn retrying(&self) {
        self.next_retry_at_ms.store(0, Ordering::Relaxed);
    }

    /// Clears a failure: the task made progress, or a new task started.
    pub(crate) fn clear_failure(&self) {
        self.failed.store(false, Ordering::Relaxed);
        self.retries.store(0, Ordering::Relaxed);
        self.next_retry_at_ms.store(0, Ordering::Relaxed);
        lock(&self.last_error).clear();
    }

    /// Failures since the task last made progress; it restarts after each.
    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }

    /// When the next restart is due (Unix ms), 0 if none is scheduled.
    pub fn next_retry_at_ms(&self) -> i64 {
        self.next_retry_at_ms.load(Ordering::Relaxed)
    }

    /// Records processed since the daemon started.
    pub fn records_in(&self) -> u64 {
        self.records_in.load(Ordering::Relaxed)
    }

    /// Keyed inputs that arrived in another partition than their key's
    /// murmur2 partition, since the daemon started.
    pub fn off_partition_keys(&self) -> u64 {
        self.off_partition_keys.load(Ordering::Relaxed)
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
        lock(&self.last_error).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values: a panic cannot leave them half-updated.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_times_give_percentiles_to_one_percent() {
        let status = TaskStatus::default();
        assert_eq!(status.call_times().calls, 0);
        for ms in 1..=100 {
            status.record_call(Duration::from_millis(ms));
        }
        let times = status.call_times();
        assert_eq!(times.calls, 100);
        let near = |us: u64, ms: u64| us.abs_diff(ms * 1000) <= ms * 1000 / 100;
        assert!(near(times.p50_us, 50), "{times:?}");
        assert!(near(times.p99_us, 99), "{times:?}");
        assert!(near(times.max_us, 100), "{times:?}");
        // An hour-long call still fits: the histogram grows.
        status.record_call(Duration::from_secs(3600));
        assert!(near(status.call_times().max_us, 3_600_000));
    }
}

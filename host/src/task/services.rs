//! What a task's guest reaches through its imports: the task's state with
//! the batch's pending writes, its timers, the pipeline's configuration and
//! the task's counters. The runtime calls these through
//! [`GuestServices`]; the task uses the rest between calls (rolling back a
//! failed call, firing due timers, committing the batch).

use super::TaskStatus;
use crate::runtime::GuestServices;
use crate::state::{
    Entries, StateError, TaskState, TimeDomain, Timer, WriteBatch, timer_from_key, timer_key,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

/// The host services one task hands its guest.
pub struct TaskServices {
    /// Names the task in logs: `pipeline/topic-partition`.
    pub label: Arc<str>,
    /// The pipeline's configuration.
    pub config: Arc<BTreeMap<String, String>>,
    /// The task's state, with the current batch's writes.
    pub state: TaskState,
    /// Pending timers, an index over the timers in `state`.
    pub timers: BTreeSet<Timer>,
    /// The highest record timestamp the task has seen.
    pub stream_time: Option<i64>,
    /// The task's status, where guest counters go.
    pub status: Arc<TaskStatus>,
}

impl TaskServices {
    /// Services over `state`, with its stored timers indexed.
    pub fn new(
        label: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
        state: TaskState,
        stream_time: Option<i64>,
        status: Arc<TaskStatus>,
    ) -> Result<Self, StateError> {
        let timers = state.stored_timers()?.into_iter().collect();
        Ok(Self {
            label,
            config,
            state,
            timers,
            stream_time,
            status,
        })
    }

    /// Puts the batch's pending writes back to `pending` (taken earlier with
    /// `state.pending().clone()`), rebuilding the timer index to match.
    pub fn rollback(&mut self, pending: WriteBatch) -> Result<(), StateError> {
        self.timers = self.state.stored_timers()?.into_iter().collect();
        for (key, value) in &pending {
            if let Some(timer) = timer_from_key(key) {
                match value {
                    Some(_) => self.timers.insert(timer),
                    None => self.timers.remove(&timer),
                };
            }
        }
        self.state.set_pending(pending);
        Ok(())
    }

    /// Removes and returns the timers of `domain` due at `now`, in time
    /// order; their removal commits with the batch that fires them.
    pub fn take_due_timers(&mut self, domain: TimeDomain, now: i64) -> Vec<Timer> {
        let due: Vec<Timer> = self
            .timers
            .iter()
            .take_while(|timer| timer.at <= now)
            .filter(|timer| timer.domain == domain)
            .cloned()
            .collect();
        for timer in &due {
            self.timers.remove(timer);
            self.state.put_raw(timer_key(timer), None);
        }
        due
    }

    /// Moves stream time up to `timestamp` if it is later.
    pub fn advance_stream_time(&mut self, timestamp: i64) {
        self.stream_time = Some(self.stream_time.map_or(timestamp, |t| t.max(timestamp)));
    }
}

impl GuestServices for TaskServices {
    fn label(&self) -> &str {
        &self.label
    }

    fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.state.get(key)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        self.state.put(key, value)
    }

    fn delete(&mut self, key: Vec<u8>) -> Result<(), StateError> {
        self.state.delete(key)
    }

    fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError> {
        self.state.scan(start, end, limit)
    }

    fn scan_prefix(
        &mut self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError> {
        self.state.scan_prefix(prefix, start_after, limit)
    }

    fn set_timer(&mut self, timer: Timer) {
        self.state.put_raw(timer_key(&timer), Some(Vec::new()));
        self.timers.insert(timer);
    }

    fn cancel_timer(&mut self, timer: Timer) {
        if self.timers.remove(&timer) {
            self.state.put_raw(timer_key(&timer), None);
        }
    }

    fn stream_time(&self) -> Option<i64> {
        self.stream_time
    }

    fn increment(&mut self, name: &str, delta: u64) {
        self.status.count(name, delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryStore, StateLimits};

    fn services() -> TaskServices {
        let state = TaskState::new(Box::new(MemoryStore::default()), StateLimits::default());
        TaskServices::new("t".into(), Arc::default(), state, None, Arc::default())
            .expect("an empty store has no timers to read")
    }

    fn timer(at: i64, domain: TimeDomain, key: &[u8]) -> Timer {
        Timer {
            at,
            domain,
            key: key.to_vec(),
        }
    }

    #[test]
    fn due_timers_of_one_domain_fire_in_time_order_and_a_rollback_restores_them() {
        let mut s = services();
        s.set_timer(timer(30, TimeDomain::EventTime, b"b"));
        s.set_timer(timer(10, TimeDomain::EventTime, b"a"));
        s.set_timer(timer(20, TimeDomain::WallClock, b"w"));
        s.set_timer(timer(50, TimeDomain::EventTime, b"later"));
        let savepoint = s.state.pending().clone();
        let due = s.take_due_timers(TimeDomain::EventTime, 30);
        assert_eq!(
            due,
            [
                timer(10, TimeDomain::EventTime, b"a"),
                timer(30, TimeDomain::EventTime, b"b")
            ]
        );
        assert_eq!(s.timers.len(), 2, "the wall-clock and the later timer stay");
        s.rollback(savepoint).expect("rolls back");
        assert_eq!(
            s.timers.len(),
            4,
            "a rolled-back batch fires its timers again"
        );
        s.cancel_timer(timer(50, TimeDomain::EventTime, b"later"));
        assert_eq!(s.take_due_timers(TimeDomain::EventTime, 100).len(), 2);
    }
}

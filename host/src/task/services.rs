//! What a task's guest reaches through its imports: the task's state with
//! the batch's pending writes, its timers, the pipeline's configuration and
//! the task's counters. The runtime calls these through
//! [`GuestServices`]; the task uses the rest between calls (rolling back a
//! failed call, firing due timers, committing the batch).

use super::TaskStatus;
use super::guest_log::GuestLog;
use super::settings::GuestBudgets;
use crate::runtime::{GuestServices, OverBudget};
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
    /// What the guest may make the host hold.
    budgets: GuestBudgets,
    /// Pending state bytes when the current call started.
    call_mark: u64,
    log: GuestLog,
}

impl TaskServices {
    /// Services over `state`, with its stored timers indexed.
    pub fn new(
        label: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
        state: TaskState,
        stream_time: Option<i64>,
        status: Arc<TaskStatus>,
        budgets: GuestBudgets,
    ) -> Result<Self, StateError> {
        let timers = state.stored_timers()?.into_iter().collect();
        Ok(Self {
            label,
            config,
            state,
            timers,
            stream_time,
            status,
            budgets,
            call_mark: 0,
            log: GuestLog::new(budgets.log_bytes_per_second),
        })
    }

    /// Whether the open commit holds enough state writes to commit now,
    /// before its interval is up.
    pub fn commit_due_to_size(&self) -> bool {
        self.state.pending_bytes() >= self.budgets.commit_state_bytes
    }

    /// Fails the call whose writes took pending state over its budget.
    fn within_call_budget(&self) -> Result<(), StateError> {
        let added = self.state.pending_bytes().saturating_sub(self.call_mark);
        let budget = self.budgets.max_call_state_bytes;
        if added > budget {
            return Err(StateError::OverBudget(format!(
                "one call wrote {added} bytes of state; a call may write at most {budget} \
                 (the daemon's limits.max-call-state-bytes): spread the writes over more \
                 records, or keep large values elsewhere"
            )));
        }
        Ok(())
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

/// Longest counter name a guest may use.
const MAX_COUNTER_NAME_BYTES: usize = 128;

impl GuestServices for TaskServices {
    fn label(&self) -> &str {
        &self.label
    }

    fn call_started(&mut self) {
        self.call_mark = self.state.pending_bytes();
    }

    fn log(&mut self, level: tracing::Level, message: &str) {
        self.log.log(&self.label, &self.status, level, message);
    }

    fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.state.get(key)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        self.state.put(key, value)?;
        self.within_call_budget()
    }

    fn delete(&mut self, key: Vec<u8>) -> Result<(), StateError> {
        self.state.delete(key)?;
        self.within_call_budget()
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

    fn set_timer(&mut self, timer: Timer) -> Result<(), OverBudget> {
        let max_key = self.state.limits().max_key_bytes;
        if timer.key.len() > max_key {
            return Err(OverBudget(format!(
                "a timer's key of {} bytes exceeds the limit of {max_key} bytes",
                timer.key.len()
            )));
        }
        let max = self.budgets.max_timers as usize;
        if self.timers.len() >= max && !self.timers.contains(&timer) {
            return Err(OverBudget(format!(
                "the task has {max} timers pending, the most it may have (the daemon's \
                 limits.max-timers): set one timer per window or key group, not per record"
            )));
        }
        self.state.put_raw(timer_key(&timer), Some(Vec::new()));
        self.timers.insert(timer);
        self.within_call_budget()
            .map_err(|e| OverBudget(e.to_string()))
    }

    fn cancel_timer(&mut self, timer: Timer) {
        if self.timers.remove(&timer) {
            self.state.put_raw(timer_key(&timer), None);
        }
    }

    fn stream_time(&self) -> Option<i64> {
        self.stream_time
    }

    fn increment(&mut self, name: &str, delta: u64) -> Result<(), OverBudget> {
        if name.len() > MAX_COUNTER_NAME_BYTES {
            return Err(OverBudget(format!(
                "a counter name of {} bytes is longer than the {MAX_COUNTER_NAME_BYTES} \
                 a name may have",
                name.len()
            )));
        }
        let max = self.budgets.max_counters;
        if !self.status.count_within(name, delta, max as usize) {
            return Err(OverBudget(format!(
                "the guest counted `{name}`, a new counter beyond the {max} names a task may \
                 have (the daemon's limits.max-counters): count kinds of things, not keys"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryStore, StateLimits};

    fn services() -> TaskServices {
        let state = TaskState::new(Box::new(MemoryStore::default()), StateLimits::default());
        TaskServices::new(
            "t".into(),
            Arc::default(),
            state,
            None,
            Arc::default(),
            GuestBudgets {
                max_timers: 5,
                max_counters: 2,
                max_call_state_bytes: 10_000,
                ..GuestBudgets::default()
            },
        )
        .expect("an empty store has no timers to read")
    }

    impl TaskServices {
        fn set_timer_ok(&mut self, timer: Timer) {
            self.set_timer(timer).expect("within the budget");
        }
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
        s.set_timer_ok(timer(30, TimeDomain::EventTime, b"b"));
        s.set_timer_ok(timer(10, TimeDomain::EventTime, b"a"));
        s.set_timer_ok(timer(20, TimeDomain::WallClock, b"w"));
        s.set_timer_ok(timer(50, TimeDomain::EventTime, b"later"));
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

    #[test]
    fn budgets_stop_state_timer_and_counter_floods() {
        let mut s = services();
        s.call_started();
        s.put(b"k".to_vec(), vec![0; 5000])
            .expect("within the call's budget");
        let over = s.put(b"l".to_vec(), vec![0; 5000]);
        assert!(matches!(over, Err(StateError::OverBudget(_))), "{over:?}");
        // The next call starts from what is pending.
        s.call_started();
        s.put(b"m".to_vec(), vec![0; 5000])
            .expect("a new call's budget");

        for at in 0..5 {
            s.set_timer_ok(timer(at, TimeDomain::EventTime, b"t"));
        }
        s.set_timer_ok(timer(0, TimeDomain::EventTime, b"t"));
        let error = s
            .set_timer(timer(9, TimeDomain::EventTime, b"t"))
            .expect_err("a sixth timer is over the budget");
        assert!(error.0.contains("limits.max-timers"), "{error}");
        s.take_due_timers(TimeDomain::EventTime, 0);
        s.set_timer_ok(timer(9, TimeDomain::EventTime, b"t"));
        let error = s
            .set_timer(timer(99, TimeDomain::WallClock, &[0; 5000]))
            .expect_err("a timer key is a state key");
        assert!(error.0.contains("key of 5000 bytes"), "{error}");

        s.increment("a", 1).expect("first name");
        s.increment("b", 1).expect("second name");
        s.increment("a", 1).expect("a known name");
        let error = s.increment("c", 1).expect_err("a third name");
        assert!(error.0.contains("limits.max-counters"), "{error}");
        assert_eq!(s.status.counters().get("a"), Some(&2));
        assert!(s.increment(&"n".repeat(200), 1).is_err());
    }
}

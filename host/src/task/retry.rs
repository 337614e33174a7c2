//! When a failed task under the `fail` policy restarts: exponential backoff
//! from one second, doubling to a minute, so a poisoned record or a broker
//! outage costs a few restarts a minute rather than a hot loop, and a
//! transient fault heals on its own.

use std::time::{Duration, Instant};

/// The first wait after a failure.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between restarts.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A task's restarts since it last made progress.
#[derive(Debug, Default)]
pub(super) struct Retry {
    /// Failures since the task last made progress.
    failures: u32,
    /// When the next restart is due; `None` while the task runs.
    due: Option<Instant>,
}

impl Retry {
    /// Records a failure; the wait before the restart it schedules.
    pub(super) fn failed(&mut self, now: Instant) -> Duration {
        let wait = backoff(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.due = Some(now + wait);
        wait
    }

    /// Pushes the scheduled restart to at least `wait` from `now`; the
    /// wait before it.
    pub(super) fn wait_at_least(&mut self, wait: Duration, now: Instant) -> Duration {
        let due = self.due.map_or(now + wait, |due| due.max(now + wait));
        self.due = Some(due);
        due.saturating_duration_since(now)
    }

    /// Whether the task may start now (it never failed, or its wait is over).
    pub(super) fn due(&self, now: Instant) -> bool {
        self.due.is_none_or(|due| now >= due)
    }

    /// How long until the restart is due.
    pub(super) fn remaining(&self, now: Instant) -> Duration {
        self.due
            .map_or(Duration::ZERO, |due| due.saturating_duration_since(now))
    }

    /// Marks the restart as under way.
    pub(super) fn started(&mut self) {
        self.due = None;
    }

    /// Restarts so far, since the task last made progress.
    pub(super) fn restarts(&self) -> u32 {
        self.failures
    }

    /// The task made progress: the next failure waits the first backoff.
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The wait after `failures` earlier failures.
fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_on_progress() {
        let now = Instant::now();
        let mut retry = Retry::default();
        assert!(retry.due(now));
        let waits: Vec<u64> = (0..9).map(|_| retry.failed(now).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry.restarts(), 9);
        assert!(!retry.due(now));
        assert!(retry.due(now + MAX_BACKOFF));
        assert_eq!(retry.remaining(now), MAX_BACKOFF);
        retry.reset();
        assert_eq!(retry.failed(now), FIRST_BACKOFF);
        for _ in 0..100 {
            retry.failed(now);
        }
        assert_eq!(
            retry.failed(now),
            MAX_BACKOFF,
            "no overflow after many failures"
        );
    }

    #[test]
    fn a_fenced_task_waits_at_least_the_given_time() {
        let now = Instant::now();
        let mut retry = Retry::default();
        retry.failed(now);
        let wait = retry.wait_at_least(Duration::from_secs(6), now);
        assert_eq!(wait, Duration::from_secs(6));
        assert!(!retry.due(now + Duration::from_secs(5)));
        assert!(retry.due(now + Duration::from_secs(6)));
        // A longer backoff already scheduled is kept.
        for _ in 0..5 {
            retry.failed(now);
        }
        assert_eq!(
            retry.wait_at_least(Duration::from_secs(6), now),
            Duration::from_secs(32)
        );
    }
}

//! Timers as state keeps them: a guest's request to be called back once
//! stream time or the wall clock reaches a point, stored beside its data so
//! a timer pending at a crash fires once after the restart.

/// The clock a timer follows.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum TimeDomain {
    /// Stream time: the highest record timestamp the task has seen.
    EventTime,
    /// The host's wall clock.
    WallClock,
}

/// A pending timer, ordered by time, then domain, then key: the order in
/// which due timers fire.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Timer {
    /// When it is due, milliseconds since the Unix epoch.
    pub at: i64,
    /// The clock `at` is read on.
    pub domain: TimeDomain,
    /// The key it was set for (timers are per key).
    pub key: Vec<u8>,
}

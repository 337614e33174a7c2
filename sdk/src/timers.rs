//! Timers: be called back ([`Processor::on_timer`](crate::Processor::on_timer))
//! when stream time or the wall clock passes a point.
//!
//! Stream time is the highest record timestamp the task has seen; it only
//! moves as records arrive, so a replay fires the same timers at the same
//! points. Timers are per key: setting the same (domain, time, key) twice
//! sets it once.
//!
//! ```
//! use eddy_sdk::{timers, TimeDomain};
//! # #[derive(Default)] struct P;
//! # impl eddy_sdk::Processor for P {
//! #   fn process(&mut self, _: eddy_sdk::Record, _: &mut eddy_sdk::Emitter) -> eddy_sdk::Result { Ok(()) }
//! # }
//! # let _host = eddy_sdk::testing::TestHarness::<P>::new();
//! // Close a one-minute window for key "k" once stream time passes its end.
//! timers::set(TimeDomain::EventTime, 60_000, "k");
//! ```

/// The clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Stream time: the highest record timestamp the task has seen.
    EventTime,
    /// The host's wall clock.
    WallClock,
}

/// A timer whose time has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The clock it followed.
    pub domain: TimeDomain,
    /// The time it was set for, in milliseconds since the Unix epoch.
    pub at: i64,
    /// The key it was set for.
    pub key: Vec<u8>,
}

/// Asks for [`Processor::on_timer`](crate::Processor::on_timer) once `domain`'s
/// time reaches `at`.
pub fn set(domain: TimeDomain, at: i64, key: impl AsRef<[u8]>) {
    crate::host::timer_set(domain, at, key.as_ref());
}

/// Cancels a timer set with [`set`]; cancelling a missing timer does nothing.
pub fn cancel(domain: TimeDomain, at: i64, key: impl AsRef<[u8]>) {
    crate::host::timer_cancel(domain, at, key.as_ref());
}

/// The task's stream time as of the end of the previous batch, or `None`
/// before the first. [`crate::windows`] tracks it record by record.
pub fn stream_time() -> Option<i64> {
    crate::host::stream_time()
}

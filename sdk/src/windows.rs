//! Windows over event time, built on state and timers: tumbling, hopping and
//! session windows with a grace period, as in Kafka Streams.
//!
//! A record is added to the aggregate of every window it falls in. A window
//! closes once stream time passes its end plus the grace period; its result
//! then comes back from [`Windows::close`] (call it from
//! [`Processor::on_timer`](crate::Processor::on_timer)), exactly once, and
//! its state is deleted. A record whose windows have all closed is late: it
//! is dropped and counted as `late-records-dropped` in the pipeline status.
//!
//! Aggregates and their close timers live in the task's state, so open
//! windows survive a crash and close once after it.
//!
//! ```
//! use eddy_sdk::prelude::*;
//! use eddy_sdk::windows::Windows;
//! use std::time::Duration;
//!
//! /// Counts records per key per minute.
//! struct PerMinute(Windows);
//!
//! impl Default for PerMinute {
//!     fn default() -> Self {
//!         Self(Windows::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(5)))
//!     }
//! }
//!
//! impl Processor for PerMinute {
//!     fn process(&mut self, record: Record, _out: &mut Emitter) -> Result<()> {
//!         let key = record.key().unwrap_or_default().to_vec();
//!         self.0.add(&key, record.timestamp(), |count: &mut u64| *count += 1)?;
//!         Ok(())
//!     }
//!
//!     fn on_timer(&mut self, timer: Timer, out: &mut Emitter) -> Result<()> {
//!         if let Some(closed) = self.0.close::<u64>(&timer)? {
//!             let value = format!("{}@{}", closed.value, closed.window.start);
//!             out.emit(OutputRecord::new(value).with_key(closed.key));
//!         }
//!         Ok(())
//!     }
//! }
//! # fn main() {
//! let mut host = eddy_sdk::testing::TestHarness::<PerMinute>::new();
//! let out = host.process([
//!     Record::new("").with_key("a").with_timestamp(1_000),
//!     Record::new("").with_key("a").with_timestamp(59_000),
//!     Record::new("").with_key("a").with_timestamp(66_000), // closes [0, 60s)
//! ]).unwrap();
//! assert_eq!(out[0].value_str(), Some("2@0"));
//! # }
//! ```

use crate::{Error, TimeDomain, Timer, metrics, state, timers};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::Cell;
use std::time::Duration;

/// The counter late records are reported under.
pub const LATE_RECORDS: &str = "late-records-dropped";

/// A window: event times `start <= t < end`, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// The first millisecond in the window.
    pub start: i64,
    /// The first millisecond after it. For a session window, one past its
    /// last record.
    pub end: i64,
}

/// A value aggregated per window. Sessions that grow together are merged.
pub trait Aggregate: Default + Serialize + DeserializeOwned {
    /// Folds `other` (a later session of the same key) into `self`.
    fn merge(&mut self, other: Self);
}

macro_rules! sum_aggregate {
    ($($t:ty),*) => {$(
        impl Aggregate for $t {
            fn merge(&mut self, other: Self) {
                *self += other;
            }
        }
    )*};
}
sum_aggregate!(u32, u64, i64, f64);

/// A window that closed, with its aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct Closed<A> {
    /// The key the aggregate is for.
    pub key: Vec<u8>,
    /// The window.
    pub window: Window,
    /// Its aggregate.
    pub value: A,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Hopping { size: i64, advance: i64 },
    Session { gap: i64 },
}

/// What a record was added to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// At least one open window took it.
    Accepted,
    /// Every window it belongs to had closed: dropped and counted.
    Late,
}

/// A windowing scheme; keep one in the processor.
#[derive(Debug)]
pub struct Windows {
    kind: Kind,
    grace: i64,
    name: Vec<u8>,
    /// Stream time as this instance has seen it, record by record.
    observed: Cell<Option<i64>>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

impl Windows {
    /// Fixed-size, non-overlapping windows aligned to the epoch.
    pub fn tumbling(size: Duration) -> Self {
        Self::hopping(size, size)
    }

    /// Fixed-size windows starting every `advance`: a record falls in
    /// `size / advance` of them.
    pub fn hopping(size: Duration, advance: Duration) -> Self {
        let size = millis(size);
        let advance = millis(advance).min(size);
        Self::new(Kind::Hopping { size, advance })
    }

    /// Per key, records closer than `gap` to each other form one window.
    pub fn session(gap: Duration) -> Self {
        Self::new(Kind::Session { gap: millis(gap) })
    }

    fn new(kind: Kind) -> Self {
        Self {
            kind,
            grace: 0,
            name: b"w".to_vec(),
            observed: Cell::new(None),
        }
    }

    /// How long after its end a window still takes late records.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Names the windows' state, for a processor with several schemes.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.as_bytes().to_vec();
        self
    }

    /// Advances the observed stream time with `timestamp`; the new value.
    fn observe(&self, timestamp: i64) -> i64 {
        let host = timers::stream_time().unwrap_or(i64::MIN);
        let now = self
            .observed
            .get()
            .unwrap_or(i64::MIN)
            .max(host)
            .max(timestamp);
        self.observed.set(Some(now));
        now
    }

    /// The state key (and timer key) of `key`'s window starting at `start`:
    /// `0xff name 0x00 len(key) key start`, so one key's windows are
    /// adjacent and ordered by start.
    fn entry_key(&self, key: &[u8], start: i64) -> Vec<u8> {
        let mut k = self.key_prefix(key);
        k.extend_from_slice(&((start as u64) ^ (1 << 63)).to_be_bytes());
        k
    }

    fn key_prefix(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.name.len() + key.len() + 14);
        k.push(0xff);
        k.extend_from_slice(&self.name);
        k.push(0);
        k.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
        k.extend_from_slice(key);
        k
    }

    /// Splits an entry key back into (key, start), if it is one of ours.
    fn parse_entry_key(&self, k: &[u8]) -> Option<(Vec<u8>, i64)> {
        let rest = k
            .strip_prefix(&[0xff])?
            .strip_prefix(self.name.as_slice())?;
        let rest = rest.strip_prefix(&[0])?;
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let key = rest.get(4..4 + len)?;
        let start = rest.get(4 + len..)?;
        let start = u64::from_be_bytes(start.try_into().ok()?) ^ (1 << 63);
        Some((key.to_vec(), start as i64))
    }

    /// Adds a record at `timestamp` for `key` to its windows, updating each
    /// window's aggregate with `update`.
    pub fn add<A: Aggregate>(
        &self,
        key: &[u8],
        timestamp: i64,
        mut update: impl FnMut(&mut A),
    ) -> Result<Added, Error> {
        let now = self.observe(timestamp);
        match self.kind {
            Kind::Hopping { size, advance } => {
                let mut accepted = false;
                let first = (timestamp - size).div_euclid(advance) * advance + advance;
                let mut start = first;
                while start <= timestamp {
                    let end = start.saturating_add(size);
                    if end.saturating_add(self.grace) > now {
                        let k = self.entry_key(key, start);
                        let mut value: A = state::get_typed(&k)?.unwrap_or_default();
                        update(&mut value);
                        state::put_typed(&k, &value)?;
                        timers::set(TimeDomain::EventTime, end.saturating_add(self.grace), &k);
                        accepted = true;
                    }
                    start += advance;
                }
                Ok(self.verdict(accepted))
            }
            Kind::Session { gap } => self.add_to_session(key, timestamp, now, gap, update),
        }
    }

    fn verdict(&self, accepted: bool) -> Added {
        if accepted {
            Added::Accepted
        } else {
            metrics::increment(LATE_RECORDS, 1);
            Added::Late
        }
    }

    fn session_close_at(&self, end: i64, gap: i64) -> i64 {
        end.saturating_add(gap).saturating_add(self.grace)
    }

    fn add_to_session<A: Aggregate>(
        &self,
        key: &[u8],
        timestamp: i64,
        now: i64,
        gap: i64,
        mut update: impl FnMut(&mut A),
    ) -> Result<Added, Error> {
        // Sessions of this key within `gap` of the record merge with it.
        let mut merged = Window {
            start: timestamp,
            end: timestamp + 1,
        };
        let mut value = A::default();
        let mut absorbed = Vec::new();
        for entry in state::prefix(self.key_prefix(key)) {
            let (k, bytes) = entry?;
            let Some((_, start)) = self.parse_entry_key(&k) else {
                continue;
            };
            let (end, aggregate): (i64, A) = postcard::from_bytes(&bytes)?;
            if start - gap <= timestamp && timestamp < end + gap {
                merged.start = merged.start.min(start);
                merged.end = merged.end.max(end);
                value.merge(aggregate);
                absorbed.push((k, end));
            }
        }
        if self.session_close_at(merged.end, gap) <= now {
            return Ok(self.verdict(false));
        }
        for (k, end) in absorbed {
            timers::cancel(TimeDomain::EventTime, self.session_close_at(end, gap), &k);
            state::delete(&k)?;
        }
        update(&mut value);
        let k = self.entry_key(key, merged.start);
        state::put(&k, postcard::to_stdvec(&(merged.end, &value))?)?;
        timers::set(
            TimeDomain::EventTime,
            self.session_close_at(merged.end, gap),
            &k,
        );
        Ok(Added::Accepted)
    }

    /// The window `timer` closes, with its aggregate, if the timer is one of
    /// these windows'; its state is deleted. Other timers give `None`.
    pub fn close<A: Aggregate>(&self, timer: &Timer) -> Result<Option<Closed<A>>, Error> {
        if timer.domain != TimeDomain::EventTime {
            return Ok(None);
        }
        let Some((key, start)) = self.parse_entry_key(&timer.key) else {
            return Ok(None);
        };
        let Some(bytes) = state::get(&timer.key)? else {
            return Ok(None);
        };
        state::delete(&timer.key)?;
        let closed = match self.kind {
            Kind::Hopping { size, .. } => Closed {
                key,
                window: Window {
                    start,
                    end: start.saturating_add(size),
                },
                value: postcard::from_bytes(&bytes)?,
            },
            Kind::Session { .. } => {
                let (end, value): (i64, A) = postcard::from_bytes(&bytes)?;
                Closed {
                    key,
                    window: Window { start, end },
                    value,
                }
            }
        };
        Ok(Some(closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::testing::TestHarness;

    #[derive(Default)]
    struct Counter(Option<Windows>);

    impl Processor for Counter {
        fn init(&mut self, _task: &Task) -> Result<()> {
            let windows = match config::get("kind").as_deref() {
                Some("session") => Windows::session(Duration::from_secs(10)),
                Some("hopping") => {
                    Windows::hopping(Duration::from_secs(60), Duration::from_secs(30))
                }
                _ => Windows::tumbling(Duration::from_secs(60)),
            };
            self.0 = Some(windows.grace(Duration::from_secs(5)));
            Ok(())
        }

        fn process(&mut self, record: Record, _out: &mut Emitter) -> Result<()> {
            let w = self.0.as_ref().ok_or_else(|| Error::new("no init"))?;
            w.add(
                record.key().unwrap_or_default(),
                record.timestamp(),
                |n: &mut u64| *n += 1,
            )?;
            Ok(())
        }

        fn on_timer(&mut self, timer: Timer, out: &mut Emitter) -> Result<()> {
            let w = self.0.as_ref().ok_or_else(|| Error::new("no init"))?;
            if let Some(c) = w.close::<u64>(&timer)? {
                let v = format!("{}-{}:{}", c.window.start, c.window.end, c.value);
                out.emit(OutputRecord::new(v).with_key(c.key));
            }
            Ok(())
        }
    }

    fn at(key: &str, t: i64) -> Record {
        Record::new("").with_key(key).with_timestamp(t)
    }

    fn values(out: &[OutputRecord]) -> Vec<&str> {
        out.iter().filter_map(OutputRecord::value_str).collect()
    }

    #[test]
    fn tumbling_windows_take_out_of_order_records_within_grace_and_drop_later_ones() {
        let mut h = TestHarness::<Counter>::new();
        let out = h
            .process([at("a", 10_000), at("a", 62_000), at("a", 59_000)])
            .expect("process");
        assert!(out.is_empty(), "within grace nothing closes: {out:?}");
        let out = h
            .process([at("a", 65_000), at("a", 30_000)])
            .expect("process");
        // 65s passes 60s + 5s grace: [0, 60s) closes with 2 records; the
        // record at 30s came after that (in this batch's order) and is late.
        assert_eq!(values(&out), ["0-60000:2"]);
        assert_eq!(h.counter(LATE_RECORDS), 1);
        let out = h.process([at("a", 200_000)]).expect("process");
        assert_eq!(values(&out), ["60000-120000:2"]);
    }

    #[test]
    fn hopping_windows_count_a_record_in_each_window_it_falls_in() {
        let mut h = TestHarness::<Counter>::new().config("kind", "hopping");
        let out = h
            .process([at("a", 45_000), at("a", 500_000)])
            .expect("process");
        assert_eq!(values(&out), ["0-60000:1", "30000-90000:1"]);
    }

    #[test]
    fn session_windows_merge_records_closer_than_the_gap() {
        let mut h = TestHarness::<Counter>::new().config("kind", "session");
        // Two sessions, then a record that bridges them.
        h.process([at("a", 1_000), at("a", 15_000)])
            .expect("process");
        assert_eq!(h.pending_timers().len(), 2);
        h.process([at("a", 10_500)]).expect("process");
        let out = h.process([at("a", 100_000)]).expect("process");
        assert_eq!(values(&out), ["1000-15001:3"]);
        assert_eq!(
            h.pending_timers().len(),
            1,
            "only the newest session is open"
        );
    }
}

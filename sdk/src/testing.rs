//! Run a processor natively, without a broker or a WebAssembly runtime, the
//! way eddy runs it: in batches, with configuration, state and timers served
//! in memory. Only on non-`wasm32` targets.
//!
//! ```
//! use eddy_sdk::{prelude::*, testing::TestHarness};
//!
//! #[derive(Default)]
//! struct Count;
//!
//! impl Processor for Count {
//!     fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
//!         let key = record.key().unwrap_or_default().to_vec();
//!         let n = state::get_u64(&key)? + 1;
//!         state::put_u64(&key, n)?;
//!         out.emit(OutputRecord::new(n.to_string()).with_key(key));
//!         Ok(())
//!     }
//! }
//!
//! let mut harness = TestHarness::<Count>::new();
//! let out = harness.process([Record::new("").with_key("a"), Record::new("").with_key("a")])?;
//! assert_eq!(out[1].value_str(), Some("2"));
//! assert_eq!(harness.state_value("a"), Some(2u64.to_be_bytes().to_vec()));
//! # Ok::<(), eddy_sdk::Error>(())
//! ```
//!
//! One harness per test: the in-memory host is per thread, and creating a
//! harness resets it.

use crate::log::Level;
use crate::{Error, OutputRecord, Processor, Record, Task, TimeDomain, Timer};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

#[derive(Default)]
pub(crate) struct TestHost {
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) state: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) timers: BTreeSet<(i64, TimeDomain, Vec<u8>)>,
    pub(crate) logs: Vec<(Level, String)>,
    pub(crate) stream_time: Option<i64>,
    pub(crate) counters: BTreeMap<String, u64>,
}

thread_local! {
    static HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
}

pub(crate) fn with_host<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// Drives one processor instance through batches, as a task would.
pub struct TestHarness<P: Processor> {
    processor: Option<P>,
    task: Task,
    _processor: PhantomData<P>,
}

impl<P: Processor> Default for TestHarness<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Processor> TestHarness<P> {
    /// A harness with empty configuration and state (it resets this thread's
    /// in-memory host).
    pub fn new() -> Self {
        with_host(|h| *h = TestHost::default());
        Self {
            processor: None,
            task: Task {
                pipeline: "test".into(),
                step: 0,
                partition: 0,
            },
            _processor: PhantomData,
        }
    }

    /// Sets a configuration value, as `--config key=value` would.
    pub fn config(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        with_host(|h| h.config.insert(key.into(), value.into()));
        self
    }

    /// Seeds a state entry.
    pub fn state(self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        with_host(|h| {
            h.state
                .insert(key.as_ref().to_vec(), value.as_ref().to_vec())
        });
        self
    }

    /// Sets the task the instance believes it runs as.
    pub fn task(mut self, task: Task) -> Self {
        self.task = task;
        self
    }

    fn instance(&mut self) -> Result<&mut P, Error> {
        if self.processor.is_none() {
            let mut processor = P::default();
            processor.init(&self.task)?;
            self.processor = Some(processor);
        }
        self.processor
            .as_mut()
            .ok_or_else(|| Error::new("processor missing"))
    }

    /// Processes one batch, then advances stream time to the batch's
    /// highest timestamp and fires the event-time timers it passed,
    /// returning every record emitted (as the daemon does).
    pub fn process(
        &mut self,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Vec<OutputRecord>, Error> {
        let records: Vec<Record> = records.into_iter().collect();
        let max = records
            .iter()
            .map(Record::timestamp)
            .filter(|t| *t >= 0)
            .max();
        let processor = self.instance()?;
        let mut out = Vec::new();
        crate::__private::run_batch(processor, records, |o| out.push(o)).map_err(|(e, _)| e)?;
        if let Some(max) = max {
            with_host(|h| h.stream_time = Some(h.stream_time.map_or(max, |t| t.max(max))));
        }
        if let Some(now) = with_host(|h| h.stream_time) {
            out.extend(self.fire(TimeDomain::EventTime, now)?);
        }
        Ok(out)
    }

    /// Moves the wall clock to `now` and fires the wall-clock timers due.
    pub fn advance_wall_clock(&mut self, now: i64) -> Result<Vec<OutputRecord>, Error> {
        self.fire(TimeDomain::WallClock, now)
    }

    fn fire(&mut self, domain: TimeDomain, now: i64) -> Result<Vec<OutputRecord>, Error> {
        let due: Vec<Timer> = with_host(|h| {
            let due: Vec<_> = h
                .timers
                .iter()
                .filter(|(at, d, _)| *d == domain && *at <= now)
                .cloned()
                .collect();
            for t in &due {
                h.timers.remove(t);
            }
            due.into_iter()
                .map(|(at, domain, key)| Timer { domain, at, key })
                .collect()
        });
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let processor = self.instance()?;
        let mut outputs = Vec::new();
        crate::__private::run_timers(processor, due, |o| outputs.push(o))?;
        Ok(outputs)
    }

    /// The state value under `key`.
    pub fn state_value(&self, key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        with_host(|h| h.state.get(key.as_ref()).cloned())
    }

    /// All state entries, in key order.
    pub fn state_entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        with_host(|h| {
            h.state
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// The pending timers, in time order.
    pub fn pending_timers(&self) -> Vec<Timer> {
        with_host(|h| {
            h.timers
                .iter()
                .map(|(at, domain, key)| Timer {
                    domain: *domain,
                    at: *at,
                    key: key.clone(),
                })
                .collect()
        })
    }

    /// A counter the processor reported (see [`crate::metrics`]), 0 if never.
    pub fn counter(&self, name: &str) -> u64 {
        with_host(|h| h.counters.get(name).copied().unwrap_or(0))
    }

    /// The messages the processor logged, with their levels.
    pub fn logs(&self) -> Vec<(Level, String)> {
        with_host(|h| h.logs.clone())
    }
}

//! What a guest can call: logging, configuration, state and timers (the
//! `eddy:processor` imports), plus WASI without filesystem, network or
//! environment.

use super::bindings::Processor;
use super::bindings::eddy::processor::{config, log, metrics, state, timers, types};
use crate::state::{StateError, TaskState, timer_key};
use crate::task::TaskStatus;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// A pending timer: (time, domain, key), ordered by time.
pub type TimerKey = (i64, types::TimeDomain, Vec<u8>);

/// The host services one task hands its guest.
pub struct TaskServices {
    /// Names the task in logs: `pipeline/topic-partition`.
    pub label: Arc<str>,
    /// The pipeline's configuration.
    pub config: Arc<BTreeMap<String, String>>,
    /// The task's state, with the current batch's writes.
    pub state: TaskState,
    /// Pending timers, an index over the timers in `state`.
    pub timers: BTreeSet<TimerKey>,
    /// The highest record timestamp the task has seen.
    pub stream_time: Option<i64>,
    /// The task's status, where guest counters go.
    pub status: Arc<TaskStatus>,
}

impl TaskServices {
    /// Puts the batch's pending writes back to `pending` (taken earlier with
    /// `state.pending().clone()`), rebuilding the timer index to match.
    pub fn rollback(&mut self, pending: crate::state::WriteBatch) -> Result<(), StateError> {
        self.timers = self.state.stored_timers()?.into_iter().collect();
        for (key, value) in &pending {
            if let Some(timer) = crate::state::timer_from_key(key) {
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
    pub fn take_due_timers(&mut self, domain: types::TimeDomain, now: i64) -> Vec<TimerKey> {
        let due: Vec<TimerKey> = self
            .timers
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .filter(|(_, d, _)| *d == domain)
            .cloned()
            .collect();
        for timer in &due {
            self.timers.remove(timer);
            self.state.put_raw(timer_key(timer), None);
        }
        due
    }
}

/// The store data of a guest instance.
pub(super) struct GuestCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    pub(super) stderr: super::stderr::StderrTail,
    pub(super) services: TaskServices,
    /// When the current call (or instantiation) started, by the wall clock
    /// and by the thread's CPU time: its deadline is a budget of CPU time.
    pub(super) call_started: (std::time::Instant, Option<std::time::Duration>),
}

impl GuestCtx {
    pub(super) fn new(services: TaskServices, memory_bytes: u64) -> Self {
        // Panics print here; the tail is attached to the trap's error.
        let stderr = super::stderr::StderrTail::default();
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
                denied: None,
            },
            stderr,
            services,
            call_started: (std::time::Instant::now(), None),
        }
    }
}

impl WasiView for GuestCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers a refused growth, so an out-of-memory
/// abort can be told apart from any other trap.
pub(super) struct MemoryLimiter {
    max_bytes: usize,
    pub(super) denied: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

pub(super) fn add_to_linker(linker: &mut Linker<GuestCtx>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    Processor::add_to_linker::<_, HasSelf<_>>(linker, |ctx| ctx)
}

impl types::Host for GuestCtx {}

impl log::Host for GuestCtx {
    fn log(&mut self, level: log::Level, message: String) {
        let task = &*self.services.label;
        match level {
            log::Level::Trace => tracing::trace!(task, "{message}"),
            log::Level::Debug => tracing::debug!(task, "{message}"),
            log::Level::Info => tracing::info!(task, "{message}"),
            log::Level::Warn => tracing::warn!(task, "{message}"),
            log::Level::Error => tracing::error!(task, "{message}"),
        }
    }
}

impl config::Host for GuestCtx {
    fn get(&mut self, key: String) -> Option<String> {
        self.services.config.get(&key).cloned()
    }

    fn all(&mut self) -> Vec<(String, String)> {
        self.services
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn state_error(e: StateError) -> state::StateError {
    match e {
        StateError::TooLarge(m) => state::StateError::TooLarge(m),
        StateError::Unavailable(m) => state::StateError::Unavailable(m),
    }
}

fn entries(list: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<state::Entry> {
    list.into_iter()
        .map(|(key, value)| state::Entry { key, value })
        .collect()
}

/// Most entries one scan call returns, whatever the guest asks for.
const MAX_SCAN: u32 = 10_000;

impl state::Host for GuestCtx {
    fn get(&mut self, key: Vec<u8>) -> Result<Option<Vec<u8>>, state::StateError> {
        self.services.state.get(&key).map_err(state_error)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), state::StateError> {
        self.services.state.put(key, value).map_err(state_error)
    }

    fn delete(&mut self, key: Vec<u8>) -> Result<(), state::StateError> {
        self.services.state.delete(key).map_err(state_error)
    }

    fn scan(
        &mut self,
        start: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<Vec<state::Entry>, state::StateError> {
        let start = start.as_deref().map_or(Bound::Unbounded, Bound::Included);
        let end = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.services
            .state
            .scan(start, end, limit.min(MAX_SCAN) as usize)
            .map(entries)
            .map_err(state_error)
    }

    fn scan_prefix(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<Vec<state::Entry>, state::StateError> {
        self.services
            .state
            .scan_prefix(
                &prefix,
                start_after.as_deref(),
                limit.min(MAX_SCAN) as usize,
            )
            .map(entries)
            .map_err(state_error)
    }
}

impl timers::Host for GuestCtx {
    fn set(&mut self, domain: types::TimeDomain, at: i64, key: Vec<u8>) {
        let timer = (at, domain, key);
        self.services
            .state
            .put_raw(timer_key(&timer), Some(Vec::new()));
        self.services.timers.insert(timer);
    }

    fn cancel(&mut self, domain: types::TimeDomain, at: i64, key: Vec<u8>) {
        let timer = (at, domain, key);
        if self.services.timers.remove(&timer) {
            self.services.state.put_raw(timer_key(&timer), None);
        }
    }

    fn stream_time(&mut self) -> Option<i64> {
        self.services.stream_time
    }
}

impl metrics::Host for GuestCtx {
    fn increment(&mut self, name: String, delta: u64) {
        self.services.status.count(&name, delta);
    }
}

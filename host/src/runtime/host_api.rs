//! What a guest can call: logging, configuration, state and timers (the
//! `eddy:processor` imports), plus WASI without filesystem, network or
//! environment.

use super::bindings::Imports;
use super::bindings::eddy::processor::{config, log, metrics, state, timers, types};
use super::services::GuestServices;
use crate::state::{StateError, TimeDomain, Timer};
use std::ops::Bound;
use wasmtime::ResourceLimiter;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The store data of a guest instance.
pub(super) struct GuestCtx<S> {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    pub(super) stderr: super::stderr::StderrTail,
    pub(super) services: S,
    /// When the current call (or instantiation) started, by the wall clock
    /// and by the thread's CPU time: its deadline is a budget of CPU time.
    pub(super) call_started: (std::time::Instant, Option<std::time::Duration>),
    /// The call's deadline: how long after its start a blocking WASI call
    /// (a sleep) may still wait (`runtime::blocking`).
    call_timeout: std::time::Duration,
}

impl<S> GuestCtx<S> {
    pub(super) fn new(services: S, memory_bytes: u64, call_timeout: std::time::Duration) -> Self {
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
            call_timeout,
        }
    }

    /// When a blocking WASI call of the current call must return by: the
    /// call's deadline, in wall time, as a sleeping guest uses no CPU.
    pub(super) fn blocking_until(&self) -> std::time::Instant {
        self.call_started.0 + self.call_timeout
    }

    pub(super) fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl<S: Send> WasiView for GuestCtx<S> {
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

pub(super) fn add_to_linker<S: GuestServices>(
    linker: &mut Linker<GuestCtx<S>>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    super::blocking::shadow_blocking_calls(linker)?;
    Imports::add_to_linker::<_, HasSelf<_>>(linker, |ctx| ctx)
}

impl<S> types::Host for GuestCtx<S> {}

impl<S: GuestServices> log::Host for GuestCtx<S> {
    fn log(&mut self, level: log::Level, message: String) {
        let task = self.services.label();
        match level {
            log::Level::Trace => tracing::trace!(task, "{message}"),
            log::Level::Debug => tracing::debug!(task, "{message}"),
            log::Level::Info => tracing::info!(task, "{message}"),
            log::Level::Warn => tracing::warn!(task, "{message}"),
            log::Level::Error => tracing::error!(task, "{message}"),
        }
    }
}

impl<S: GuestServices> config::Host for GuestCtx<S> {
    fn get(&mut self, key: String) -> Option<String> {
        self.services.config().get(&key).cloned()
    }

    fn all(&mut self) -> Vec<(String, String)> {
        self.services
            .config()
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

impl<S: GuestServices> state::Host for GuestCtx<S> {
    fn get(&mut self, key: Vec<u8>) -> Result<Option<Vec<u8>>, state::StateError> {
        self.services.get(&key).map_err(state_error)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), state::StateError> {
        self.services.put(key, value).map_err(state_error)
    }

    fn delete(&mut self, key: Vec<u8>) -> Result<(), state::StateError> {
        self.services.delete(key).map_err(state_error)
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
            .scan_prefix(
                &prefix,
                start_after.as_deref(),
                limit.min(MAX_SCAN) as usize,
            )
            .map(entries)
            .map_err(state_error)
    }
}

/// The host's time domain for the guest's.
pub(super) fn time_domain(domain: types::TimeDomain) -> TimeDomain {
    match domain {
        types::TimeDomain::EventTime => TimeDomain::EventTime,
        types::TimeDomain::WallClock => TimeDomain::WallClock,
    }
}

/// The guest's time domain for the host's.
pub(super) fn guest_time_domain(domain: TimeDomain) -> types::TimeDomain {
    match domain {
        TimeDomain::EventTime => types::TimeDomain::EventTime,
        TimeDomain::WallClock => types::TimeDomain::WallClock,
    }
}

impl<S: GuestServices> timers::Host for GuestCtx<S> {
    fn set(&mut self, domain: types::TimeDomain, at: i64, key: Vec<u8>) {
        let domain = time_domain(domain);
        self.services.set_timer(Timer { at, domain, key });
    }

    fn cancel(&mut self, domain: types::TimeDomain, at: i64, key: Vec<u8>) {
        let domain = time_domain(domain);
        self.services.cancel_timer(Timer { at, domain, key });
    }

    fn stream_time(&mut self) -> Option<i64> {
        self.services.stream_time()
    }
}

impl<S: GuestServices> metrics::Host for GuestCtx<S> {
    fn increment(&mut self, name: String, delta: u64) {
        self.services.increment(&name, delta);
    }
}

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
            limiter: MemoryLimiter::new(usize::try_from(memory_bytes).unwrap_or(usize::MAX)),
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

/// Caps the linear memories of an instance together, and remembers a
/// refused growth, so an out-of-memory abort can be told apart from any
/// other trap. A component may hold several core instances, each with
/// memories of its own (componentize-py's do): the cap is on their sum,
/// or each could take the whole of it.
pub(super) struct MemoryLimiter {
    max_bytes: usize,
    /// The bytes of every memory of the instance, as last grown.
    total: usize,
    /// The total a refused growth asked for.
    pub(super) denied: Option<usize>,
}

impl MemoryLimiter {
    pub(super) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            total: 0,
            denied: None,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    /// Called as each memory is created (from nothing) and as it grows.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total.saturating_sub(current).saturating_add(desired);
        if total > self.max_bytes {
            self.denied = Some(total);
            return Ok(false);
        }
        self.total = total;
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

/// Why a host call stopped the guest's call with a trap rather than
/// answering it: what the guest did with an error cannot matter here.
#[derive(Debug, thiserror::Error)]
pub(super) enum HostFault {
    /// The state store failed: the host's fault, not the guest's.
    #[error("the state store failed: {0}")]
    Store(String),
    /// The guest ran over a host-side budget.
    #[error("{0}")]
    OverBudget(String),
}

impl<S: GuestServices> log::Host for GuestCtx<S> {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => tracing::Level::TRACE,
            log::Level::Debug => tracing::Level::DEBUG,
            log::Level::Info => tracing::Level::INFO,
            log::Level::Warn => tracing::Level::WARN,
            log::Level::Error => tracing::Level::ERROR,
        };
        self.services.log(level, &message);
        Ok(())
    }
}

impl<S: GuestServices> config::Host for GuestCtx<S> {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.services.config().get(&key).cloned())
    }

    fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .services
            .config()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// A state call's answer to the guest: the value, an error the guest may
/// handle (an entry over the size limits), or a trap (the store failed, or
/// the guest ran over a budget).
fn answer<T>(result: Result<T, StateError>) -> wasmtime::Result<Result<T, state::StateError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(StateError::TooLarge(m)) => Ok(Err(state::StateError::TooLarge(m))),
        Err(StateError::Unavailable(m)) => Err(HostFault::Store(m).into()),
        Err(StateError::OverBudget(m)) => Err(HostFault::OverBudget(m).into()),
    }
}

fn over_budget(e: super::services::OverBudget) -> wasmtime::Error {
    HostFault::OverBudget(e.0).into()
}

fn entries(list: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<state::Entry> {
    list.into_iter()
        .map(|(key, value)| state::Entry { key, value })
        .collect()
}

/// Most entries one scan call returns, whatever the guest asks for (or a
/// guest worker says it asked for).
pub(super) const MAX_SCAN: u32 = 10_000;

type StateResult<T> = wasmtime::Result<Result<T, state::StateError>>;

impl<S: GuestServices> state::Host for GuestCtx<S> {
    fn get(&mut self, key: Vec<u8>) -> StateResult<Option<Vec<u8>>> {
        answer(self.services.get(&key))
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> StateResult<()> {
        answer(self.services.put(key, value))
    }

    fn delete(&mut self, key: Vec<u8>) -> StateResult<()> {
        answer(self.services.delete(key))
    }

    fn scan(
        &mut self,
        start: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
        limit: u32,
    ) -> StateResult<Vec<state::Entry>> {
        let start = start.as_deref().map_or(Bound::Unbounded, Bound::Included);
        let end = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        answer(
            self.services
                .scan(start, end, limit.min(MAX_SCAN) as usize)
                .map(entries),
        )
    }

    fn scan_prefix(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> StateResult<Vec<state::Entry>> {
        answer(
            self.services
                .scan_prefix(
                    &prefix,
                    start_after.as_deref(),
                    limit.min(MAX_SCAN) as usize,
                )
                .map(entries),
        )
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
    fn set(&mut self, domain: types::TimeDomain, at: i64, key: Vec<u8>) -> wasmtime::Result<()> {
        let domain = time_domain(domain);
        self.services
            .set_timer(Timer { at, domain, key })
            .map_err(over_budget)
    }

    fn cancel(&mut self, domain: types::TimeDomain, at: i64, key: Vec<u8>) -> wasmtime::Result<()> {
        let domain = time_domain(domain);
        self.services.cancel_timer(Timer { at, domain, key });
        Ok(())
    }

    fn stream_time(&mut self) -> wasmtime::Result<Option<i64>> {
        Ok(self.services.stream_time())
    }
}

impl<S: GuestServices> metrics::Host for GuestCtx<S> {
    fn increment(&mut self, name: String, delta: u64) -> wasmtime::Result<()> {
        self.services.increment(&name, delta).map_err(over_budget)
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryLimiter;

    /// A core module with two memories, of 2 and 3 pages of 64 KiB.
    const TWO_MEMORIES: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0, // magic, version
        5, 5, 2, 0, 2, 0, 3, // memory section: 2 memories, min 2 and min 3 pages
    ];

    #[test]
    fn the_memory_cap_holds_for_all_memories_together() {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, TWO_MEMORIES).expect("a valid module");
        let instantiate = |cap_pages: usize| {
            let mut store = wasmtime::Store::new(&engine, MemoryLimiter::new(cap_pages << 16));
            store.limiter(|limiter| limiter);
            let made = wasmtime::Instance::new(&mut store, &module, &[]).is_ok();
            (made, store.data().denied)
        };
        assert_eq!(instantiate(5), (true, None), "5 pages hold both");
        assert_eq!(
            instantiate(4),
            (false, Some(5 << 16)),
            "each fits in 4 pages, both together do not"
        );
    }
}

//! The daemon's two wasmtime engines and what is compiled and linked
//! against each: the settings that make a guest fast or contained.

use super::bindings::packed::PackedProcessorPre;
use super::bindings::packed_0_1_1::PackedProcessor011Pre;
use super::bindings::typed::ProcessorPre;
use super::host_api::{self, GuestCtx};
use super::services::GuestServices;
use super::validate::{self, ModuleError};
use std::hash::{Hash as _, Hasher as _};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Which of the daemon's two engines runs a guest; the caller (a task)
/// chooses, by whether its guest has failed.
///
/// Guests in good standing run in the fast engine: linear memories sit in
/// 4 GiB reservations with guard pages, so compiled code makes no bounds
/// checks and an out-of-bounds access traps by signal. Making pages
/// accessible or not takes `mprotect`, though: when an instance is made in
/// a reused pool slot and when a memory grows. `mprotect` takes the
/// process's memory-map lock for writing, and a guest that failed a call is
/// renewed per poisoned record (or restarted under `fail`) on a thread
/// demoted to SCHED_IDLE, where it can be preempted holding that lock or
/// queued for it; every other thread that then faults a page inside a
/// syscall, such as a healthy consumer reading a fetch response into a
/// fresh buffer, waits behind it. So a guest that failed is made in the
/// containment engine, whose memories are bounds-checked in code, with no
/// guard pages, and keep their pages accessible: no `mprotect` at all.
/// Where there is a guest worker process (`super::worker`), the daemon
/// makes contained instances there, in the worker's containment engine, so
/// they take the worker's memory-map lock and never the daemon's.
/// Beside 21 hostile pipelines, guard pages for every guest kept a healthy
/// pipeline to 1-9 % of its throughput, bounds checks for every guest
/// 7-18 %, and these two engines 9-13 %; the checks cost a fifth of a guest
/// call (docs/performance.md, "Beside hostile pipelines").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tier {
    /// Guard pages, no bounds checks: for guests in good standing.
    #[default]
    Fast,
    /// Bounds checks, no `mprotect`: for guests that failed a call.
    Contained,
}

/// A component linked against one engine's host, by the world it exports.
pub(super) enum Linked<S: 'static> {
    /// It implements the `processor` world.
    Typed(ProcessorPre<GuestCtx<S>>),
    /// It implements the `packed-processor` world.
    Packed(PackedProcessorPre<GuestCtx<S>>),
    /// It implements `packed-processor` as 0.1.1 shipped it.
    Packed011(PackedProcessor011Pre<GuestCtx<S>>),
}

impl<S> Clone for Linked<S> {
    fn clone(&self) -> Self {
        match self {
            Self::Typed(pre) => Self::Typed(pre.clone()),
            Self::Packed(pre) => Self::Packed(pre.clone()),
            Self::Packed011(pre) => Self::Packed011(pre.clone()),
        }
    }
}

/// One engine and what is linked against it.
pub(super) struct TierEngine<S: 'static> {
    pub(super) engine: Engine,
    linker: Linker<GuestCtx<S>>,
    /// Names files of this engine's compiled code: another wasmtime
    /// version, setting or tier cannot load them.
    pub(super) tag: String,
}

impl<S: GuestServices> TierEngine<S> {
    pub(super) fn new(tier: Tier, max_memory_bytes: u64) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(tier, max_memory_bytes))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut linker = Linker::new(&engine);
        host_api::add_to_linker(&mut linker).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let tag = {
            let mut hasher = std::hash::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        };
        Ok(Self {
            engine,
            linker,
            tag,
        })
    }

    /// Checks that `bytes` are a component and compiles it ([`Self::link`]
    /// checks it implements eddy's world). Precompiled native code is never
    /// accepted from outside: only this daemon's own cache is loaded.
    pub(super) fn compile(&self, bytes: &[u8]) -> Result<Component, ModuleError> {
        validate::check_format(bytes)?;
        Component::new(&self.engine, bytes)
            .map_err(|e| ModuleError::Invalid(format!("the component does not compile: {e:#}")))
    }

    /// Links `component` against the host and finds which of the package's
    /// worlds it exports.
    pub(super) fn link(&self, component: &Component) -> Result<Linked<S>, ModuleError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(validate::import_error)?;
        if let Ok(packed) = PackedProcessorPre::new(pre.clone()) {
            return Ok(Linked::Packed(packed));
        }
        if let Ok(packed) = PackedProcessor011Pre::new(pre.clone()) {
            return Ok(Linked::Packed011(packed));
        }
        ProcessorPre::new(pre)
            .map(Linked::Typed)
            .map_err(validate::export_error)
    }
}

/// Most guest instances alive at once in each engine (a task holds one; a
/// renewal frees its old one first). Instances come from a pool of
/// pre-reserved slots, which makes instantiation take microseconds and
/// lets a renewed instance reuse warm memory; the slots are address space,
/// not memory, until used.
pub const MAX_INSTANCES: u32 = 1000;

/// The engine settings of `tier`.
fn engine_config(tier: Tier, max_memory_bytes: u64) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(MAX_INSTANCES)
        .total_memories(MAX_INSTANCES * 2)
        .total_tables(MAX_INSTANCES * 8)
        .total_core_instances(MAX_INSTANCES * 16)
        .max_core_instances_per_component(64)
        .max_memories_per_component(4)
        .max_tables_per_component(32)
        .max_memory_size(usize::try_from(max_memory_bytes).unwrap_or(usize::MAX))
        // A renewed instance (after a trap, under skip or dead-letter)
        // resets its first pages by memset instead of faulting them in again.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10);
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(1 << 20);
    if tier == Tier::Contained {
        // Bounds checks in code, and every page of a slot's reservation
        // accessible from the start: see [`Tier`].
        config.signals_based_traps(false);
        config.memory_guard_size(0);
        config.guard_before_linear_memory(false);
        config.memory_reservation(max_memory_bytes);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if std::env::var_os("EDDY_PERF_MAP").is_some() {
        // Names guest functions in `perf report` (/tmp/perf-PID.map).
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

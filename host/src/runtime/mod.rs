//! The WebAssembly runtime: the daemon's wasmtime [`Engine`]s (a fast one,
//! and one that contains guests that failed), modules compiled once per
//! digest and engine, and a guest instance per task with limits on memory
//! and time.
//!
//! Guest calls are synchronous and run on the task's own thread; the epoch
//! ticker interrupts any call that outlives its deadline, so a looping guest
//! costs its task, never the daemon.

mod bindings;
mod builtin;
mod guest;
mod host_api;
mod inputs;
mod outputs;
mod stderr;
mod validate;

pub use builtin::Builtin;
pub use guest::thread_cpu_time;
pub use guest::{Guest, GuestError, GuestLimits, WALL_DEADLINE_FACTOR};
pub use host_api::{TaskServices, TimerKey};
pub use inputs::{InputBatch, InputView};
pub use outputs::{Headers, OutputView, Outputs};
pub use validate::ModuleError;

/// The guest contract's data types, as the host sees them.
pub mod bindings_types {
    pub use super::bindings::eddy::processor::types::*;
}

use crate::modules::{ModuleStore, hex_part};
use bindings::ProcessorPre;
use bindings::packed::PackedProcessorPre;
use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The package of worlds this host implements (both of them; components
/// built against an earlier, semver-compatible version link too).
pub const WORLD: &str = "eddy:processor@0.1.1";

/// How often the epoch advances: the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// A module compiled and linked against the host, ready to instantiate;
/// or a builtin operator, which runs in its place.
#[derive(Clone)]
pub struct CompiledModule(ModuleKind);

#[derive(Clone)]
enum ModuleKind {
    /// A WebAssembly component.
    Wasm(Arc<WasmModule>),
    /// An operator compiled into the host.
    Builtin(Builtin),
}

/// A component, compiled for each engine that runs it.
struct WasmModule {
    digest: String,
    /// Compiled for the engine guests in good standing run in.
    fast: Linked,
    /// Compiled for the containment engine when a guest first fails
    /// (most modules never do); `None` if that failed, and the fast code
    /// is used instead.
    contained: OnceLock<Option<Linked>>,
}

/// A component linked against one engine's host, by the world it exports.
#[derive(Clone)]
enum Linked {
    /// It implements the `processor` world.
    Typed(ProcessorPre<host_api::GuestCtx>),
    /// It implements the `packed-processor` world.
    Packed(PackedProcessorPre<host_api::GuestCtx>),
}

/// What a guest instance is made from.
enum Target<'a> {
    Wasm(&'a Linked),
    Builtin(Builtin),
}

impl CompiledModule {
    /// The world the module implements, as `upload` reports it.
    pub fn world(&self) -> String {
        let world = match &self.0 {
            ModuleKind::Wasm(module) => match module.fast {
                Linked::Typed(_) => "processor",
                Linked::Packed(_) => "packed-processor",
            },
            ModuleKind::Builtin(_) => "builtin",
        };
        let version = WORLD.split_once('@').map_or("", |(_, v)| v);
        format!("eddy:processor/{world}@{version}")
    }
}

/// Which of the daemon's two engines runs a guest.
///
/// Guests in good standing run in the fast engine: linear memories sit in
/// 4 GiB reservations with guard pages, so compiled code makes no bounds
/// checks and an out-of-bounds access traps by signal. Making pages
/// accessible or not takes `mprotect`, though: when an instance is made in
/// a reused pool slot and when a memory grows. `mprotect` takes the
/// process's memory-map lock for writing, and a guest that failed a call is
/// renewed per poisoned record (or restarted under `fail`) on a thread
/// demoted to SCHED_IDLE (see [`demote_current_thread`]), where it can be
/// preempted holding that lock or queued for it; every other thread that
/// then faults a page inside a syscall, such as a healthy consumer reading
/// a fetch response into a fresh buffer, waits behind it. So a demoted
/// thread makes its guests in the containment engine, whose memories are
/// bounds-checked in code, with no guard pages, and keep their pages
/// accessible: no `mprotect` at all. Beside 21 hostile pipelines, guard
/// pages for every guest kept a healthy pipeline to 1-9 % of its
/// throughput, bounds checks for every guest 7-18 %, and these two engines
/// 9-13 %; the checks cost a fifth of a guest call (docs/operating.md,
/// "Beside hostile pipelines").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    Fast,
    Contained,
}

/// One engine and what is linked against it.
struct TierEngine {
    engine: Engine,
    linker: Linker<host_api::GuestCtx>,
    /// Names files of this engine's compiled code: another wasmtime
    /// version, setting or tier cannot load them.
    tag: String,
}

impl TierEngine {
    fn new(tier: Tier, max_memory_bytes: u64) -> anyhow::Result<Self> {
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
    fn compile(&self, bytes: &[u8]) -> Result<Component, ModuleError> {
        validate::check_format(bytes)?;
        Component::new(&self.engine, bytes)
            .map_err(|e| ModuleError::Invalid(format!("the component does not compile: {e:#}")))
    }

    /// Links `component` against the host and finds which of the package's
    /// worlds it exports.
    fn link(&self, component: &Component) -> Result<Linked, ModuleError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(validate::import_error)?;
        if let Ok(packed) = PackedProcessorPre::new(pre.clone()) {
            return Ok(Linked::Packed(packed));
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
const MAX_INSTANCES: u32 = 1000;

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

/// The daemon's engines, their linkers and the compiled-module cache.
pub struct Runtime {
    fast: TierEngine,
    contained: TierEngine,
    compiled: Mutex<HashMap<String, CompiledModule>>,
    /// Where compiled modules are kept across restarts, named by digest
    /// and engine: a restarted daemon loads native code instead of
    /// compiling again (seconds per module on a small machine).
    compiled_dir: Option<PathBuf>,
    /// Where a module's bytes are found again, to compile it for the
    /// containment engine when one of its guests first fails.
    modules: Option<Arc<ModuleStore>>,
}

/// How the runtime is set up.
pub struct RuntimeOptions {
    /// The largest linear memory any guest may have (the daemon's ceiling):
    /// the size of the pooling allocator's memory slots.
    pub max_memory_bytes: u64,
    /// Where to keep compiled modules; `None` compiles on every start.
    pub compiled_dir: Option<PathBuf>,
    /// The uploaded modules; without them a guest that fails is renewed in
    /// the fast engine.
    pub modules: Option<Arc<ModuleStore>>,
}

impl Runtime {
    /// Creates the engines and starts their epoch ticker thread.
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Arc<Self>> {
        if let Some(dir) = &options.compiled_dir {
            std::fs::create_dir_all(dir)?;
        }
        let runtime = Arc::new(Self {
            fast: TierEngine::new(Tier::Fast, options.max_memory_bytes)?,
            contained: TierEngine::new(Tier::Contained, options.max_memory_bytes)?,
            compiled: Mutex::new(HashMap::new()),
            compiled_dir: options.compiled_dir,
            modules: options.modules,
        });
        let weak = Arc::downgrade(&runtime);
        std::thread::Builder::new()
            .name("eddy-epoch".into())
            .spawn(move || {
                while let Some(runtime) = weak.upgrade() {
                    runtime.fast.engine.increment_epoch();
                    runtime.contained.engine.increment_epoch();
                    drop(runtime);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(runtime)
    }

    fn engine(&self, tier: Tier) -> &TierEngine {
        match tier {
            Tier::Fast => &self.fast,
            Tier::Contained => &self.contained,
        }
    }

    /// Where `tier`'s compiled code of module `digest` is kept, if anywhere.
    fn compiled_path(&self, tier: Tier, digest: &str) -> Option<PathBuf> {
        let dir = self.compiled_dir.as_ref()?;
        let tag = &self.engine(tier).tag;
        Some(dir.join(format!("{}-{tag}.cwasm", hex_part(digest))))
    }

    /// Module `digest` compiled for `tier` and linked: from the
    /// compiled-code cache on disk, or compiled from `load()`'s bytes (and
    /// then kept there).
    fn load(
        &self,
        tier: Tier,
        digest: &str,
        load: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> Result<Linked, ModuleError> {
        let engine = self.engine(tier);
        let path = self.compiled_path(tier, digest);
        if let Some(path) = path.as_ref().filter(|p| p.is_file()) {
            // SAFETY: the file is one this daemon wrote (below) from a module
            // it validated, in its own data directory, named by this engine's
            // tag; wasmtime checks its header and version again on load.
            let loading = std::time::Instant::now();
            match unsafe { Component::deserialize_file(&engine.engine, path) } {
                Ok(component) => {
                    tracing::info!(%digest, ?tier, elapsed = ?loading.elapsed(), "compiled module loaded from disk");
                    return engine.link(&component);
                }
                Err(e) => tracing::warn!(
                    path = %path.display(), error = %e,
                    "a cached compiled module cannot be loaded; compiling it again"
                ),
            }
        }
        let bytes = load().map_err(|e| ModuleError::Io(format!("module {digest}: {e}")))?;
        let compiling = std::time::Instant::now();
        let component = engine.compile(&bytes)?;
        tracing::info!(%digest, ?tier, elapsed = ?compiling.elapsed(), "module compiled");
        let linked = engine.link(&component)?;
        if let Some(path) = path {
            let kept = component
                .serialize()
                .map_err(std::io::Error::other)
                .and_then(|code| crate::modules::write_file_atomically(&path, &code));
            if let Err(e) = kept {
                tracing::warn!(path = %path.display(), error = %e, "could not keep a compiled module on disk; it compiles again on the next start");
            }
        }
        Ok(linked)
    }

    /// The compiled module for `digest`, compiling `load()`'s bytes on first
    /// use; a builtin for a `builtin:` reference.
    pub fn module(
        &self,
        digest: &str,
        load: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> Result<CompiledModule, ModuleError> {
        if let Some(builtin) = Builtin::parse(digest).map_err(ModuleError::Invalid)? {
            return Ok(CompiledModule(ModuleKind::Builtin(builtin)));
        }
        if let Some(module) = self.lock_cache().get(digest) {
            return Ok(module.clone());
        }
        let module = CompiledModule(ModuleKind::Wasm(Arc::new(WasmModule {
            digest: digest.to_owned(),
            fast: self.load(Tier::Fast, digest, load)?,
            contained: OnceLock::new(),
        })));
        self.lock_cache().insert(digest.to_owned(), module.clone());
        Ok(module)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CompiledModule>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Instantiates `module` for one task: in the fast engine, or in the
    /// containment engine (see [`Tier`]) on a task thread demoted after its
    /// guest failed a call (a renewal after the failure, or a restart under
    /// the `fail` policy), compiling the module for that engine on first use.
    pub fn instantiate(
        &self,
        module: &CompiledModule,
        services: TaskServices,
        limits: GuestLimits,
    ) -> Result<Guest, GuestError> {
        let (engine, target) = match &module.0 {
            ModuleKind::Wasm(wasm) if current_thread_demoted() => match self.contained(wasm) {
                Some(linked) => (&self.contained.engine, Target::Wasm(linked)),
                None => (&self.fast.engine, Target::Wasm(&wasm.fast)),
            },
            ModuleKind::Wasm(wasm) => (&self.fast.engine, Target::Wasm(&wasm.fast)),
            ModuleKind::Builtin(builtin) => (&self.fast.engine, Target::Builtin(*builtin)),
        };
        Guest::new(engine, target, services, limits, EPOCH_TICK)
    }

    /// `wasm` compiled for the containment engine, compiling it on first
    /// use; `None` if it cannot be.
    fn contained<'a>(&self, wasm: &'a WasmModule) -> Option<&'a Linked> {
        let digest = &wasm.digest;
        wasm.contained
            .get_or_init(|| {
                let Some(modules) = &self.modules else {
                    tracing::warn!(%digest, "no module store to compile a failing guest's module for the containment engine; it stays in the fast engine");
                    return None;
                };
                self.load(Tier::Contained, digest, || modules.bytes(digest))
                    .inspect_err(|e| tracing::warn!(%digest, error = %e, "could not compile a failing guest's module for the containment engine; it stays in the fast engine"))
                    .ok()
            })
            .as_ref()
    }
}

std::thread_local! {
    /// Whether [`demote_current_thread`] moved this thread to the idle class.
    static DEMOTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread was moved to the idle class after a failing
/// guest call: such a thread ends with its task instead of serving another.
pub(crate) fn current_thread_demoted() -> bool {
    DEMOTED.get()
}

/// Moves the calling task thread to Linux's idle scheduling class
/// (`SCHED_IDLE`) for the rest of its life, after its guest failed a call:
/// a guest that loops to its deadline, fills its memory or floods its
/// output again and again (and is bisected and renewed each time under skip
/// or dead-letter) then runs only on CPU that healthy pipelines leave idle,
/// and any of their threads that wakes up preempts it at once. A lower nice
/// value is not enough: the healthy pipelines' threads wake and sleep per
/// batch, and each wake-up would wait out a hostile thread's time slice.
/// The thread ends with the task (pause, resume, rebalance, restart of the
/// daemon), not kept for another; the next starts in the normal class.
fn demote_current_thread() {
    DEMOTED.set(true);
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            idle,
        ) {
            tracing::warn!(error = ?e, "could not move a failing task thread to the idle class");
        }
    }
}

//! The WebAssembly runtime: the daemon's wasmtime engines (a fast one, and
//! one that contains guests that failed: see [`Tier`]), modules compiled
//! once per digest and engine, and guest instances with limits on memory
//! and time.
//!
//! The runtime knows guests, not tasks: a guest's imports reach its
//! embedder through [`GuestServices`], and the embedder decides which
//! engine an instance is made in. Guest calls are synchronous and run on
//! the caller's thread; the epoch ticker interrupts any call that outlives
//! its deadline, so a looping guest costs its caller, never the daemon.

mod bindings;
mod blocking;
mod builtin;
mod cache;
mod engine;
mod guest;
mod host_api;
mod inputs;
mod local;
mod outputs;
mod services;
mod stderr;
mod validate;
pub mod worker;

pub use builtin::Builtin;
pub use engine::{MAX_INSTANCES, Tier};
pub use guest::thread_cpu_time;
pub use guest::{Guest, GuestError, GuestLimits, WALL_DEADLINE_FACTOR};
pub use inputs::{InputBatch, InputView};
pub use outputs::{Headers, OutputView, Outputs, PackedWriter};
pub use services::{GuestInfo, GuestServices, OverBudget};
pub use validate::ModuleError;

use crate::modules::{ModuleStore, hex_part};
use engine::{Linked, TierEngine};
use local::LocalGuest;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use wasmtime::component::Component;
use worker::{RemoteGuest, WorkerOptions, WorkerProcess};

/// The package of worlds this host implements (every processor world in
/// it; components built against an earlier 0.1 version run too).
pub const WORLD: &str = "eddy:processor@0.1.2";

/// How often the epoch advances: the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// A module compiled and linked against the host, ready to instantiate;
/// or a builtin operator, which runs in its place.
pub struct CompiledModule<S: 'static>(ModuleKind<S>);

impl<S> Clone for CompiledModule<S> {
    fn clone(&self) -> Self {
        Self(match &self.0 {
            ModuleKind::Wasm(module) => ModuleKind::Wasm(module.clone()),
            ModuleKind::Builtin(builtin) => ModuleKind::Builtin(*builtin),
        })
    }
}

enum ModuleKind<S: 'static> {
    /// A WebAssembly component.
    Wasm(Arc<WasmModule<S>>),
    /// An operator compiled into the host.
    Builtin(Builtin),
}

/// A component, compiled for each engine that runs it.
struct WasmModule<S: 'static> {
    digest: String,
    /// Compiled for the engine guests in good standing run in.
    fast: Linked<S>,
    /// Compiled for the containment engine when a guest first fails
    /// (most modules never do); `None` if that failed, and the fast code
    /// is used instead.
    contained: OnceLock<Option<Linked<S>>>,
}

/// What a guest instance is made from.
enum Target<'a, S: 'static> {
    Wasm(&'a Linked<S>),
    Builtin(Builtin),
}

impl<S> CompiledModule<S> {
    /// The world the module implements, as `upload` reports it: this
    /// host's version of it, or the earlier version whose shape it has.
    pub fn world(&self) -> String {
        let version = WORLD.split_once('@').map_or("", |(_, v)| v);
        let (world, version) = match &self.0 {
            ModuleKind::Wasm(module) => match module.fast {
                Linked::Typed(_) => ("processor", version),
                Linked::Packed(_) => ("packed-processor", version),
                Linked::Packed011(_) => ("packed-processor", "0.1.1"),
            },
            ModuleKind::Builtin(_) => ("builtin", version),
        };
        format!("eddy:processor/{world}@{version}")
    }
}

/// The daemon's engines, their linkers and the compiled-module cache, for
/// guests whose imports reach an `S`.
pub struct Runtime<S: 'static> {
    fast: TierEngine<S>,
    contained: TierEngine<S>,
    compiled: Mutex<cache::CompiledCache<WasmModule<S>>>,
    /// A lock per module being loaded, so it is compiled once.
    loading: cache::Loading,
    /// Where compiled modules are kept across restarts, named by digest
    /// and engine: a restarted daemon loads native code instead of
    /// compiling again (seconds per module on a small machine).
    compiled_dir: Option<PathBuf>,
    /// Where a module's bytes are found again, to compile it for the
    /// containment engine when one of its guests first fails.
    modules: Option<Arc<ModuleStore>>,
    /// Where guests that failed run; without one, in this process.
    worker: Option<Arc<WorkerProcess>>,
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
    /// How to start the guest worker process that guests which failed
    /// run in; `None` runs them in this process, in its containment engine.
    pub worker: Option<WorkerOptions>,
}

impl<S: GuestServices> Runtime<S> {
    /// Creates the engines and starts their epoch ticker thread.
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Arc<Self>> {
        if let Some(dir) = &options.compiled_dir {
            std::fs::create_dir_all(dir)?;
        }
        let runtime = Arc::new(Self {
            fast: TierEngine::new(Tier::Fast, options.max_memory_bytes)?,
            contained: TierEngine::new(Tier::Contained, options.max_memory_bytes)?,
            compiled: Mutex::new(cache::CompiledCache::new(cache::CACHED_MODULES)),
            loading: cache::Loading::default(),
            compiled_dir: options.compiled_dir,
            modules: options.modules,
            worker: options.worker.map(|w| Arc::new(WorkerProcess::new(w))),
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

    /// The guest worker's process id, while one runs.
    pub fn guest_worker_pid(&self) -> Option<u32> {
        self.worker.as_ref()?.pid()
    }

    fn engine(&self, tier: Tier) -> &TierEngine<S> {
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
    ) -> Result<Linked<S>, ModuleError> {
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
    ) -> Result<CompiledModule<S>, ModuleError> {
        if let Some(builtin) = Builtin::parse(digest).map_err(ModuleError::Invalid)? {
            return Ok(CompiledModule(ModuleKind::Builtin(builtin)));
        }
        if let Some(module) = self.lock_cache().get(digest) {
            return Ok(CompiledModule(ModuleKind::Wasm(module)));
        }
        // One load per digest at a time: guests of a new module often start
        // together (a pipeline's tasks; contained guests in the worker), and
        // a compile takes seconds.
        let loading = self.loading.get(digest);
        let _loading = loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(module) = self.lock_cache().get(digest) {
            return Ok(CompiledModule(ModuleKind::Wasm(module)));
        }
        let wasm = Arc::new(WasmModule {
            digest: digest.to_owned(),
            fast: self.load(Tier::Fast, digest, load)?,
            contained: OnceLock::new(),
        });
        self.lock_cache().insert(digest, wasm.clone());
        Ok(CompiledModule(ModuleKind::Wasm(wasm)))
    }

    /// Forgets module `digest` (it was deleted): its compiled code in
    /// memory, once no guest runs it, and on disk.
    pub fn forget(&self, digest: &str) {
        self.lock_cache().remove(digest);
        for tier in [Tier::Fast, Tier::Contained] {
            if let Some(path) = self.compiled_path(tier, digest)
                && let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not delete a deleted module's compiled code");
            }
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, cache::CompiledCache<WasmModule<S>>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Instantiates `module` over `services` in the engine of `tier`. A
    /// contained module runs in the guest worker process when there is one
    /// (in this process if it cannot be started); otherwise it is compiled
    /// for the containment engine on its first use there (the fast
    /// engine's code serves if that fails).
    pub fn instantiate(
        &self,
        module: &CompiledModule<S>,
        services: S,
        limits: GuestLimits,
        tier: Tier,
    ) -> Result<Guest<S>, GuestError> {
        if let (ModuleKind::Wasm(wasm), Tier::Contained, Some(worker)) =
            (&module.0, tier, &self.worker)
        {
            match worker.connect() {
                Ok(connection) => {
                    return RemoteGuest::instantiate(
                        worker.clone(),
                        connection,
                        &wasm.digest,
                        services,
                        limits,
                    )
                    .map(Guest::remote);
                }
                Err(e) => tracing::warn!(
                    guest = services.label(), error = %e,
                    "the guest worker cannot be reached; this failing guest runs in the daemon's process"
                ),
            }
        }
        let (engine, target) = match &module.0 {
            ModuleKind::Wasm(wasm) if tier == Tier::Contained => match self.contained(wasm) {
                Some(linked) => (&self.contained.engine, Target::Wasm(linked)),
                None => (&self.fast.engine, Target::Wasm(&wasm.fast)),
            },
            ModuleKind::Wasm(wasm) => (&self.fast.engine, Target::Wasm(&wasm.fast)),
            ModuleKind::Builtin(builtin) => (&self.fast.engine, Target::Builtin(*builtin)),
        };
        LocalGuest::new(engine, target, services, limits, EPOCH_TICK).map(Guest::local)
    }

    /// `wasm` compiled for the containment engine, compiling it on first
    /// use; `None` if it cannot be.
    fn contained<'a>(&self, wasm: &'a WasmModule<S>) -> Option<&'a Linked<S>> {
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

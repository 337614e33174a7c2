//! The WebAssembly runtime: one wasmtime [`Engine`] for the daemon, modules
//! compiled once per digest, and a guest instance per task with limits on
//! memory and time.
//!
//! Guest calls are synchronous and run on the task's own thread; the epoch
//! ticker interrupts any call that outlives its deadline, so a looping guest
//! costs its task, never the daemon.

mod bindings;
mod builtin;
mod guest;
mod host_api;
mod stderr;
mod validate;

pub use builtin::Builtin;
pub use guest::{Guest, GuestError, GuestLimits};
pub use host_api::{TaskServices, TimerKey};
pub use validate::ModuleError;

/// The guest contract's data types, as the host sees them.
pub mod bindings_types {
    pub use super::bindings::eddy::processor::types::*;
}

use bindings::ProcessorPre;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

/// The world version this host implements.
pub const WORLD: &str = "eddy:processor@0.1.0";

/// How often the epoch advances: the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// A module compiled and linked against the host, ready to instantiate;
/// or a builtin operator, which runs in its place.
#[derive(Clone)]
pub struct CompiledModule(ModuleKind);

#[derive(Clone)]
enum ModuleKind {
    /// A WebAssembly component.
    Wasm(ProcessorPre<host_api::GuestCtx>),
    /// An operator compiled into the host.
    Builtin(Builtin),
}

/// The daemon's one engine, its linker and the compiled-module cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<host_api::GuestCtx>,
    compiled: Mutex<HashMap<String, CompiledModule>>,
}

impl Runtime {
    /// Creates the engine and starts its epoch ticker thread.
    pub fn new() -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut linker = Linker::new(&engine);
        host_api::add_to_linker(&mut linker).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let runtime = Arc::new(Self {
            engine,
            linker,
            compiled: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&runtime);
        std::thread::Builder::new()
            .name("eddy-epoch".into())
            .spawn(move || {
                while let Some(runtime) = weak.upgrade() {
                    runtime.engine.increment_epoch();
                    drop(runtime);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(runtime)
    }

    /// Checks that `bytes` are a component implementing eddy's world and
    /// compiles it. Precompiled native code is never accepted.
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledModule, ModuleError> {
        validate::check_format(bytes)?;
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| ModuleError::Invalid(format!("the component does not compile: {e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(validate::import_error)?;
        let pre = ProcessorPre::new(pre).map_err(validate::export_error)?;
        Ok(CompiledModule(ModuleKind::Wasm(pre)))
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
        let bytes = load().map_err(|e| ModuleError::Io(format!("module {digest}: {e}")))?;
        let module = self.compile(&bytes)?;
        self.lock_cache().insert(digest.to_owned(), module.clone());
        Ok(module)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CompiledModule>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Instantiates `module` for one task.
    pub fn instantiate(
        &self,
        module: &CompiledModule,
        services: TaskServices,
        limits: GuestLimits,
    ) -> Result<Guest, GuestError> {
        Guest::new(&self.engine, module, services, limits, EPOCH_TICK)
    }
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
/// daemon); the next starts in the normal class.
fn demote_current_thread() {
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

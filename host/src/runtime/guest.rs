//! One guest instance: a store with limits, and the three calls of the world.

use super::bindings::eddy::processor::types::{Batch, FiredTimer, OutputRecord, TaskInfo};
use super::bindings::{Processor, ProcessorPre};
use super::host_api::{GuestCtx, TaskServices};
use std::time::Duration;
use wasmtime::{Engine, Store, Trap};

/// Limits on one guest instance.
#[derive(Clone, Copy, Debug)]
pub struct GuestLimits {
    /// Linear memory cap.
    pub memory_bytes: u64,
    /// Deadline for one call.
    pub call_timeout: Duration,
}

/// Why a guest call failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The call ran past its deadline and was interrupted.
    #[error("guest call exceeded its deadline of {0:?} and was interrupted (an endless loop?)")]
    Timeout(Duration),
    /// The guest needed more memory than its cap.
    #[error("guest exceeded its memory limit of {limit} bytes (it asked for {asked} bytes)")]
    OutOfMemory {
        /// The cap.
        limit: u64,
        /// The size it tried to grow to.
        asked: usize,
    },
    /// The guest trapped (a panic, an `unreachable`, an out-of-bounds access).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest returned an error: its instance is still usable.
    #[error("guest failed: {message}")]
    Failed {
        /// The guest's message.
        message: String,
        /// The failing record's index in the batch, when the guest knows it.
        record_index: Option<u32>,
    },
    /// The instance could not be created.
    #[error("could not instantiate the guest: {0}")]
    Instantiate(String),
}

/// A guest instance owned by one task.
pub struct Guest {
    store: Store<GuestCtx>,
    processor: Processor,
    limits: GuestLimits,
    deadline_ticks: u64,
}

impl Guest {
    pub(super) fn new(
        engine: &Engine,
        pre: &ProcessorPre<GuestCtx>,
        services: TaskServices,
        limits: GuestLimits,
        tick: Duration,
    ) -> Result<Self, GuestError> {
        let mut store = Store::new(engine, GuestCtx::new(services, limits.memory_bytes));
        store.limiter(|ctx| &mut ctx.limiter);
        let deadline_ticks =
            u64::try_from(limits.call_timeout.as_millis() / tick.as_millis().max(1))
                .unwrap_or(u64::MAX)
                .max(1);
        // Instantiation runs guest start code, so it gets a deadline too.
        store.set_epoch_deadline(deadline_ticks);
        store.epoch_deadline_trap();
        let processor = pre
            .instantiate(&mut store)
            .map_err(|e| GuestError::Instantiate(format!("{e:#}")))?;
        Ok(Self {
            store,
            processor,
            limits,
            deadline_ticks,
        })
    }

    /// A fresh instance of `module` with this instance's services: after a
    /// failed call the old one may be poisoned (a trap) or hold half a batch
    /// in its own memory.
    pub fn renew(
        self,
        runtime: &super::Runtime,
        module: &super::CompiledModule,
        task: &TaskInfo,
    ) -> Result<Guest, GuestError> {
        let limits = self.limits;
        let services = self.store.into_data().services;
        let mut guest = runtime.instantiate(module, services, limits)?;
        guest.init(task)?;
        Ok(guest)
    }

    /// The task's services, to commit or discard state after a call.
    pub fn services(&mut self) -> &mut TaskServices {
        &mut self.store.data_mut().services
    }

    /// Calls the guest's `init`.
    pub fn init(&mut self, task: &TaskInfo) -> Result<(), GuestError> {
        self.arm();
        let result = self.processor.call_init(&mut self.store, task);
        self.settle(result).map(|_| ())
    }

    /// Calls the guest's `process` with one batch.
    pub fn process(&mut self, batch: &Batch) -> Result<Vec<OutputRecord>, GuestError> {
        self.arm();
        let result = self.processor.call_process(&mut self.store, batch);
        self.settle(result)
    }

    /// Calls the guest's `on-timers`.
    pub fn on_timers(&mut self, timers: &[FiredTimer]) -> Result<Vec<OutputRecord>, GuestError> {
        self.arm();
        let result = self.processor.call_on_timers(&mut self.store, timers);
        self.settle(result)
    }

    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.store.data_mut().limiter.denied = None;
    }

    fn settle<T>(
        &mut self,
        result: wasmtime::Result<Result<T, super::bindings::eddy::processor::types::ProcessError>>,
    ) -> Result<T, GuestError> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(GuestError::Failed {
                message: e.message,
                record_index: e.record_index,
            }),
            Err(e) => Err(self.classify(e)),
        }
    }

    fn classify(&mut self, error: wasmtime::Error) -> GuestError {
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return GuestError::Timeout(self.limits.call_timeout);
        }
        let ctx = self.store.data();
        if let Some(asked) = ctx.limiter.denied {
            return GuestError::OutOfMemory {
                limit: self.limits.memory_bytes,
                asked,
            };
        }
        let stderr = ctx.stderr.contents();
        let tail: String = stderr
            .trim_end()
            .chars()
            .rev()
            .take(1000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let trap = error
            .downcast_ref::<Trap>()
            .map_or_else(|| format!("{error:#}"), ToString::to_string);
        if tail.is_empty() {
            GuestError::Trap(trap)
        } else {
            GuestError::Trap(format!("{trap}; guest stderr: {tail}"))
        }
    }
}

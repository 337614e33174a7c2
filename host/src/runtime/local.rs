//! A guest instance in this process (the daemon's, or the guest worker's):
//! a store with limits, and the three calls of the world.

use super::bindings::eddy::processor::types::{
    FiredTimer, OutputRecord, PackedOutputs, ProcessError, TaskInfo,
};
use super::bindings::packed::PackedProcessor;
use super::bindings::packed_0_1_1::PackedProcessor011;
use super::bindings::typed::Processor;
use super::builtin::Builtin;
use super::engine::Linked;
use super::guest::{GuestError, GuestLimits, WALL_DEADLINE_FACTOR, thread_cpu_time};
use super::host_api::{GuestCtx, HostFault, guest_time_domain};
use super::inputs::InputBatch;
use super::outputs::Outputs;
use super::services::{GuestInfo, GuestServices};
use crate::state::Timer;
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store, Trap};

/// A guest instance in this process.
pub(super) struct LocalGuest<S: 'static> {
    /// The guest's store; a builtin has one too, for its services.
    store: Store<GuestCtx<S>>,
    processor: Instance,
    limits: GuestLimits,
    deadline_ticks: u64,
}

/// What runs the calls.
enum Instance {
    Typed(Processor),
    /// A packed-world instance: batches go in as they were polled.
    Packed(PackedProcessor),
    /// A packed-world instance built against 0.1.1: timers answer typed.
    Packed011(PackedProcessor011),
    Builtin(Builtin),
}

impl<S: GuestServices> LocalGuest<S> {
    pub(super) fn new(
        engine: &Engine,
        target: super::Target<'_, S>,
        services: S,
        limits: GuestLimits,
        tick: Duration,
    ) -> Result<Self, GuestError> {
        let mut store = Store::new(
            engine,
            GuestCtx::new(services, limits.memory_bytes, limits.call_timeout),
        );
        store.limiter(|ctx| &mut ctx.limiter);
        let deadline_ticks = ticks(limits.call_timeout, tick);
        // Instantiation runs guest start code, so it gets a deadline too.
        store.set_epoch_deadline(deadline_ticks);
        store.data_mut().call_started = (Instant::now(), thread_cpu_time());
        let timeout = limits.call_timeout;
        let wall_limit = timeout.saturating_mul(WALL_DEADLINE_FACTOR);
        // The epochs count wall time; at each deadline the call goes on for
        // what is left of its budget in CPU time, and stops once it used it.
        store.epoch_deadline_callback(move |ctx| {
            let (wall_start, cpu_start) = ctx.data().call_started;
            let used = thread_cpu_time()
                .zip(cpu_start)
                .map(|(now, started)| now.saturating_sub(started));
            Ok(match used {
                Some(used) if used < timeout && wall_start.elapsed() < wall_limit => {
                    wasmtime::UpdateDeadline::Continue(ticks(timeout - used, tick))
                }
                _ => wasmtime::UpdateDeadline::Interrupt,
            })
        });
        let failed = |e: wasmtime::Error| GuestError::Instantiate(format!("{e:#}"));
        let processor = match target {
            super::Target::Wasm(Linked::Typed(pre)) => {
                Instance::Typed(pre.instantiate(&mut store).map_err(failed)?)
            }
            super::Target::Wasm(Linked::Packed(pre)) => {
                Instance::Packed(pre.instantiate(&mut store).map_err(failed)?)
            }
            super::Target::Wasm(Linked::Packed011(pre)) => {
                Instance::Packed011(pre.instantiate(&mut store).map_err(failed)?)
            }
            super::Target::Builtin(builtin) => Instance::Builtin(builtin),
        };
        Ok(Self {
            store,
            processor,
            limits,
            deadline_ticks,
        })
    }

    /// The limits the instance was made with.
    pub(super) fn limits(&self) -> GuestLimits {
        self.limits
    }

    /// The services back, to make another instance with.
    pub(super) fn into_services(self) -> S {
        self.store.into_data().services
    }

    /// The services the guest's imports reach, for the caller to commit or
    /// discard what a call did.
    pub(super) fn services(&mut self) -> &mut S {
        &mut self.store.data_mut().services
    }

    /// Calls the guest's `init`.
    pub(super) fn init(&mut self, info: &GuestInfo) -> Result<(), GuestError> {
        let task = &TaskInfo {
            pipeline: info.pipeline.clone(),
            step: info.step,
            partition: info.partition,
        };
        self.arm();
        let result = match &self.processor {
            Instance::Typed(processor) => processor.call_init(&mut self.store, task),
            Instance::Packed(processor) => processor.call_init(&mut self.store, task),
            Instance::Packed011(processor) => processor.call_init(&mut self.store, task),
            Instance::Builtin(_) => return Ok(()),
        };
        self.settle(result).map(|_| ())
    }

    /// Calls the guest's `process` with one batch.
    pub(super) fn process(&mut self, batch: &InputBatch) -> Result<Outputs, GuestError> {
        self.arm();
        let outputs = match &self.processor {
            Instance::Typed(processor) => match batch.typed() {
                Ok(typed) => {
                    let result = processor.call_process(&mut self.store, &typed);
                    self.settle(result).and_then(|o| self.typed_outputs(o))
                }
                Err(e) => Err(unreadable(e)),
            },
            Instance::Packed(processor) => {
                let result = processor.call_process_packed(&mut self.store, batch.packed());
                self.settle(result).and_then(|o| self.packed_outputs(o))
            }
            Instance::Packed011(processor) => {
                let result = processor.call_process_packed(&mut self.store, batch.packed());
                self.settle(result).and_then(|o| self.packed_outputs(o))
            }
            Instance::Builtin(builtin) => {
                super::builtin::process(*builtin, batch).map_err(unreadable)
            }
        };
        self.checked(outputs)
    }

    /// Calls the guest's `on-timers` with timers that are due, in order.
    pub(super) fn on_timers(&mut self, timers: &[Timer]) -> Result<Outputs, GuestError> {
        let timers: Vec<FiredTimer> = timers
            .iter()
            .map(|t| FiredTimer {
                domain: guest_time_domain(t.domain),
                at: t.at,
                key: t.key.clone(),
            })
            .collect();
        self.arm();
        let outputs = match &self.processor {
            Instance::Typed(processor) => {
                let result = processor.call_on_timers(&mut self.store, &timers);
                self.settle(result).and_then(|o| self.typed_outputs(o))
            }
            Instance::Packed(processor) => {
                let result = processor.call_on_timers_packed(&mut self.store, &timers);
                self.settle(result).and_then(|o| self.packed_outputs(o))
            }
            Instance::Packed011(processor) => {
                let result = processor.call_on_timers(&mut self.store, &timers);
                self.settle(result).and_then(|o| self.typed_outputs(o))
            }
            // No builtin sets timers.
            Instance::Builtin(_) => Ok(Outputs::default()),
        };
        self.checked(outputs)
    }

    /// A packed guest's outputs, read in place once checked.
    fn packed_outputs(&self, outputs: PackedOutputs) -> Result<Outputs, GuestError> {
        self.limits.read_packed(outputs)
    }

    /// A typed guest's outputs, packed.
    fn typed_outputs(&self, outputs: Vec<OutputRecord>) -> Result<Outputs, GuestError> {
        self.limits.check_count(outputs.len())?;
        Outputs::typed(outputs).map_err(unreadable)
    }

    /// A call's outputs once checked against the limits.
    fn checked(&self, outputs: Result<Outputs, GuestError>) -> Result<Outputs, GuestError> {
        outputs.and_then(|o| self.limits.check_outputs(&o).map(|()| o))
    }

    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let ctx = self.store.data_mut();
        ctx.call_started = (Instant::now(), thread_cpu_time());
        ctx.limiter.denied = None;
        ctx.services.call_started();
    }

    fn settle<T>(
        &mut self,
        result: wasmtime::Result<Result<T, ProcessError>>,
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
            return GuestError::Timeout {
                deadline: self.limits.call_timeout,
                elapsed: self.store.data().call_started.0.elapsed(),
            };
        }
        match error.downcast_ref::<HostFault>() {
            Some(HostFault::Store(m)) => return GuestError::Store(m.clone()),
            Some(HostFault::OverBudget(m)) => return GuestError::OverBudget(m.clone()),
            None => {}
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

/// Records the host packed and could not read back, which is a bug in
/// the host.
fn unreadable(e: eddy_abi::Malformed) -> GuestError {
    GuestError::Trap(format!(
        "internal error: records the host packed could not be read back: {e}"
    ))
}

/// Epoch ticks in `span`, at least one.
fn ticks(span: Duration, tick: Duration) -> u64 {
    u64::try_from(span.as_millis().div_ceil(tick.as_millis().max(1)))
        .unwrap_or(u64::MAX)
        .max(1)
}

//! One guest instance: a store with limits, and the three calls of the world.

use super::bindings::eddy::processor::types::{
    FiredTimer, OutputRecord, PackedOutputs, ProcessError, TaskInfo,
};
use super::bindings::packed::PackedProcessor;
use super::bindings::packed_0_1_1::PackedProcessor011;
use super::bindings::typed::Processor;
use super::builtin::Builtin;
use super::engine::{Linked, Tier};
use super::host_api::{GuestCtx, HostFault, guest_time_domain};
use super::inputs::InputBatch;
use super::outputs::Outputs;
use super::services::{GuestInfo, GuestServices};
use crate::state::Timer;
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store, Trap};

/// Limits on one guest instance.
#[derive(Clone, Copy, Debug)]
pub struct GuestLimits {
    /// Linear memory cap.
    pub memory_bytes: u64,
    /// Deadline for one call, in CPU time the call used: a call whose
    /// thread waited for a core (behind busier pipelines, or demoted to the
    /// idle class) is not mistaken for an endless loop. A call also stops
    /// after [`WALL_DEADLINE_FACTOR`] times this in wall time, whatever its
    /// CPU time (a guest that loops over short sleeps uses little).
    pub call_timeout: Duration,
    /// Most records one call may emit.
    pub max_output_records: u32,
    /// Most bytes (keys, values, headers) one call may emit.
    pub max_output_bytes: u64,
    /// Largest record one call may emit.
    pub max_record_bytes: u64,
}

/// Why a guest call failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The call ran past its deadline and was interrupted.
    #[error(
        "guest call exceeded its deadline of {deadline:?} and was interrupted after \
         {elapsed:.3?} (an endless loop?)"
    )]
    Timeout {
        /// The deadline, in CPU time the guest ran.
        deadline: Duration,
        /// How long (wall clock) the call ran before the host stopped it.
        elapsed: Duration,
    },
    /// The guest needed more memory than its cap.
    #[error(
        "guest exceeded its memory limit of {limit} bytes (its memories together asked for \
         {asked} bytes)"
    )]
    OutOfMemory {
        /// The cap.
        limit: u64,
        /// What all its memories would have taken together.
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
    /// The call returned more output than the limits allow. The instance
    /// is usable, but the call's outputs and state writes are discarded,
    /// like a trap's.
    #[error("guest output over the limit: {0}")]
    OutputLimit(String),
    /// The instance could not be created.
    #[error("could not instantiate the guest: {0}")]
    Instantiate(String),
    /// A host call of the guest ran over a host-side budget (state written
    /// in one call, timers, counters); the call stopped there.
    #[error("guest over a host budget: {0}")]
    OverBudget(String),
    /// The state store failed under a host call. Not the guest's fault,
    /// nor its records': the batch is to be retried, never skipped.
    #[error("the state store failed during the guest's call: {0}")]
    Store(String),
}

/// A guest instance, owned by whoever calls it (a task). A failed call
/// returns its error and changes nothing else: what the failure means
/// (renew the instance, contain it) is the caller's to decide.
pub struct Guest<S: 'static> {
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

impl<S: GuestServices> Guest<S> {
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

    /// A fresh instance of `module` with this instance's services, made in
    /// the engine of `tier` and initialised: after a failed call the old one
    /// may be poisoned (a trap) or hold half a batch in its own memory.
    pub fn renew(
        self,
        runtime: &super::Runtime<S>,
        module: &super::CompiledModule<S>,
        info: &GuestInfo,
        tier: Tier,
    ) -> Result<Guest<S>, GuestError> {
        let limits = self.limits;
        let services = self.store.into_data().services;
        let mut guest = runtime.instantiate(module, services, limits, tier)?;
        guest.init(info)?;
        Ok(guest)
    }

    /// The services the guest's imports reach, for the caller to commit or
    /// discard what a call did.
    pub fn services(&mut self) -> &mut S {
        &mut self.store.data_mut().services
    }

    /// Calls the guest's `init`.
    pub fn init(&mut self, info: &GuestInfo) -> Result<(), GuestError> {
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
    pub fn process(&mut self, batch: &InputBatch) -> Result<Outputs, GuestError> {
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
    pub fn on_timers(&mut self, timers: &[Timer]) -> Result<Outputs, GuestError> {
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
        // Before indexing them: a flood costs no more than its lists.
        check_count(&self.limits, outputs.timestamps.len())?;
        Outputs::packed(outputs)
            .map_err(|e| GuestError::Trap(format!("the guest's packed outputs are malformed: {e}")))
    }

    /// A typed guest's outputs, packed.
    fn typed_outputs(&self, outputs: Vec<OutputRecord>) -> Result<Outputs, GuestError> {
        check_count(&self.limits, outputs.len())?;
        Outputs::typed(outputs).map_err(unreadable)
    }

    /// A call's outputs once checked against the limits.
    fn checked(&self, outputs: Result<Outputs, GuestError>) -> Result<Outputs, GuestError> {
        outputs.and_then(|o| self.check_outputs(&o).map(|()| o))
    }

    /// Checks one call's outputs against the limits, so a record Kafka
    /// would refuse, or a flood, fails the call that made it (and goes
    /// through the error policy) rather than the delivery of a whole batch.
    fn check_outputs(&self, outputs: &Outputs) -> Result<(), GuestError> {
        let limits = &self.limits;
        check_count(limits, outputs.len())?;
        if let Some((index, size)) = outputs.first_larger_than(limits.max_record_bytes) {
            return Err(GuestError::OutputLimit(format!(
                "output record {index} is {size} bytes; the largest record eddy produces \
                 is {} bytes (the daemon's limits.max-record-bytes, which must not exceed \
                 the brokers' message.max.bytes)",
                limits.max_record_bytes
            )));
        }
        let total = outputs.bytes();
        if total > limits.max_output_bytes {
            return Err(GuestError::OutputLimit(format!(
                "one call emitted {total} bytes; the pipeline allows {} per call \
                 (--max-output-bytes)",
                limits.max_output_bytes
            )));
        }
        Ok(())
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

/// Checks how many records one call emitted against the limits.
fn check_count(limits: &GuestLimits, records: usize) -> Result<(), GuestError> {
    if records as u64 > u64::from(limits.max_output_records) {
        return Err(GuestError::OutputLimit(format!(
            "one call emitted {records} records; the pipeline allows {} per call \
             (--max-output-records)",
            limits.max_output_records
        )));
    }
    Ok(())
}

/// A call stops after this many times its deadline in wall time, even if
/// it used less CPU time than its deadline.
pub const WALL_DEADLINE_FACTOR: u32 = 2;

/// Epoch ticks in `span`, at least one.
fn ticks(span: Duration, tick: Duration) -> u64 {
    u64::try_from(span.as_millis().div_ceil(tick.as_millis().max(1)))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// CPU time the calling thread has used; `None` where the platform does not
/// say, and the deadline is then wall time. Public so benchmarks report in
/// the clock the daemon's deadlines and logs use.
pub fn thread_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec, which `now` is.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        let secs = u64::try_from(now.tv_sec).ok()?;
        let nanos = u32::try_from(now.tv_nsec).ok()?;
        (rc == 0).then(|| Duration::new(secs, nanos))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

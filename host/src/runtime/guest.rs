//! A guest instance, wherever it runs: in the daemon's process, or (once
//! it failed a call) in the guest worker process; its limits, and why a
//! call failed.

use super::bindings::eddy::processor::types::PackedOutputs;
use super::inputs::InputBatch;
use super::local::LocalGuest;
use super::outputs::Outputs;
use super::services::{GuestInfo, GuestServices};
use super::worker::RemoteGuest;
use crate::state::Timer;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Limits on one guest instance.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
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
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
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
    /// The worker process that runs guests which failed before died, or
    /// stopped answering, during the call. Not the records' fault: the
    /// batch is to be retried, in a new worker.
    #[error("{0}")]
    Worker(String),
}

impl GuestError {
    /// Whether the host failed rather than the guest (the store, the
    /// worker process): the batch is retried whole, never skipped or
    /// dead-lettered, and the guest is not contained for it.
    pub fn is_host_fault(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Worker(_))
    }
}

impl GuestLimits {
    /// Checks how many records one call emitted.
    pub(super) fn check_count(&self, records: usize) -> Result<(), GuestError> {
        if records as u64 > u64::from(self.max_output_records) {
            return Err(GuestError::OutputLimit(format!(
                "one call emitted {records} records; the pipeline allows {} per call \
                 (--max-output-records)",
                self.max_output_records
            )));
        }
        Ok(())
    }

    /// A packed call's outputs, their count checked before they are
    /// indexed (a flood costs no more than its lists) and their layout
    /// checked as they are; [`Self::check_outputs`] checks the rest.
    pub(super) fn read_packed(&self, lists: PackedOutputs) -> Result<Outputs, GuestError> {
        self.check_count(lists.timestamps.len())?;
        Outputs::packed(lists)
            .map_err(|e| GuestError::Trap(format!("the guest's packed outputs are malformed: {e}")))
    }

    /// Checks one call's outputs against the limits, so a record Kafka
    /// would refuse, or a flood, fails the call that made it (and goes
    /// through the error policy) rather than the delivery of a whole batch.
    pub(super) fn check_outputs(&self, outputs: &Outputs) -> Result<(), GuestError> {
        self.check_count(outputs.len())?;
        if let Some((index, size)) = outputs.first_larger_than(self.max_record_bytes) {
            return Err(GuestError::OutputLimit(format!(
                "output record {index} is {size} bytes; the largest record eddy produces \
                 is {} bytes (the daemon's limits.max-record-bytes, which must not exceed \
                 the brokers' message.max.bytes)",
                self.max_record_bytes
            )));
        }
        let total = outputs.bytes();
        if total > self.max_output_bytes {
            return Err(GuestError::OutputLimit(format!(
                "one call emitted {total} bytes; the pipeline allows {} per call \
                 (--max-output-bytes)",
                self.max_output_bytes
            )));
        }
        Ok(())
    }
}

/// A guest instance, owned by whoever calls it (a task). A failed call
/// returns its error and changes nothing else: what the failure means
/// (renew the instance, contain it) is the caller's to decide.
pub struct Guest<S: 'static>(Place<S>);

/// Where an instance runs.
enum Place<S: 'static> {
    /// In the daemon's process.
    Local(LocalGuest<S>),
    /// In the guest worker process, its services here.
    Worker(RemoteGuest<S>),
}

impl<S: GuestServices> Guest<S> {
    pub(super) fn local(guest: LocalGuest<S>) -> Self {
        Self(Place::Local(guest))
    }

    pub(super) fn remote(guest: RemoteGuest<S>) -> Self {
        Self(Place::Worker(guest))
    }

    /// Whether the instance runs in the guest worker process.
    pub fn in_worker(&self) -> bool {
        matches!(self.0, Place::Worker(_))
    }

    /// A fresh instance of `module` with this instance's services, made in
    /// the engine of `tier` and initialised: after a failed call the old one
    /// may be poisoned (a trap) or hold half a batch in its own memory.
    pub fn renew(
        self,
        runtime: &super::Runtime<S>,
        module: &super::CompiledModule<S>,
        info: &GuestInfo,
        tier: super::Tier,
    ) -> Result<Guest<S>, GuestError> {
        let (limits, services) = match self.0 {
            Place::Local(guest) => (guest.limits(), guest.into_services()),
            Place::Worker(guest) => (guest.limits(), guest.into_services()),
        };
        let mut guest = runtime.instantiate(module, services, limits, tier)?;
        guest.init(info)?;
        Ok(guest)
    }

    /// The services the guest's imports reach, for the caller to commit or
    /// discard what a call did.
    pub fn services(&mut self) -> &mut S {
        match &mut self.0 {
            Place::Local(guest) => guest.services(),
            Place::Worker(guest) => guest.services(),
        }
    }

    /// Calls the guest's `init`.
    pub fn init(&mut self, info: &GuestInfo) -> Result<(), GuestError> {
        match &mut self.0 {
            Place::Local(guest) => guest.init(info),
            Place::Worker(guest) => guest.init(info),
        }
    }

    /// Calls the guest's `process` with one batch.
    pub fn process(&mut self, batch: &InputBatch) -> Result<Outputs, GuestError> {
        match &mut self.0 {
            Place::Local(guest) => guest.process(batch),
            Place::Worker(guest) => guest.process(batch),
        }
    }

    /// Calls the guest's `on-timers` with timers that are due, in order.
    pub fn on_timers(&mut self, timers: &[Timer]) -> Result<Outputs, GuestError> {
        match &mut self.0 {
            Place::Local(guest) => guest.on_timers(timers),
            Place::Worker(guest) => guest.on_timers(timers),
        }
    }
}

/// A call stops after this many times its deadline in wall time, even if
/// it used less CPU time than its deadline.
pub const WALL_DEADLINE_FACTOR: u32 = 2;

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

//! Guests that failed a call run in a worker process of their own, as
//! browsers put sites in processes of their own.
//!
//! Beside the daemon's healthy guests, those that fail again and again
//! (loop to their deadline, trap, fill their memory, flood) are renewed
//! per poisoned record. In one process that slowed the healthy pipelines
//! to a fraction of their speed, however low the failing threads' CPU
//! priority: making and dropping instances, and growing memories, takes
//! the kernel's memory-map lock, which every thread of a process shares
//! (docs/performance.md, "Beside hostile pipelines"). In the worker they
//! take its lock instead.
//!
//! The daemon starts the worker (`eddy guest-worker`) when a guest first
//! fails, and starts it again if it dies. Each contained instance is a
//! connection to it ([`wire`]): the daemon sends calls and serves the
//! guest's host calls from the task's services, which never leave the
//! daemon, so state, timers, counters and budgets work as before. A worker
//! that dies, or stops answering, fails the calls in flight as the host's
//! fault, not the records': their batches are retried, never skipped.

mod process;
mod proxy;
mod remote;
mod serve;
mod wire;

pub use process::{WorkerOptions, WorkerProcess};
pub(crate) use remote::RemoteGuest;
pub use serve::{WorkerStore, run};

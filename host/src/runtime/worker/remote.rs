//! In the daemon: a guest instance that runs in the worker. Its services
//! stay here; the worker's host calls are served from them while a call
//! runs, so state, timers, counters and their budgets behave as for a
//! guest of the daemon's own. Everything the worker sends is checked as
//! a guest's output would be: a worker a guest took over can lie about
//! its own guests' results, never reach past them.

use super::super::host_api::MAX_SCAN;
use super::process::{Connection, WorkerProcess};
use super::wire::{self, Event, Hello, HostCall, Lists, Reply, Request};
use crate::runtime::services::{GuestInfo, GuestServices};
use crate::runtime::{GuestError, GuestLimits, InputBatch, Outputs, WALL_DEADLINE_FACTOR};
use crate::state::Timer;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long making an instance may take: its module may be compiled for
/// the containment engine first, seconds for a large one.
const INSTANTIATE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long past a call's own limit the worker may take to answer before
/// it is taken for stuck: its threads get only the CPU that healthy
/// pipelines leave, which under full load is little.
const STARVATION_ALLOWANCE: Duration = Duration::from_secs(120);

/// A guest instance in the worker process.
pub(crate) struct RemoteGuest<S> {
    connection: Connection,
    worker: Arc<WorkerProcess>,
    services: S,
    limits: GuestLimits,
}

impl<S: GuestServices> RemoteGuest<S> {
    /// Makes an instance of module `digest` in the worker; `services`
    /// serve its host calls.
    pub(crate) fn instantiate(
        worker: Arc<WorkerProcess>,
        connection: Connection,
        digest: &str,
        services: S,
        limits: GuestLimits,
    ) -> Result<Self, GuestError> {
        let mut guest = Self {
            connection,
            worker,
            services,
            limits,
        };
        // A worker that stops reading must not hold the task's thread in a
        // write either.
        let _ = guest
            .connection
            .stream
            .set_write_timeout(Some(guest.answer_limit()));
        let hello = Hello {
            token: guest.connection.token.clone(),
            digest: digest.to_owned(),
            label: guest.services.label().to_owned(),
            config: guest.services.config().clone(),
            limits,
        };
        if let Err(e) = wire::send(&mut guest.connection.stream, &hello) {
            return Err(guest.broken(e, INSTANTIATE_TIMEOUT));
        }
        guest.outcome(INSTANTIATE_TIMEOUT).map_err(|e| match e {
            GuestError::Instantiate(m) => GuestError::Instantiate(m),
            GuestError::Worker(m) => GuestError::Worker(m),
            other => GuestError::Instantiate(other.to_string()),
        })?;
        Ok(guest)
    }

    /// The services, for the caller to commit or discard what a call did.
    pub(crate) fn services(&mut self) -> &mut S {
        &mut self.services
    }

    /// The services back, to make another instance with.
    pub(crate) fn into_services(self) -> S {
        self.services
    }

    /// The limits the instance was made with.
    pub(crate) fn limits(&self) -> GuestLimits {
        self.limits
    }

    pub(crate) fn init(&mut self, info: &GuestInfo) -> Result<(), GuestError> {
        self.call(&Request::Init(info.clone())).map(|_| ())
    }

    pub(crate) fn process(&mut self, batch: &InputBatch) -> Result<Outputs, GuestError> {
        let lists = self.call(&Request::Process(batch.into()))?;
        self.checked(lists)
    }

    pub(crate) fn on_timers(&mut self, timers: &[Timer]) -> Result<Outputs, GuestError> {
        let lists = self.call(&Request::OnTimers(timers.to_vec()))?;
        self.checked(lists)
    }

    /// A call's outputs from the worker, checked as the daemon checks its
    /// own guests' outputs.
    fn checked(&self, lists: Lists) -> Result<Outputs, GuestError> {
        let outputs = self.limits.read_packed(lists.into())?;
        self.limits.check_outputs(&outputs)?;
        Ok(outputs)
    }

    /// Sends a call, serves the guest's host calls until it is done, and
    /// returns its outputs.
    fn call(&mut self, request: &Request) -> Result<Lists, GuestError> {
        self.services.call_started();
        let limit = self.answer_limit();
        if let Err(e) = wire::send(&mut self.connection.stream, request) {
            return Err(self.broken(e, limit));
        }
        self.outcome(limit)
    }

    /// How long the worker may take to answer a call, or to read one.
    fn answer_limit(&self) -> Duration {
        self.limits
            .call_timeout
            .saturating_mul(WALL_DEADLINE_FACTOR)
            .saturating_add(STARVATION_ALLOWANCE)
    }

    /// The error of a connection that broke; a worker that timed out is
    /// taken for stuck and stopped, so that the next instance gets a new one.
    fn broken(&self, e: wire::WireError, waited: Duration) -> GuestError {
        if let wire::WireError::Io(io) = &e
            && matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        {
            self.worker.restart(self.connection.generation);
            return GuestError::Worker(format!(
                "the guest worker did not answer within {waited:?}, so it was restarted"
            ));
        }
        GuestError::Worker(format!("the connection to the guest worker failed: {e}"))
    }

    /// Serves host calls until the worker says the call is done; a worker
    /// silent for `limit` as a whole is stopped.
    fn outcome(&mut self, limit: Duration) -> Result<Lists, GuestError> {
        let until = Instant::now() + limit;
        // No message from a guest can be larger than its memory.
        let largest = usize::try_from(self.limits.memory_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(1 << 20);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let received = self
                .connection
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(wire::WireError::Io)
                .and_then(|()| wire::receive::<Event>(&mut self.connection.stream, largest));
            let event = match received {
                Ok(event) => event,
                Err(e) => return Err(self.broken(e, limit)),
            };
            match event {
                Event::Done(outcome) => return outcome,
                Event::Call(call) => {
                    let reply = self.serve(call);
                    if let Err(e) = wire::send(&mut self.connection.stream, &Request::Reply(reply))
                    {
                        return Err(self.broken(e, limit));
                    }
                }
            }
        }
    }

    /// Answers one host call from the services.
    fn serve(&mut self, call: HostCall) -> Reply {
        let services = &mut self.services;
        let state =
            |result: Result<Reply, crate::state::StateError>| result.unwrap_or_else(Reply::State);
        match call {
            HostCall::Log { level, message } => {
                let level = level.parse().unwrap_or(tracing::Level::INFO);
                services.log(level, &message);
                Reply::Unit
            }
            HostCall::Get(key) => state(services.get(&key).map(Reply::Value)),
            HostCall::Put(key, value) => state(services.put(key, value).map(|()| Reply::Unit)),
            HostCall::Delete(key) => state(services.delete(key).map(|()| Reply::Unit)),
            HostCall::Scan { start, end, limit } => {
                let limit = limit.min(MAX_SCAN) as usize;
                state(
                    services
                        .scan(bound(&start), bound(&end), limit)
                        .map(Reply::Entries),
                )
            }
            HostCall::ScanPrefix {
                prefix,
                start_after,
                limit,
            } => {
                let limit = limit.min(MAX_SCAN) as usize;
                state(
                    services
                        .scan_prefix(&prefix, start_after.as_deref(), limit)
                        .map(Reply::Entries),
                )
            }
            HostCall::SetTimer(timer) => match services.set_timer(timer) {
                Ok(()) => Reply::Unit,
                Err(e) => Reply::OverBudget(e.0),
            },
            HostCall::CancelTimer(timer) => {
                services.cancel_timer(timer);
                Reply::Unit
            }
            HostCall::StreamTime => Reply::StreamTime(services.stream_time()),
            HostCall::Increment { name, delta } => match services.increment(&name, delta) {
                Ok(()) => Reply::Unit,
                Err(e) => Reply::OverBudget(e.0),
            },
        }
    }
}

fn bound(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    bound.as_ref().map(Vec::as_slice)
}

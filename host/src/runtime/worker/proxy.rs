//! In the worker: the host services of a guest, answered by the daemon.
//! Each call goes over the guest's connection and waits for the reply;
//! the daemon keeps the state, timers, counters and budgets, as it does
//! for a guest of its own.

use super::wire::{self, Event, HostCall, Reply, Request};
use crate::runtime::{GuestServices, OverBudget};
use crate::state::{Entries, StateError, Timer};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::os::unix::net::UnixStream;

/// Largest reply the worker reads: a scan's entries can be large, the
/// daemon is trusted.
const MAX_REPLY: usize = 1 << 30;

/// A guest's services in the worker.
pub(super) struct ProxyServices {
    connection: UnixStream,
    label: String,
    config: BTreeMap<String, String>,
}

impl ProxyServices {
    pub(super) fn new(
        connection: UnixStream,
        label: String,
        config: BTreeMap<String, String>,
    ) -> Self {
        Self {
            connection,
            label,
            config,
        }
    }

    /// Sends the call and waits for the daemon's reply. A broken
    /// connection means the daemon dropped the guest: the call fails as
    /// the store failing, which stops the guest's call. `&self`: a socket
    /// reads and writes through a shared handle.
    fn call(&self, call: HostCall) -> Result<Reply, StateError> {
        let lost = |e: wire::WireError| {
            StateError::Unavailable(format!("the daemon's side of the guest went away: {e}"))
        };
        let mut connection = &self.connection;
        wire::send(&mut connection, &Event::Call(call)).map_err(lost)?;
        match wire::receive(&mut connection, MAX_REPLY).map_err(lost)? {
            Request::Reply(reply) => Ok(reply),
            _ => Err(StateError::Unavailable(
                "the daemon sent a request where a reply was due".into(),
            )),
        }
    }

    fn state<T>(
        &mut self,
        call: HostCall,
        read: impl FnOnce(Reply) -> Option<T>,
    ) -> Result<T, StateError> {
        match self.call(call)? {
            Reply::State(e) => Err(e),
            reply => read(reply).ok_or_else(unexpected),
        }
    }

    fn budgeted(&mut self, call: HostCall) -> Result<(), OverBudget> {
        match self.call(call) {
            Ok(Reply::OverBudget(m)) => Err(OverBudget(m)),
            Ok(_) => Ok(()),
            // Stops the guest's call like a budget: nothing it does next
            // can reach the daemon.
            Err(e) => Err(OverBudget(e.to_string())),
        }
    }
}

fn unexpected() -> StateError {
    StateError::Unavailable("the daemon's reply does not answer the call".into())
}

impl GuestServices for ProxyServices {
    fn label(&self) -> &str {
        &self.label
    }

    /// The daemon starts the call's budgets as it sends the call.
    fn call_started(&mut self) {}

    fn log(&mut self, level: tracing::Level, message: &str) {
        let call = HostCall::Log {
            level: level.as_str().to_owned(),
            message: message.to_owned(),
        };
        // A log line the daemon cannot take is lost with the connection.
        let _ = self.call(call);
    }

    fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.state(HostCall::Get(key.to_vec()), |reply| match reply {
            Reply::Value(value) => Some(value),
            _ => None,
        })
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        self.state(HostCall::Put(key, value), unit)
    }

    fn delete(&mut self, key: Vec<u8>) -> Result<(), StateError> {
        self.state(HostCall::Delete(key), unit)
    }

    fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError> {
        let call = HostCall::Scan {
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        self.state(call, entries)
    }

    fn scan_prefix(
        &mut self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError> {
        let call = HostCall::ScanPrefix {
            prefix: prefix.to_vec(),
            start_after: start_after.map(<[u8]>::to_vec),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        self.state(call, entries)
    }

    fn set_timer(&mut self, timer: Timer) -> Result<(), OverBudget> {
        self.budgeted(HostCall::SetTimer(timer))
    }

    fn cancel_timer(&mut self, timer: Timer) {
        let _ = self.call(HostCall::CancelTimer(timer));
    }

    fn stream_time(&self) -> Option<i64> {
        match self.call(HostCall::StreamTime).ok()? {
            Reply::StreamTime(time) => time,
            _ => None,
        }
    }

    fn increment(&mut self, name: &str, delta: u64) -> Result<(), OverBudget> {
        self.budgeted(HostCall::Increment {
            name: name.to_owned(),
            delta,
        })
    }
}

fn unit(reply: Reply) -> Option<()> {
    matches!(reply, Reply::Unit).then_some(())
}

fn entries(reply: Reply) -> Option<Entries> {
    match reply {
        Reply::Entries(entries) => Some(entries),
        _ => None,
    }
}

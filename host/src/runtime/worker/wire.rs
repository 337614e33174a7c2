//! What the daemon and its guest worker say to each other over a
//! connection, and how it is framed: a little-endian `u32` length, then
//! the message in postcard.
//!
//! One connection carries one guest instance. The daemon opens it with a
//! [`Hello`] and then sends one [`Request`] at a time; while the worker
//! runs it, the guest's host calls come back as [`Event::Call`], each
//! answered by a [`Request::Reply`], until [`Event::Done`] ends it. So
//! there is never more than one message in flight, and neither side
//! buffers beyond the frame it reads.

use super::super::bindings::eddy::processor::types::{PackedBatch, PackedOutputs};
use super::super::services::GuestInfo;
use super::super::{GuestError, GuestLimits, InputBatch};
use crate::state::{Entries, StateError, Timer};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Bound;

/// The first message on a connection: who may talk, and which guest to make.
#[derive(Serialize, Deserialize)]
pub(super) struct Hello {
    /// The secret the worker was started with: only its daemon knows it.
    pub(super) token: Vec<u8>,
    /// The module's digest, found in the daemon's module store.
    pub(super) digest: String,
    /// Names the guest in the worker's logs.
    pub(super) label: String,
    /// The pipeline's configuration, which the guest reads.
    pub(super) config: BTreeMap<String, String>,
    /// The instance's limits.
    pub(super) limits: GuestLimits,
}

/// From the daemon, after the [`Hello`].
#[derive(Serialize, Deserialize)]
pub(super) enum Request {
    /// Call the guest's `init`.
    Init(GuestInfo),
    /// Call the guest's `process` with a batch.
    Process(Batch),
    /// Call the guest's `on-timers` with timers that are due.
    OnTimers(Vec<Timer>),
    /// The answer to the guest's last host call.
    Reply(Reply),
}

/// From the worker.
#[derive(Serialize, Deserialize)]
pub(super) enum Event {
    /// The guest calls the host; the call waits for the daemon's reply.
    Call(HostCall),
    /// The instance was made (the answer to the [`Hello`]), or a call
    /// ended: its outputs (none for `init`) or why it failed.
    Done(Result<Lists, GuestError>),
}

/// A host call of the guest, as `GuestServices` has them.
#[derive(Serialize, Deserialize)]
pub(super) enum HostCall {
    /// A log line, at a level named as `tracing` names them.
    Log {
        level: String,
        message: String,
    },
    Get(Vec<u8>),
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Scan {
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        limit: u32,
    },
    ScanPrefix {
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    },
    SetTimer(Timer),
    CancelTimer(Timer),
    StreamTime,
    Increment {
        name: String,
        delta: u64,
    },
}

/// The daemon's answer to a [`HostCall`].
#[derive(Serialize, Deserialize)]
pub(super) enum Reply {
    /// Done, nothing to return.
    Unit,
    Value(Option<Vec<u8>>),
    Entries(Entries),
    StreamTime(Option<i64>),
    /// The state call failed.
    State(StateError),
    /// A timer or counter over its budget.
    OverBudget(String),
}

/// A batch of input records as the packed world lays them out, with where
/// each record starts, so the worker rebuilds it without parsing.
#[derive(Serialize, Deserialize)]
pub(super) struct Batch {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) lengths: Vec<u32>,
    pub(super) data: Vec<u8>,
    pub(super) timestamps: Vec<i64>,
    pub(super) offsets: Vec<i64>,
    pub(super) starts: Vec<(usize, usize)>,
}

/// A call's outputs as the packed world lays them out; checked again by
/// the daemon, which trusts nothing the worker says.
#[derive(Serialize, Deserialize, Default)]
pub(super) struct Lists {
    pub(super) lengths: Vec<u32>,
    pub(super) data: Vec<u8>,
    pub(super) timestamps: Vec<i64>,
    pub(super) outputs: Vec<String>,
}

impl From<&InputBatch> for Batch {
    fn from(batch: &InputBatch) -> Self {
        let (lists, starts) = batch.parts();
        Self {
            topic: lists.topic.clone(),
            partition: lists.partition,
            lengths: lists.lengths.clone(),
            data: lists.data.clone(),
            timestamps: lists.timestamps.clone(),
            offsets: lists.offsets.clone(),
            starts: starts.to_vec(),
        }
    }
}

impl From<Batch> for InputBatch {
    fn from(batch: Batch) -> Self {
        let lists = PackedBatch {
            topic: batch.topic,
            partition: batch.partition,
            lengths: batch.lengths,
            data: batch.data,
            timestamps: batch.timestamps,
            offsets: batch.offsets,
        };
        InputBatch::from_parts(lists, batch.starts)
    }
}

impl From<PackedOutputs> for Lists {
    fn from(lists: PackedOutputs) -> Self {
        Self {
            lengths: lists.lengths,
            data: lists.data,
            timestamps: lists.timestamps,
            outputs: lists.outputs,
        }
    }
}

impl From<Lists> for PackedOutputs {
    fn from(lists: Lists) -> Self {
        Self {
            lengths: lists.lengths,
            data: lists.data,
            timestamps: lists.timestamps,
            outputs: lists.outputs,
        }
    }
}

/// Why a frame could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a message of {size} bytes is over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("a malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Sends `message` as one frame.
pub(super) fn send<T: Serialize>(to: &mut impl Write, message: &T) -> Result<(), WireError> {
    // The length first, filled in once the message is encoded.
    let mut frame = postcard::to_extend(message, vec![0u8; 4])?;
    let size = frame.len() - 4;
    let length = u32::try_from(size).map_err(|_| WireError::TooLarge {
        size,
        limit: u32::MAX as usize,
    })?;
    frame[..4].copy_from_slice(&length.to_le_bytes());
    to.write_all(&frame)?;
    Ok(())
}

/// Receives one frame of at most `limit` bytes, read exactly (nothing
/// beyond it is consumed).
pub(super) fn receive<T: DeserializeOwned>(
    from: &mut impl Read,
    limit: usize,
) -> Result<T, WireError> {
    let mut length = [0u8; 4];
    from.read_exact(&mut length)?;
    let size = u32::from_le_bytes(length) as usize;
    if size > limit {
        return Err(WireError::TooLarge { size, limit });
    }
    let mut body = vec![0u8; size];
    from.read_exact(&mut body)?;
    Ok(postcard::from_bytes(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_goes_through_and_an_oversized_one_is_refused() {
        let call = HostCall::Put(b"key".to_vec(), vec![7; 100]);
        let mut frame = Vec::new();
        send(&mut frame, &call).expect("sent");
        let back: HostCall = receive(&mut frame.as_slice(), 1000).expect("received");
        assert!(matches!(back, HostCall::Put(k, v) if k == b"key" && v == vec![7; 100]));
        let refused = receive::<HostCall>(&mut frame.as_slice(), 50);
        assert!(
            matches!(refused, Err(WireError::TooLarge { limit: 50, .. })),
            "a frame over the limit is refused before it is read"
        );
    }
}

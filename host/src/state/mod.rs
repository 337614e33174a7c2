//! Task state: a key-value store per task behind a small trait, and the
//! batch view guests read and write through.
//!
//! The store only ever sees whole batches ([`WriteBatch`]); a guest's writes
//! are buffered in [`TaskState`] until the batch's outputs are acknowledged,
//! so a failed batch leaves the store untouched. The in-memory store here is
//! what the daemon uses today: state lives as long as the task.

mod memory;
mod task_state;

pub use memory::MemoryStore;
pub use task_state::{StateLimits, TaskState};

use std::collections::BTreeMap;
use std::ops::Bound;

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A key or value is over the pipeline's limit.
    #[error("{0}")]
    TooLarge(String),
    /// The store could not serve the request.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// State entries, (key, value), in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A batch of mutations: the last value per key, `None` deleting it.
pub type WriteBatch = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A key-value store holding one task's committed state.
pub trait StateStore: Send {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;

    /// Up to `limit` entries within the bounds, in key order.
    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError>;

    /// Applies a batch atomically.
    fn apply(&mut self, batch: WriteBatch) -> Result<(), StateError>;
}

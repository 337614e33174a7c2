//! Task state: a key-value store per task behind a small trait, the batch
//! view guests read and write through, and the layout both share with the
//! changelog.
//!
//! The store only ever sees whole batches ([`WriteBatch`]); a guest's writes
//! are buffered in [`TaskState`] until the batch's changelog records are
//! acknowledged, so a failed batch leaves the store untouched. Only
//! [`rocks`] knows RocksDB; everything else works against [`StateStore`]
//! (the in-memory store serves unit tests).

mod checkpoint;
mod keys;
mod memory;
pub mod rocks;
mod task_state;
mod timers;

pub use checkpoint::Checkpoint;
pub use keys::{CHECKPOINT_KEY, POSITION_KEY, data_key, timer_from_key, timer_key};
pub use memory::MemoryStore;
pub use rocks::{PipelineDb, StateMemory, StateMemoryUsage, TaskStore};
pub use task_state::{StateLimits, TaskState};
pub use timers::{TimeDomain, Timer};

/// The smallest key above every key starting with `prefix`; `None` if none.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    task_state::prefix_successor(prefix)
}

use std::collections::BTreeMap;
use std::ops::Bound;

/// Why a state operation failed.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StateError {
    /// A key or value is over the pipeline's limit.
    #[error("{0}")]
    TooLarge(String),
    /// The store could not serve the request.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The guest's writes ran over a host-side budget (bytes pending in one
    /// call, timers): the call fails, whatever the guest does with the error.
    #[error("{0}")]
    OverBudget(String),
}

/// State entries, (key, value), in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A batch of mutations: the last value per key, `None` deleting it.
pub type WriteBatch = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A key-value store holding one task's committed state.
///
/// Keys are the store's own layout ([`keys`](self::data_key)): user data,
/// timers and the checkpoint side by side, so one [`WriteBatch`] commits all
/// three atomically.
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

    /// Removes everything, to rebuild from the changelog.
    fn clear(&mut self) -> Result<(), StateError>;
}

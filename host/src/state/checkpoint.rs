use serde::{Deserialize, Serialize};

/// How far a task's state reaches: the next input offset to process and the
/// stream time at that point. Stored with the state and written to the
/// changelog after every batch, so state and input position never disagree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The next input offset to process; `None` before the first batch.
    pub offset: Option<i64>,
    /// The highest record timestamp seen.
    pub stream_time: Option<i64>,
}

impl Checkpoint {
    /// The bytes stored and logged.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored checkpoint; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

use super::{Entries, StateError, StateStore, WriteBatch};
use std::collections::BTreeMap;
use std::ops::Bound;

/// State held in memory, for tests of the code above the store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl StateStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.entries.get(key).cloned())
    }

    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError> {
        Ok(self
            .entries
            .range::<[u8], _>((start, end))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&mut self, batch: WriteBatch) -> Result<(), StateError> {
        for (key, value) in batch {
            match value {
                Some(value) => self.entries.insert(key, value),
                None => self.entries.remove(&key),
            };
        }
        Ok(())
    }

    fn clear(&mut self) -> Result<(), StateError> {
        self.entries.clear();
        Ok(())
    }
}

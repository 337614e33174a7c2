use super::keys::{data_key, data_range, timer_from_key, timer_range, user_key};
use super::{Entries, StateError, StateStore, WriteBatch};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Size limits on state entries.
#[derive(Clone, Copy, Debug)]
pub struct StateLimits {
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 4 << 10,
            max_value_bytes: 1 << 20,
        }
    }
}

/// A task's view of its state during a batch: committed entries plus the
/// batch's own writes, which reads see first.
///
/// Guest calls go to the data namespace; the host adds timers and the
/// checkpoint to the same pending batch, so the batch commits as one.
pub struct TaskState {
    store: Box<dyn StateStore>,
    pending: WriteBatch,
    /// What `pending` holds, in bytes (see [`entry_bytes`]): the host
    /// memory a task's open commit takes, which its budgets bound.
    pending_bytes: u64,
    limits: StateLimits,
}

/// What one pending entry costs in host memory: its key and value, and
/// the map node around them.
fn entry_bytes(key: &[u8], value: Option<&[u8]>) -> u64 {
    const NODE: usize = 48;
    (key.len() + value.map_or(0, <[u8]>::len) + NODE) as u64
}

impl TaskState {
    /// A view over `store` with nothing pending.
    pub fn new(store: Box<dyn StateStore>, limits: StateLimits) -> Self {
        Self {
            store,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            limits,
        }
    }

    /// The value under the guest's `key`, this batch's writes included.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.get_raw(&data_key(key))
    }

    /// The value under a store key, this batch's writes included.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.pending.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.store.get(key),
        }
    }

    /// Buffers a write.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        self.check_key(&key)?;
        if value.len() > self.limits.max_value_bytes {
            return Err(StateError::TooLarge(format!(
                "value of {} bytes exceeds the limit of {} bytes",
                value.len(),
                self.limits.max_value_bytes
            )));
        }
        self.insert_pending(data_key(&key), Some(value));
        Ok(())
    }

    /// Buffers a delete.
    pub fn delete(&mut self, key: Vec<u8>) -> Result<(), StateError> {
        self.check_key(&key)?;
        self.insert_pending(data_key(&key), None);
        Ok(())
    }

    /// Buffers a write of a store key (timers, the checkpoint).
    pub fn put_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.insert_pending(key, value);
    }

    fn insert_pending(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let added = entry_bytes(&key, value.as_deref());
        let replaced = self
            .pending
            .get(&key)
            .map_or(0, |old| entry_bytes(&key, old.as_deref()));
        self.pending.insert(key, value);
        self.pending_bytes = (self.pending_bytes + added).saturating_sub(replaced);
    }

    /// The limits on entries.
    pub fn limits(&self) -> StateLimits {
        self.limits
    }

    /// The bytes the batch's writes hold (see [`entry_bytes`]).
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    fn check_key(&self, key: &[u8]) -> Result<(), StateError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(StateError::TooLarge(format!(
                "key of {} bytes exceeds the limit of {} bytes",
                key.len(),
                self.limits.max_key_bytes
            )));
        }
        Ok(())
    }

    /// Up to `limit` guest entries within the bounds, in key order, merging
    /// the batch's writes over the store.
    pub fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError> {
        let (lo, hi) = data_range();
        let start = start.map(data_key);
        let end = end.map(data_key);
        let start = match &start {
            Bound::Unbounded => Bound::Included(lo.as_slice()),
            b => b.as_ref().map(Vec::as_slice),
        };
        let end = match &end {
            Bound::Unbounded => Bound::Excluded(hi.as_slice()),
            b => b.as_ref().map(Vec::as_slice),
        };
        Ok(self
            .scan_raw(start, end, limit)?
            .into_iter()
            .filter_map(|(k, v)| user_key(&k).map(|k| (k.to_vec(), v)))
            .collect())
    }

    /// [`scan`](Self::scan) over store keys.
    pub fn scan_raw(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError> {
        let pending: Vec<_> = self.pending.range::<[u8], _>((start, end)).collect();
        // Fetch enough from the store that pending deletes cannot leave a
        // gap before the `limit`-th merged key.
        let deletes = pending.iter().filter(|(_, v)| v.is_none()).count();
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self
            .store
            .scan(start, end, limit.saturating_add(deletes))?
            .into_iter()
            .collect();
        for (key, value) in pending {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// Guest entries whose key starts with `prefix`, after `start_after` if given.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError> {
        let start = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let end = prefix_successor(prefix);
        let end = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.scan(start, end, limit)
    }

    /// Every pending timer in the store, for a task that starts.
    pub fn stored_timers(&self) -> Result<Vec<super::Timer>, StateError> {
        let (lo, hi) = timer_range();
        let entries = self.store.scan(
            Bound::Included(lo.as_slice()),
            Bound::Excluded(hi.as_slice()),
            usize::MAX,
        )?;
        Ok(entries
            .iter()
            .filter_map(|(k, _)| timer_from_key(k))
            .collect())
    }

    /// The batch's writes, in store keys.
    pub fn pending(&self) -> &WriteBatch {
        &self.pending
    }

    /// Replaces the batch's writes (to roll back to an earlier copy).
    pub fn set_pending(&mut self, pending: WriteBatch) {
        self.pending_bytes = pending
            .iter()
            .map(|(key, value)| entry_bytes(key, value.as_deref()))
            .sum();
        self.pending = pending;
    }

    /// Takes the batch's writes, leaving nothing pending.
    pub fn take_pending(&mut self) -> WriteBatch {
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    /// Applies a batch of store entries to the store (pending writes untouched).
    pub fn apply(&mut self, batch: WriteBatch) -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.store.apply(batch)
    }

    /// Makes the batch's writes durable in the store.
    pub fn commit(&mut self) -> Result<(), StateError> {
        let batch = self.take_pending();
        self.apply(batch)
    }

    /// Forgets the batch's writes.
    pub fn discard(&mut self) {
        self.take_pending();
    }

    /// Empties the store, to rebuild it from the changelog.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.take_pending();
        self.store.clear()
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// if there is none (the prefix is all `0xff`).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    fn state() -> TaskState {
        TaskState::new(Box::new(MemoryStore::default()), StateLimits::default())
    }

    fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<&[u8]> {
        entries.iter().map(|(k, _)| k.as_slice()).collect()
    }

    #[test]
    fn reads_see_pending_writes_and_discard_forgets_them() {
        let mut s = state();
        s.put(b"a".to_vec(), b"1".to_vec()).expect("put");
        s.commit().expect("commit");
        s.put(b"a".to_vec(), b"2".to_vec()).expect("put");
        s.delete(b"b".to_vec()).expect("delete");
        assert_eq!(s.get(b"a").expect("get"), Some(b"2".to_vec()));
        s.discard();
        assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()));
    }

    #[test]
    fn scans_merge_pending_writes_and_deletes_in_order() {
        let mut s = state();
        for k in ["p/1", "p/2", "p/3", "q/1"] {
            s.put(k.into(), b"x".to_vec()).expect("put");
        }
        s.commit().expect("commit");
        s.delete(b"p/1".to_vec()).expect("delete");
        s.put(b"p/25".to_vec(), b"y".to_vec()).expect("put");
        let page = s.scan_prefix(b"p/", None, 2).expect("scan");
        assert_eq!(keys(&page), [&b"p/2"[..], b"p/25"]);
        let rest = s.scan_prefix(b"p/", Some(b"p/25"), 10).expect("scan");
        assert_eq!(keys(&rest), [&b"p/3"[..]]);
        let all = s
            .scan(Bound::Unbounded, Bound::Unbounded, 100)
            .expect("scan");
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn pending_bytes_follow_overwrites_rollbacks_and_commits() {
        let mut s = state();
        s.put(b"a".to_vec(), vec![0; 1000]).expect("put");
        let one = s.pending_bytes();
        assert!(one >= 1001, "key and value counted: {one}");
        s.put(b"a".to_vec(), vec![0; 10]).expect("put");
        assert_eq!(
            s.pending_bytes(),
            one - 990,
            "an overwrite replaces, not adds"
        );
        let savepoint = s.pending().clone();
        let before = s.pending_bytes();
        s.put(b"b".to_vec(), vec![0; 5000]).expect("put");
        s.delete(b"c".to_vec()).expect("delete");
        assert!(s.pending_bytes() > before + 5000);
        s.set_pending(savepoint);
        assert_eq!(s.pending_bytes(), before, "a rollback restores the count");
        s.commit().expect("commit");
        assert_eq!(s.pending_bytes(), 0);
    }

    #[test]
    fn oversize_entries_are_refused() {
        let mut s = TaskState::new(
            Box::new(MemoryStore::default()),
            StateLimits {
                max_key_bytes: 4,
                max_value_bytes: 4,
            },
        );
        assert!(matches!(
            s.put(b"toolong".to_vec(), vec![]),
            Err(StateError::TooLarge(_))
        ));
        assert!(matches!(
            s.put(b"k".to_vec(), vec![0; 5]),
            Err(StateError::TooLarge(_))
        ));
    }

    #[test]
    fn prefix_successor_handles_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff]), None);
    }
}

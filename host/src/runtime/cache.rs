//! Compiled modules kept in memory, by digest: the most recently used
//! ones, so a daemon that saw many modules over its life does not keep the
//! native code of every one. Only the cache's own references are let go:
//! a module a pipeline runs stays alive through the pipeline's, and comes
//! back from the compiled-code cache on disk when it is needed again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// A lock per module digest being loaded, held while it compiles, so that
/// guests starting together compile it once. Entries go when their last
/// holder lets go.
#[derive(Default)]
pub(super) struct Loading(Mutex<HashMap<String, Weak<Mutex<()>>>>);

impl Loading {
    /// The lock of `digest`: the one others hold, or a new one.
    pub(super) fn get(&self, digest: &str) -> Arc<Mutex<()>> {
        // A panic while holding the map cannot leave it inconsistent.
        let mut locks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, lock| lock.strong_count() > 0);
        if let Some(lock) = locks.get(digest).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(Mutex::new(()));
        locks.insert(digest.to_owned(), Arc::downgrade(&lock));
        lock
    }
}

/// How many compiled modules the cache keeps beyond those in use.
pub(super) const CACHED_MODULES: usize = 64;

/// Modules by digest, with when each was last used.
pub(super) struct CompiledCache<M> {
    capacity: usize,
    entries: HashMap<String, (Arc<M>, u64)>,
    /// Counts uses, to order them.
    clock: u64,
}

impl<M> CompiledCache<M> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            clock: 0,
        }
    }

    /// Module `digest`, if kept; it becomes the most recently used.
    pub(super) fn get(&mut self, digest: &str) -> Option<Arc<M>> {
        self.clock += 1;
        let (module, used) = self.entries.get_mut(digest)?;
        *used = self.clock;
        Some(module.clone())
    }

    /// Keeps `module` under `digest`, letting go of the least recently
    /// used modules no one else holds while there are more than the
    /// capacity.
    pub(super) fn insert(&mut self, digest: &str, module: Arc<M>) {
        self.clock += 1;
        self.entries.insert(digest.to_owned(), (module, self.clock));
        while self.entries.len() > self.capacity {
            let idle = self
                .entries
                .iter()
                .filter(|(_, (module, _))| Arc::strong_count(module) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(digest, _)| digest.clone());
            match idle {
                Some(digest) => self.entries.remove(&digest),
                None => break,
            };
        }
    }

    /// Lets go of module `digest`.
    pub(super) fn remove(&mut self, digest: &str) {
        self.entries.remove(digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_idle_module_goes_first() {
        let mut cache = CompiledCache::new(2);
        let a = Arc::new("a");
        cache.insert("a", a.clone());
        cache.insert("b", Arc::new("b"));
        cache.insert("c", Arc::new("c"));
        assert!(cache.get("a").is_some(), "in use: kept over the capacity");
        assert!(
            cache.get("b").is_none(),
            "the least recently used idle one went"
        );
        drop(a);
        assert!(cache.get("c").is_some());
        cache.insert("d", Arc::new("d"));
        assert!(
            cache.get("a").is_none(),
            "idle now, and used least recently"
        );
        assert!(cache.get("c").is_some() && cache.get("d").is_some());
        cache.remove("c");
        assert!(cache.get("c").is_none());
    }

    #[test]
    fn loads_of_one_digest_share_a_lock_and_it_goes_with_them() {
        let loading = Loading::default();
        let first = loading.get("sha256:a");
        assert!(Arc::ptr_eq(&first, &loading.get("sha256:a")));
        assert!(!Arc::ptr_eq(&first, &loading.get("sha256:b")));
        drop(first);
        let _c = loading.get("sha256:c");
        let kept = loading.0.lock().map(|m| m.len()).unwrap_or(usize::MAX);
        assert_eq!(kept, 1, "only the lock still held is kept");
    }
}

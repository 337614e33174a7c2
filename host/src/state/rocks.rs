//! RocksDB, the only place that knows it: one database per pipeline, every
//! task's entries under a prefix of its own.
//!
//! A task's prefix is its step and changelog partition, so a task can only
//! ever reach its own entries and a partition's state moves (or is rebuilt)
//! as a unit.
//!
//! Writes skip RocksDB's write-ahead log: the changelog topic is the state's
//! log. A crash loses the writes not yet flushed to disk, position included,
//! so the store is as of an earlier commit and the restore replays the
//! changelog from there (as Kafka Streams does); a clean close flushes.
//!
//! Every database of a daemon draws on one [`StateMemory`]: a block cache
//! with the write buffers charged to it, so the state's memory is one
//! figure however many pipelines run (Kafka Streams' bounded-memory
//! recipe), not a cache and two write buffers per pipeline.

use super::{Entries, StateError, StateStore, WriteBatch};
use rocksdb::{
    BlockBasedOptions, Cache, DB, Direction, IteratorMode, Options, ReadOptions,
    WriteBufferManager, WriteOptions,
};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// The memory all state stores of a daemon share: one block cache of the
/// whole budget, with every store's write buffers (memtables) charged to
/// it up to half of it. Cheap to clone.
#[derive(Clone)]
pub struct StateMemory(Arc<SharedMemory>);

struct SharedMemory {
    budget: usize,
    cache: Cache,
    write_buffers: WriteBufferManager,
    /// The databases drawing on it, for the figures only they know.
    stores: Mutex<Vec<Weak<Database>>>,
}

/// What a [`StateMemory`] holds now, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateMemoryUsage {
    /// The budget: the shared cache's capacity.
    pub budget: u64,
    /// What the cache holds: data blocks, and the write buffers charged to it.
    pub cache: u64,
    /// The write buffers of every store (part of `cache`).
    pub write_buffers: u64,
    /// Index and filter blocks of open table files, kept beside the cache.
    pub table_readers: u64,
    /// Open stores (one per pipeline with state on this daemon).
    pub stores: u32,
}

impl StateMemory {
    /// The default budget of a daemon's state stores: what one pipeline's
    /// store used before the budget was shared (a 32 MiB cache and two
    /// 16 MiB write buffers).
    pub const DEFAULT_BUDGET: u64 = 64 << 20;

    /// A budget of `bytes` for every store's block cache and write buffers
    /// together. Write buffers may take up to half of it; a flush starts
    /// when they reach that.
    pub fn new(bytes: u64) -> Self {
        let budget = usize::try_from(bytes).unwrap_or(usize::MAX);
        let cache = Cache::new_lru_cache(budget);
        // No stall: a write that finds the buffers full starts a flush and
        // goes on, so a task never waits on another pipeline's flush.
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            budget / 2,
            false,
            cache.clone(),
        );
        Self(Arc::new(SharedMemory {
            budget,
            cache,
            write_buffers,
            stores: Mutex::new(Vec::new()),
        }))
    }

    /// The figures now: cheap enough to ask on every status request.
    pub fn usage(&self) -> StateMemoryUsage {
        let stores = self.open_stores();
        let mut usage = StateMemoryUsage {
            budget: self.0.budget as u64,
            cache: self.0.cache.get_usage() as u64,
            write_buffers: self.0.write_buffers.get_usage() as u64,
            ..StateMemoryUsage::default()
        };
        for db in stores.iter().filter_map(Weak::upgrade) {
            usage.stores += 1;
            usage.table_readers += db
                .property_int_value(rocksdb::properties::ESTIMATE_TABLE_READERS_MEM)
                .ok()
                .flatten()
                .unwrap_or(0);
        }
        usage
    }

    fn register(&self, db: &Arc<Database>) {
        self.open_stores().push(Arc::downgrade(db));
    }

    /// The stores drawing on it, closed ones forgotten.
    fn open_stores(&self) -> MutexGuard<'_, Vec<Weak<Database>>> {
        let mut stores = self.0.stores.lock().unwrap_or_else(PoisonError::into_inner);
        stores.retain(|db| db.strong_count() > 0);
        stores
    }
}

impl Default for StateMemory {
    fn default() -> Self {
        Self::new(Self::DEFAULT_BUDGET)
    }
}

/// One pipeline's database.
pub struct PipelineDb {
    db: Arc<Database>,
    path: PathBuf,
}

fn unavailable(e: rocksdb::Error) -> StateError {
    StateError::Unavailable(e.to_string())
}

/// The open database; flushes its memtables when the last user lets go,
/// since writes skip the write-ahead log.
struct Database(DB);

impl std::ops::Deref for Database {
    type Target = DB;

    fn deref(&self) -> &DB {
        &self.0
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Err(e) = self.0.flush() {
            tracing::warn!(error = %e, "could not flush the state store on close; the next start replays more of the changelog");
        }
    }
}

/// Writes without the write-ahead log (see the module docs).
fn write_options() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.disable_wal(true);
    options
}

impl PipelineDb {
    /// The settings state stores open with, drawing on `memory`; the
    /// benchmark's native word count opens its database with them too, to
    /// compare like with like.
    pub fn options(memory: &StateMemory) -> Options {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Small, write-heavy stores: a store's memtable is flushed at 16
        // MiB, or earlier when all stores' together reach the budget's half.
        options.set_write_buffer_size(16 << 20);
        options.set_write_buffer_manager(&memory.0.write_buffers);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&memory.0.cache);
        options.set_block_based_table_factory(&table);
        options.set_max_background_jobs(2);
        options
    }

    /// Opens (creating if needed) the database at `path`, drawing on `memory`.
    pub fn open(path: &Path, memory: &StateMemory) -> Result<Self, StateError> {
        let db = DB::open(&Self::options(memory), path).map_err(|e| {
            StateError::Unavailable(format!(
                "could not open the state store at {}: {e}",
                path.display()
            ))
        })?;
        let db = Arc::new(Database(db));
        memory.register(&db);
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store of one task: `step` of the pipeline, changelog `partition`.
    pub fn task_store(&self, step: u32, partition: u32) -> TaskStore {
        let mut prefix = Vec::with_capacity(8);
        prefix.extend_from_slice(&step.to_be_bytes());
        prefix.extend_from_slice(&partition.to_be_bytes());
        TaskStore {
            db: self.db.clone(),
            prefix,
        }
    }

    /// Deletes the database at `path` and everything in it.
    pub fn destroy(path: &Path) -> std::io::Result<()> {
        match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// One task's slice of its pipeline's database.
#[derive(Clone)]
pub struct TaskStore {
    db: Arc<Database>,
    prefix: Vec<u8>,
}

impl TaskStore {
    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    fn prefix_end(&self) -> Vec<u8> {
        super::task_state::prefix_successor(&self.prefix).unwrap_or_else(|| vec![0xff; 9])
    }
}

impl StateStore for TaskStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db.get(self.full_key(key)).map_err(unavailable)
    }

    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StateError> {
        let from = match start {
            Bound::Included(k) | Bound::Excluded(k) => self.full_key(k),
            Bound::Unbounded => self.prefix.clone(),
        };
        let upper = match end {
            Bound::Included(k) => {
                let mut k = self.full_key(k);
                k.push(0);
                k
            }
            Bound::Excluded(k) => self.full_key(k),
            Bound::Unbounded => self.prefix_end(),
        };
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(upper);
        let iter = self
            .db
            .iterator_opt(IteratorMode::From(&from, Direction::Forward), options);
        let mut entries = Vec::new();
        for item in iter {
            if entries.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(unavailable)?;
            let key = &k[self.prefix.len()..];
            if let Bound::Excluded(after) = start
                && key == after
            {
                continue;
            }
            entries.push((key.to_vec(), v.to_vec()));
        }
        Ok(entries)
    }

    fn apply(&mut self, batch: WriteBatch) -> Result<(), StateError> {
        let mut write = rocksdb::WriteBatch::default();
        for (key, value) in batch {
            let key = self.full_key(&key);
            match value {
                Some(value) => write.put(key, value),
                None => write.delete(key),
            }
        }
        self.db
            .write_opt(write, &write_options())
            .map_err(unavailable)
    }

    fn clear(&mut self) -> Result<(), StateError> {
        let mut write = rocksdb::WriteBatch::default();
        write.delete_range(self.prefix.clone(), self.prefix_end());
        self.db
            .write_opt(write, &write_options())
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_see_only_their_own_entries_and_batches_apply_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = PipelineDb::open(dir.path(), &StateMemory::default()).expect("open");
        let mut a = db.task_store(0, 1);
        let mut b = db.task_store(0, 2);
        let batch: WriteBatch = [
            (b"k1".to_vec(), Some(b"1".to_vec())),
            (b"k2".to_vec(), Some(b"2".to_vec())),
        ]
        .into();
        a.apply(batch).expect("apply");
        b.apply([(b"k1".to_vec(), Some(b"b".to_vec()))].into())
            .expect("apply");
        assert_eq!(a.get(b"k1").expect("get"), Some(b"1".to_vec()));
        assert_eq!(b.get(b"k2").expect("get"), None);
        let all = a
            .scan(Bound::Unbounded, Bound::Unbounded, 10)
            .expect("scan");
        assert_eq!(all.len(), 2);
        let after = a
            .scan(Bound::Excluded(b"k1"), Bound::Unbounded, 10)
            .expect("scan");
        assert_eq!(after, vec![(b"k2".to_vec(), b"2".to_vec())]);
        a.apply([(b"k1".to_vec(), None)].into()).expect("apply");
        assert_eq!(a.get(b"k1").expect("get"), None);
        a.clear().expect("clear");
        assert!(
            a.scan(Bound::Unbounded, Bound::Unbounded, 10)
                .expect("scan")
                .is_empty()
        );
        assert_eq!(b.get(b"k1").expect("get"), Some(b"b".to_vec()));
    }

    #[test]
    fn stores_share_one_budget_and_report_what_they_hold() {
        let dirs = [
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        ];
        let memory = StateMemory::new(8 << 20);
        let first = PipelineDb::open(dirs[0].path(), &memory).expect("open");
        let second = PipelineDb::open(dirs[1].path(), &memory).expect("open");
        let value = vec![7u8; 1000];
        for (i, db) in [&first, &second].into_iter().enumerate() {
            let mut store = db.task_store(0, u32::try_from(i).expect("small"));
            let batch: WriteBatch = (0..100u32)
                .map(|k| (k.to_be_bytes().to_vec(), Some(value.clone())))
                .collect();
            store.apply(batch).expect("apply");
        }
        let usage = memory.usage();
        assert_eq!(usage.budget, 8 << 20);
        assert_eq!(usage.stores, 2);
        assert!(usage.write_buffers >= 200 * 1000, "{usage:?}");
        assert!(
            usage.cache >= usage.write_buffers,
            "write buffers are charged to the cache: {usage:?}"
        );
        drop(second);
        assert_eq!(memory.usage().stores, 1);
    }
}

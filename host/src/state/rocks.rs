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

use super::{Entries, StateError, StateStore, WriteBatch};
use rocksdb::{DB, Direction, IteratorMode, Options, ReadOptions, WriteOptions};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// The settings state stores open with; the benchmark's native word
    /// count opens its database with them too, to compare like with like.
    pub fn options() -> Options {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Small, write-heavy stores: keep memtables modest so many
        // pipelines fit on one daemon.
        options.set_write_buffer_size(16 << 20);
        options.set_max_background_jobs(2);
        options
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let db = DB::open(&Self::options(), path).map_err(|e| {
            StateError::Unavailable(format!(
                "could not open the state store at {}: {e}",
                path.display()
            ))
        })?;
        Ok(Self {
            db: Arc::new(Database(db)),
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
        let db = PipelineDb::open(dir.path()).expect("open");
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
}

//! The pipelines' state stores on this daemon: one RocksDB per pipeline,
//! opened once and kept across pause and resume (RocksDB allows one handle
//! per process), all drawing on one memory budget.

use super::lock;
use crate::state::{PipelineDb, StateError, StateMemory};
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long deleting a pipeline's state waits for readers to let go.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Open state stores, one per pipeline, under one directory.
pub(super) struct StateStores {
    dir: PathBuf,
    memory: StateMemory,
    open: Mutex<BTreeMap<String, Arc<PipelineDb>>>,
}

impl StateStores {
    pub(super) fn new(dir: PathBuf, memory: StateMemory) -> Self {
        Self {
            dir,
            memory,
            open: Mutex::new(BTreeMap::new()),
        }
    }

    /// The store of pipeline `name`, opened on first use.
    pub(super) fn open(&self, name: &str) -> Result<Arc<PipelineDb>, StateError> {
        let mut open = lock(&self.open);
        if let Some(db) = open.get(name) {
            return Ok(db.clone());
        }
        let db = Arc::new(PipelineDb::open(&self.dir.join(name), &self.memory)?);
        open.insert(name.to_owned(), db.clone());
        Ok(db)
    }

    /// Closes and deletes pipeline `name`'s store once its tasks and status
    /// readers let go; nothing if it has none.
    pub(super) fn destroy(&self, name: &str) -> anyhow::Result<()> {
        // A name is a directory here: never one that reaches outside.
        eddy_spec::check_name(name)?;
        let path = self.dir.join(name);
        if !path.exists() {
            return Ok(());
        }
        let db = lock(&self.open).remove(name);
        if let Some(mut db) = db {
            let deadline = Instant::now() + RELEASE_TIMEOUT;
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if Instant::now() < deadline => {
                        db = still_shared;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => anyhow::bail!("the state store of {name} is still in use"),
                }
            }
        }
        PipelineDb::destroy(&path).with_context(|| format!("could not delete the state of {name}"))
    }
}

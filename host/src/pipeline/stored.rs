//! A pipeline as the registry and the data directory keep it, and the data
//! directory's copies: a registry that lost its records (a new or reset
//! broker) gets them back from there.

use anyhow::Context as _;
use eddy_spec::PipelineSpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A pipeline's record: its spec and whether it runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(super) struct StoredPipeline {
    pub(super) spec: PipelineSpec,
    pub(super) paused: bool,
    pub(super) created_at_ms: i64,
    /// When it was last resumed: a resume restarts it on every daemon,
    /// failed or not.
    #[serde(default)]
    pub(super) resumed_at_ms: i64,
}

/// The copies of pipeline records in the data directory, one
/// `<name>.json` each.
pub(super) struct SpecDir {
    dir: PathBuf,
}

impl SpecDir {
    /// The copies in `dir`, created if missing.
    pub(super) fn open(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Keeps a copy of `stored`.
    pub(super) fn save(&self, stored: &StoredPipeline) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(stored)?;
        crate::modules::write_file_atomically(&self.path(&stored.spec.name), &json)
            .with_context(|| format!("could not save pipeline {}", stored.spec.name))
    }

    /// Removes the copy of `name`, if there is one.
    pub(super) fn remove(&self, name: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(name)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Every readable copy; an unreadable one is logged and skipped.
    pub(super) fn all(&self) -> anyhow::Result<Vec<StoredPipeline>> {
        let mut pipelines = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let read = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<StoredPipeline>(&b)?));
            match read {
                Ok(stored) => pipelines.push(stored),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "skipping unreadable pipeline spec");
                }
            }
        }
        Ok(pipelines)
    }
}

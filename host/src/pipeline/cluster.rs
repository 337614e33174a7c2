//! What this daemon knows of the others through the registry (see
//! `registry`): which pipelines have records, which modules the registry
//! holds, and where every daemon's control plane is. It applies the
//! registry's module and daemon records itself and hands pipeline records
//! to whoever follows it (the manager, which runs them).

use super::lock;
use super::registry::{Event, Registry, RegistryError};
use super::stored::StoredPipeline;
use crate::kafka::KafkaMetadata;
use crate::modules::{IncomingModules, ModuleStore};
use crate::task::TaskRuntime;
use anyhow::Context as _;
use eddy_spec::Builtin;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a stopping daemon waits for Kafka to take its withdrawal from
/// the registry: milliseconds when Kafka is up, and a shutdown with Kafka
/// away should not wait the producer's minute for it.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(5);

/// How the other daemons reach this one.
#[derive(Clone, Debug)]
pub struct DaemonIdentity {
    /// Stable across restarts (kept in the data directory).
    pub id: String,
    /// Its control plane, as other daemons can reach it.
    pub url: String,
}

/// A pipeline record as the registry's follower hands it on.
pub(super) enum PipelineRecord {
    /// The pipeline exists as recorded.
    Stored(Box<StoredPipeline>),
    /// The pipeline was deleted.
    Deleted,
}

/// This daemon's view of the cluster, kept up to date from the registry.
pub(super) struct Cluster {
    registry: Arc<Registry>,
    modules: Arc<ModuleStore>,
    /// Checks modules that arrive through the registry, as uploads are.
    runtime: Arc<TaskRuntime>,
    /// The thread applying the registry.
    follower: Mutex<Option<JoinHandle<()>>>,
    /// Pipelines the registry has a record of, deleted ones included.
    known: Mutex<BTreeSet<String>>,
    /// Modules the registry holds (digests).
    published: Mutex<BTreeSet<String>>,
    /// The modules each pipeline the registry records runs (its steps).
    steps: Mutex<BTreeMap<String, Vec<String>>>,
    incoming: IncomingModules,
    /// Why the registry has not been read yet; `None` once it was.
    unread: Mutex<Option<String>>,
    /// This daemon, once it serves.
    identity: Mutex<Option<DaemonIdentity>>,
    /// Every daemon the registry lists: id -> control-plane URL.
    peers: Mutex<BTreeMap<String, String>>,
    /// The dead-letter topics eddy created: topic -> pipeline.
    dead_letters: Mutex<BTreeMap<String, String>>,
}

impl Cluster {
    pub(super) fn new(
        registry: Registry,
        modules: Arc<ModuleStore>,
        runtime: Arc<TaskRuntime>,
    ) -> Self {
        Self {
            registry: Arc::new(registry),
            modules,
            runtime,
            follower: Mutex::new(None),
            known: Mutex::new(BTreeSet::new()),
            published: Mutex::new(BTreeSet::new()),
            steps: Mutex::new(BTreeMap::new()),
            incoming: IncomingModules::default(),
            unread: Mutex::new(Some("this daemon is starting".into())),
            identity: Mutex::new(None),
            peers: Mutex::new(BTreeMap::new()),
            dead_letters: Mutex::new(BTreeMap::new()),
        }
    }

    /// This daemon serves as `identity`.
    pub(super) fn set_identity(&self, identity: DaemonIdentity) {
        *lock(&self.identity) = Some(identity);
    }

    /// Whether following the registry was stopped (the daemon stops).
    pub(super) fn stopped(&self) -> bool {
        self.registry.stopped()
    }

    /// Records how the last attempt to read the registry went.
    pub(super) fn set_read(&self, result: Result<(), String>) {
        *lock(&self.unread) = result.err();
    }

    /// Why the registry is unread, if it is.
    pub(super) fn unread(&self) -> Option<String> {
        lock(&self.unread).clone()
    }

    /// Applies the registry to its end, then follows it on a thread (once):
    /// module and daemon records are applied here, pipeline records handed
    /// to `on_pipeline`. Then lists this daemon.
    pub(super) fn follow(
        self: &Arc<Self>,
        metadata: &KafkaMetadata,
        on_pipeline: impl Fn(&str, PipelineRecord) + Send + 'static,
    ) -> Result<(), RegistryError> {
        if lock(&self.follower).is_none() {
            let cluster = Arc::downgrade(self);
            let follower = self.registry.follow(metadata, move |event| {
                if let Some(cluster) = cluster.upgrade() {
                    cluster.apply(event, &on_pipeline);
                }
            })?;
            *lock(&self.follower) = Some(follower);
        }
        if let Some(me) = lock(&self.identity).clone() {
            self.registry.publish_daemon(&me.id, Some(&me.url))?;
        }
        Ok(())
    }

    /// Whether the registry has a record of pipeline `name`.
    pub(super) fn knows(&self, name: &str) -> bool {
        lock(&self.known).contains(name)
    }

    /// Applies one registry record.
    fn apply(&self, event: Event, on_pipeline: &impl Fn(&str, PipelineRecord)) {
        match event {
            Event::ModuleChunk { hex, index, bytes } => self.incoming.chunk(hex, index, bytes),
            Event::Module { hex, chunks, info } => self.apply_module(&hex, chunks, &info),
            Event::ModuleChunkDeleted { hex, .. } => self.incoming.forget(&hex),
            Event::ModuleDeleted { hex } => self.drop_module(&format!("sha256:{hex}")),
            Event::DeadLetter { topic, pipeline } => {
                lock(&self.dead_letters).insert(topic, pipeline);
            }
            Event::Daemon { id, url } => {
                let mut peers = lock(&self.peers);
                match url {
                    Some(url) => peers.insert(id, url),
                    None => peers.remove(&id),
                };
            }
            Event::Pipeline { name, stored } => {
                lock(&self.known).insert(name.clone());
                match stored.map(|json| serde_json::from_slice::<StoredPipeline>(&json)) {
                    None => {
                        lock(&self.steps).remove(&name);
                        on_pipeline(&name, PipelineRecord::Deleted);
                    }
                    Some(Ok(stored)) if stored.spec.name == name => {
                        lock(&self.steps).insert(name.clone(), stored.spec.steps.clone());
                        on_pipeline(&name, PipelineRecord::Stored(Box::new(stored)));
                    }
                    Some(Ok(_)) => {
                        tracing::error!(pipeline = %name, "a registry record names another pipeline; ignored")
                    }
                    Some(Err(e)) => {
                        tracing::error!(pipeline = %name, error = %e, "unreadable pipeline record in the registry; ignored")
                    }
                }
            }
        }
    }

    /// The pipelines that run module `digest`, as the registry records them.
    pub(super) fn users_of(&self, digest: &str) -> Vec<String> {
        lock(&self.steps)
            .iter()
            .filter(|(_, steps)| steps.iter().any(|s| s == digest))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Deletes module `digest`: everywhere through the registry if it
    /// went there, else here. The caller checked no pipeline uses it.
    pub(super) fn delete_module(&self, digest: &str, size: u64) -> Result<(), RegistryError> {
        if lock(&self.published).contains(digest) {
            // Applying the record drops it here too.
            return self.registry.withdraw_module(digest, size);
        }
        self.drop_module(digest);
        Ok(())
    }

    /// Drops module `digest` from this daemon: its bytes, and its compiled
    /// code in memory and on disk. Kept if a pipeline uses it (the registry
    /// says one does: a record that raced the deletion).
    fn drop_module(&self, digest: &str) {
        let users = self.users_of(digest);
        if !users.is_empty() {
            tracing::warn!(%digest, ?users, "a module deleted through the registry is kept: pipelines run it");
            return;
        }
        lock(&self.published).remove(digest);
        self.runtime.forget(digest);
        match self.modules.remove(digest) {
            Ok(true) => tracing::info!(%digest, "module deleted"),
            Ok(false) => {}
            Err(e) => tracing::warn!(%digest, error = %e, "could not delete a module's files"),
        }
    }

    /// Stores a module that arrived through the registry, once checked
    /// like an upload: its digest, and that it is a component of our world.
    fn apply_module(&self, hex: &str, chunks: u32, info: &[u8]) {
        let digest = format!("sha256:{hex}");
        if self.modules.info(&digest).is_ok() {
            self.incoming.forget(hex);
            lock(&self.published).insert(digest);
            return;
        }
        let stored = (|| {
            let (bytes, info) = self.incoming.assemble(hex, chunks, info)?;
            self.runtime
                .module(&digest, || Ok(bytes.clone()))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            self.modules.put(&bytes, info)?;
            anyhow::Ok(())
        })();
        match stored {
            Ok(()) => {
                tracing::info!(%digest, "module received through the registry");
                lock(&self.published).insert(digest);
            }
            Err(e) => {
                tracing::error!(%digest, error = %e, "a module in the registry cannot be used; ignored")
            }
        }
    }

    /// Publishes a pipeline's record (`None`: it was deleted) and waits
    /// until this daemon applied it.
    pub(super) fn publish(
        &self,
        name: &str,
        stored: Option<&StoredPipeline>,
    ) -> Result<(), super::ManagerError> {
        let json = stored
            .map(serde_json::to_vec)
            .transpose()
            .context("could not encode the spec")?;
        Ok(self.registry.publish_pipeline(name, json.as_deref())?)
    }

    /// Publishes the modules of `steps` the registry does not hold yet, so
    /// every daemon can run them.
    pub(super) fn publish_modules(&self, steps: &[String]) -> Result<(), super::ManagerError> {
        for digest in steps {
            if lock(&self.published).contains(digest)
                || matches!(Builtin::parse(digest), Ok(Some(_)))
            {
                continue;
            }
            let info = self
                .modules
                .info(digest)
                .map_err(|e| super::SpecError(e.to_string()))?;
            let bytes = self
                .modules
                .bytes(digest)
                .with_context(|| format!("could not read module {digest}"))?;
            let info = serde_json::to_vec(&info).context("could not encode module metadata")?;
            self.registry.publish_module(digest, &bytes, &info)?;
        }
        Ok(())
    }

    /// The pipeline eddy created dead-letter `topic` for, if it did.
    pub(super) fn dead_letter_owner(&self, topic: &str) -> Option<String> {
        lock(&self.dead_letters).get(topic).cloned()
    }

    /// Records that eddy created dead-letter `topic` for `pipeline`.
    pub(super) fn publish_dead_letter(
        &self,
        topic: &str,
        pipeline: &str,
    ) -> Result<(), super::ManagerError> {
        Ok(self.registry.publish_dead_letter(topic, pipeline)?)
    }

    /// The ids of the daemons the registry lists, this one included.
    pub(super) fn daemon_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.peers).keys().cloned().collect();
        if let Some(me) = lock(&self.identity).as_ref()
            && !ids.contains(&me.id)
        {
            ids.push(me.id.clone());
        }
        ids
    }

    /// The other daemons' control-plane addresses, as the registry has them.
    pub(super) fn peers(&self) -> Vec<String> {
        let me = lock(&self.identity).as_ref().map(|i| i.id.clone());
        lock(&self.peers)
            .iter()
            .filter(|(id, _)| Some(*id) != me.as_ref())
            .map(|(_, url)| url.clone())
            .collect()
    }

    /// Withdraws this daemon from the registry (other daemons stop asking
    /// it for state) and stops following it.
    pub(super) fn leave(&self) {
        let read = lock(&self.unread).is_none();
        if let Some(me) = lock(&self.identity).clone().filter(|_| read)
            && let Err(e) = self.registry.withdraw_daemon(&me.id, WITHDRAW_TIMEOUT)
        {
            tracing::warn!(error = %e, "could not withdraw this daemon from the registry; other daemons find it gone when they next ask it");
        }
        self.registry.stop();
        if let Some(follower) = lock(&self.follower).take() {
            let _ = follower.join();
        }
    }
}

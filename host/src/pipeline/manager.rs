//! The pipeline manager: the one place that knows which pipelines exist,
//! and starts and stops them on this daemon.
//!
//! Which pipelines exist is the registry's to say (see [`super::registry`]):
//! a request to create, pause, resume or delete a pipeline publishes the
//! change there, and every daemon applies it, this one included, through
//! [`PipelineManager::apply`]. The data directory keeps a copy of each spec,
//! so a registry that lost them (a new or reset broker) gets them back.
//!
//! Its methods block (they talk to Kafka and wait for tasks to commit), so
//! the control plane calls them from blocking threads.

use super::lock;
use super::registry::{Event, Registry, RegistryError};
use super::runner::{PartitionView, PipelineRunner};
use super::spec::{Guarantee, InternalNames, PipelineSpec, SpecError, StartFrom};
use crate::config::LimitsConfig;
use crate::kafka::{self, InternalTopic, KafkaMetadata, KafkaSettings, TopicError};
use crate::modules::{ModuleInfo, ModuleStore, digest_of};
use crate::runtime::{Builtin, ModuleError, Runtime};
use crate::state::{PipelineDb, StateMemory};
use crate::task::TaskPlan;
use anyhow::Context as _;
use eddy_proto::v1;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a stopping daemon waits for Kafka to take its withdrawal from
/// the registry: milliseconds when Kafka is up, and a shutdown with Kafka
/// away should not wait the producer's minute for it.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a pipeline operation failed; each maps to one gRPC status code.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No pipeline by that name.
    #[error("pipeline `{0}` does not exist (see `eddy pipeline list`)")]
    NotFound(String),
    /// A pipeline by that name exists.
    #[error("pipeline `{0}` already exists: delete it first, or choose another name")]
    AlreadyExists(String),
    /// The spec is invalid.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// The module cannot be used.
    #[error("module: {0}")]
    Module(#[from] ModuleError),
    /// Kafka could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

/// An unreachable broker is worth retrying; anything else about a topic
/// (missing, wrong partition count, refused) is the spec's to fix.
impl From<TopicError> for ManagerError {
    fn from(e: TopicError) -> Self {
        match e {
            TopicError::Unreachable(_) => Self::Unavailable(e.to_string()),
            _ => Self::InvalidSpec(SpecError(e.to_string())),
        }
    }
}

impl From<RegistryError> for ManagerError {
    fn from(e: RegistryError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// A pipeline as the registry and the data directory keep it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
struct StoredPipeline {
    spec: PipelineSpec,
    paused: bool,
    created_at_ms: i64,
    /// When it was last resumed: a resume restarts it on every daemon,
    /// failed or not.
    #[serde(default)]
    resumed_at_ms: i64,
}

struct Entry {
    stored: StoredPipeline,
    runner: Option<PipelineRunner>,
    /// Why the pipeline could not be started, if it could not.
    start_error: Option<String>,
}

/// What this daemon could answer of a state query.
pub struct LocalAnswer {
    /// The entries of the partitions it owns, and which those were.
    pub response: v1::QueryStateResponse,
    /// Every partition a complete answer reads.
    pub needed: Vec<v1::StatePartition>,
}

/// How the other daemons reach this one.
#[derive(Clone, Debug)]
pub struct DaemonIdentity {
    /// Stable across restarts (kept in the data directory).
    pub id: String,
    /// Its control plane, as other daemons can reach it.
    pub url: String,
}

/// A snapshot of one pipeline for the control plane.
pub struct PipelineView {
    /// The pipeline, in API form.
    pub pipeline: v1::Pipeline,
}

/// Creates, persists, runs and stops pipelines.
pub struct PipelineManager {
    pipelines: Mutex<BTreeMap<String, Entry>>,
    runtime: Arc<Runtime>,
    modules: Arc<ModuleStore>,
    kafka: KafkaSettings,
    metadata: Arc<KafkaMetadata>,
    dir: PathBuf,
    state_dir: PathBuf,
    /// The memory every pipeline's state store draws on.
    state_memory: StateMemory,
    /// Open state stores, one per pipeline, kept across pause and resume
    /// (RocksDB allows one handle per process).
    dbs: Mutex<BTreeMap<String, Arc<PipelineDb>>>,
    ceilings: LimitsConfig,
    group_prefix: String,
    registry: Arc<Registry>,
    /// The thread applying the registry.
    follower: Mutex<Option<JoinHandle<()>>>,
    /// Pipelines the registry has a record of, deleted ones included.
    known: Mutex<BTreeSet<String>>,
    /// Modules the registry holds (digests).
    published: Mutex<BTreeSet<String>>,
    /// Chunks of modules still arriving from the registry, by digest hex.
    incoming: Mutex<BTreeMap<String, BTreeMap<u32, Vec<u8>>>>,
    /// One change at a time from this daemon's control plane.
    changing: Mutex<()>,
    /// Why the registry has not been read yet; `None` once it was.
    unread: Mutex<Option<String>>,
    /// This daemon, once it serves.
    identity: Mutex<Option<DaemonIdentity>>,
    /// Every daemon the registry lists: id -> control-plane URL.
    peers: Mutex<BTreeMap<String, String>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl PipelineManager {
    /// A manager over the specs in `dir`, keeping state under `state_dir`
    /// within `state_memory`; call [`restore`](Self::restore) to start them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        runtime: Arc<Runtime>,
        modules: Arc<ModuleStore>,
        kafka: KafkaSettings,
        dir: PathBuf,
        state_dir: PathBuf,
        state_memory: StateMemory,
        ceilings: LimitsConfig,
        group_prefix: String,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        let metadata = Arc::new(KafkaMetadata::new(&kafka)?);
        let registry = Registry::new(&kafka, format!("{group_prefix}registry"))
            .context("could not set up the pipeline registry")?;
        Ok(Self {
            pipelines: Mutex::new(BTreeMap::new()),
            runtime,
            modules,
            metadata,
            kafka,
            dir,
            state_dir,
            state_memory,
            dbs: Mutex::new(BTreeMap::new()),
            ceilings,
            group_prefix,
            registry: Arc::new(registry),
            follower: Mutex::new(None),
            known: Mutex::new(BTreeSet::new()),
            published: Mutex::new(BTreeSet::new()),
            incoming: Mutex::new(BTreeMap::new()),
            changing: Mutex::new(()),
            unread: Mutex::new(Some("this daemon is starting".into())),
            identity: Mutex::new(None),
            peers: Mutex::new(BTreeMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        lock(&self.pipelines)
    }

    fn names<'a>(&'a self, name: &'a str) -> InternalNames<'a> {
        InternalNames {
            prefix: &self.group_prefix,
            pipeline: name,
        }
    }

    fn group(&self, name: &str) -> String {
        self.names(name).group(0)
    }

    fn db(&self, name: &str) -> Result<Arc<PipelineDb>, ManagerError> {
        let mut dbs = lock(&self.dbs);
        if let Some(db) = dbs.get(name) {
            return Ok(db.clone());
        }
        let db = Arc::new(
            PipelineDb::open(&self.state_dir.join(name), &self.state_memory)
                .map_err(|e| ManagerError::Internal(anyhow::anyhow!(e)))?,
        );
        dbs.insert(name.to_owned(), db.clone());
        Ok(db)
    }

    /// Closes and deletes a pipeline's state store, once its tasks let go.
    fn destroy_state(&self, name: &str) -> anyhow::Result<()> {
        let db = lock(&self.dbs).remove(name);
        if let Some(mut db) = db {
            // Status readers may hold it for a moment.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if std::time::Instant::now() < deadline => {
                        db = still_shared;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(_) => anyhow::bail!("the state store of {name} is still in use"),
                }
            }
        }
        PipelineDb::destroy(&self.state_dir.join(name))
            .with_context(|| format!("could not delete the state of {name}"))
    }

    fn spec_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn persist(&self, stored: &StoredPipeline) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(stored)?;
        crate::modules::write_file_atomically(&self.spec_path(&stored.spec.name), &json)
            .with_context(|| format!("could not save pipeline {}", stored.spec.name))
    }

    /// Reads the registry (see [`Self::join_registry`]) on a thread that
    /// retries with backoff while Kafka is unreachable; returns after the
    /// first attempt or `wait`, whichever comes first. Until the registry
    /// was read, pipeline requests answer UNAVAILABLE with the reason.
    pub fn restore(self: &Arc<Self>, identity: DaemonIdentity, wait: std::time::Duration) {
        *lock(&self.identity) = Some(identity);
        let (tried, first_attempt) = std::sync::mpsc::channel();
        let manager = self.clone();
        let joiner = std::thread::Builder::new()
            .name("eddy-registry-join".into())
            .spawn(move || {
                let mut backoff = std::time::Duration::from_secs(1);
                while !manager.registry.stopped() {
                    let result = manager.join_registry();
                    let joined = result.is_ok();
                    *lock(&manager.unread) = result.err().map(|e| format!("{e:#}"));
                    let _ = tried.send(());
                    if joined {
                        return;
                    }
                    tracing::warn!(
                        error = lock(&manager.unread).as_deref().unwrap_or_default(),
                        retry_in = ?backoff,
                        "could not read the pipeline registry; pipelines start once it is read"
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                }
            });
        match joiner {
            Ok(_) => {
                let _ = first_attempt.recv_timeout(wait);
            }
            Err(e) => *lock(&self.unread) = Some(format!("could not start a thread: {e}")),
        }
    }

    /// Answers UNAVAILABLE until the registry was read.
    fn check_read(&self) -> Result<(), ManagerError> {
        match lock(&self.unread).as_deref() {
            None => Ok(()),
            Some(why) => Err(ManagerError::Unavailable(format!(
                "this daemon has not read the pipeline registry yet ({why}); it keeps trying"
            ))),
        }
    }

    /// Applies the registry to its end (starting every pipeline not
    /// paused), then follows it on a thread. Pipelines found only in the
    /// data directory are published again: a registry that never had them
    /// (a new or reset broker) gets them back.
    fn join_registry(self: &Arc<Self>) -> anyhow::Result<()> {
        if lock(&self.follower).is_none() {
            let manager = Arc::downgrade(self);
            let follower = self.registry.follow(&self.metadata, move |event| {
                if let Some(manager) = manager.upgrade() {
                    manager.apply(event);
                }
            })?;
            *lock(&self.follower) = Some(follower);
        }
        if let Some(me) = lock(&self.identity).clone() {
            self.registry.publish_daemon(&me.id, Some(&me.url))?;
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let stored: StoredPipeline = match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice(&b)?))
            {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "skipping unreadable pipeline spec");
                    continue;
                }
            };
            if lock(&self.known).contains(&stored.spec.name) {
                continue;
            }
            tracing::info!(pipeline = %stored.spec.name, "publishing a pipeline the registry does not know from the data directory");
            self.publish_modules(&stored.spec)?;
            self.publish(&stored)?;
        }
        Ok(())
    }

    /// Applies one registry record to this daemon.
    fn apply(&self, event: Event) {
        match event {
            Event::ModuleChunk { hex, index, bytes } => {
                lock(&self.incoming)
                    .entry(hex)
                    .or_default()
                    .insert(index, bytes);
            }
            Event::Module { hex, chunks, info } => self.apply_module(&hex, chunks, &info),
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
                    None => self.remove_local(&name),
                    Some(Ok(stored)) if stored.spec.name == name => self.apply_pipeline(stored),
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

    /// Stores a module that arrived through the registry, once checked
    /// like an upload: its digest, and that it is a component of our world.
    fn apply_module(&self, hex: &str, chunks: u32, info: &[u8]) {
        let parts = lock(&self.incoming).remove(hex).unwrap_or_default();
        let digest = format!("sha256:{hex}");
        if self.modules.info(&digest).is_ok() {
            lock(&self.published).insert(digest);
            return;
        }
        let stored = (|| {
            let info: ModuleInfo = serde_json::from_slice(info).context("unreadable metadata")?;
            let mut bytes = Vec::new();
            for index in 0..chunks {
                let part = parts
                    .get(&index)
                    .with_context(|| format!("chunk {index} of {chunks} is missing"))?;
                bytes.extend_from_slice(part);
            }
            anyhow::ensure!(
                digest_of(&bytes) == digest,
                "its bytes do not match its digest"
            );
            anyhow::ensure!(info.digest == digest, "its metadata names another digest");
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

    /// Makes this daemon run `stored` as recorded: (re)started, or stopped
    /// when paused.
    fn apply_pipeline(&self, stored: StoredPipeline) {
        let name = stored.spec.name.clone();
        let old = {
            let mut pipelines = self.lock();
            match pipelines.get_mut(&name) {
                Some(entry) if entry.stored == stored => return,
                Some(entry) => entry.runner.take(),
                None => None,
            }
        };
        if let Some(old) = old {
            old.stop();
        }
        if let Err(e) = self.persist(&stored) {
            tracing::warn!(pipeline = %name, error = %e, "could not keep a copy of the spec in the data directory");
        }
        let (runner, start_error) = if stored.paused {
            (None, None)
        } else {
            match self.start(&stored.spec) {
                Ok(runner) => (Some(runner), None),
                Err(e) => {
                    tracing::error!(pipeline = %name, error = %e, "could not start the pipeline");
                    (None, Some(format!("could not start: {e}")))
                }
            }
        };
        tracing::info!(pipeline = %name, paused = stored.paused, "pipeline applied from the registry");
        self.lock().insert(
            name,
            Entry {
                stored,
                runner,
                start_error,
            },
        );
    }

    /// Stops and forgets a deleted pipeline here: its runner, its spec and
    /// its state store.
    fn remove_local(&self, name: &str) {
        let entry = self.lock().remove(name);
        if let Some(runner) = entry.and_then(|e| e.runner) {
            runner.stop();
        }
        match std::fs::remove_file(self.spec_path(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(pipeline = %name, error = %e, "could not remove the spec's copy")
            }
        }
        if self.state_dir.join(name).exists()
            && let Err(e) = self.destroy_state(name)
        {
            tracing::warn!(pipeline = %name, error = %format!("{e:#}"), "could not delete the state");
        }
        tracing::info!(pipeline = %name, "pipeline deleted");
    }

    /// Publishes a pipeline's record and waits until this daemon applied it.
    fn publish(&self, stored: &StoredPipeline) -> Result<(), ManagerError> {
        let json = serde_json::to_vec(stored).context("could not encode the spec")?;
        Ok(self
            .registry
            .publish_pipeline(&stored.spec.name, Some(&json))?)
    }

    /// Publishes the modules of `spec` the registry does not hold yet, so
    /// every daemon can run it.
    fn publish_modules(&self, spec: &PipelineSpec) -> Result<(), ManagerError> {
        for digest in &spec.steps {
            if lock(&self.published).contains(digest)
                || matches!(Builtin::parse(digest), Ok(Some(_)))
            {
                continue;
            }
            let info = self
                .modules
                .info(digest)
                .map_err(|e| ManagerError::InvalidSpec(SpecError(e.to_string())))?;
            let bytes = self
                .modules
                .bytes(digest)
                .with_context(|| format!("could not read module {digest}"))?;
            let info = serde_json::to_vec(&info).context("could not encode module metadata")?;
            self.registry.publish_module(digest, &bytes, &info)?;
        }
        Ok(())
    }

    /// The record of pipeline `name`.
    fn stored(&self, name: &str) -> Result<StoredPipeline, ManagerError> {
        self.check_read()?;
        self.lock()
            .get(name)
            .map(|e| e.stored.clone())
            .ok_or_else(|| ManagerError::NotFound(name.to_owned()))
    }

    /// Why `name` could not start here after a change was applied.
    fn start_error(&self, name: &str) -> Option<String> {
        self.lock().get(name).and_then(|e| e.start_error.clone())
    }

    fn start(&self, spec: &PipelineSpec) -> Result<PipelineRunner, ManagerError> {
        let producer = crate::kafka::Producer::create(&self.kafka.producer())
            .context("could not create the producer")?;
        let db = self.db(&spec.name)?;
        let spec = Arc::new(spec.clone());
        let config = Arc::new(spec.config.clone());
        let names = self.names(&spec.name);
        let mut plans = Vec::with_capacity(spec.steps.len());
        for (step, digest) in (0u32..).zip(&spec.steps) {
            let module = self.runtime.module(digest, || self.modules.bytes(digest))?;
            plans.push(Arc::new(TaskPlan {
                spec: spec.clone(),
                step,
                inputs: spec.step_inputs(names, step),
                output: spec.step_output(names, step),
                changelog: names.changelog(step),
                // A step feeding another step always commits in transactions:
                // the next step's state must not count a replayed batch twice.
                transactional: spec.guarantee == Guarantee::ExactlyOnce
                    || (step as usize) + 1 < spec.steps.len(),
                dead_letter: names.dead_letter(),
                db: db.clone(),
                kafka: self.kafka.clone(),
                module,
                runtime: self.runtime.clone(),
                producer: producer.clone(),
                group: names.group(step),
                config: config.clone(),
            }));
        }
        Ok(PipelineRunner::start(plans, &self.kafka, &self.metadata)?)
    }

    /// Validates a new pipeline, checks its topics, records its start
    /// offsets and publishes it (with its modules): every daemon starts it.
    pub fn create(&self, spec: v1::PipelineSpec) -> Result<PipelineView, ManagerError> {
        let _changing = lock(&self.changing);
        self.check_read()?;
        let spec = PipelineSpec::from_proto(spec, &self.modules, &self.ceilings)?;
        if self.lock().contains_key(&spec.name) {
            return Err(ManagerError::AlreadyExists(spec.name));
        }
        // Compile now so a module problem fails the request, not the tasks.
        for digest in &spec.steps {
            self.runtime.module(digest, || self.modules.bytes(digest))?;
        }
        let mut inputs = Vec::new();
        let mut widest = 1;
        for topic in &spec.inputs {
            let count = self.topic_partitions(topic)?;
            widest = widest.max(count);
            inputs.extend((0..count).map(|p| (topic.clone(), p)));
        }
        for topic in spec.output_topics() {
            self.topic_partitions(topic)?;
        }
        // Between steps, records go through a repartition topic as wide as
        // the widest input (as in Kafka Streams), keyed by murmur2.
        // Later steps start at the beginning of their repartition topic.
        let names = self.names(&spec.name);
        if spec.error_policy == super::ErrorPolicy::DeadLetter {
            let topic = InternalTopic::dead_letter(&names.dead_letter(), widest);
            kafka::ensure_topic(&self.kafka, &self.metadata, &topic)?;
        }
        for step in 1..u32::try_from(spec.steps.len()).unwrap_or(1) {
            let name = names.repartition(step);
            let topic = InternalTopic::repartition(&name, widest);
            kafka::ensure_topic(&self.kafka, &self.metadata, &topic)?;
            let partitions: Vec<(String, i32)> = (0..widest).map(|p| (name.clone(), p)).collect();
            self.commit_start_offsets(&names.group(step), StartFrom::Earliest, &partitions)?;
        }
        self.commit_start_offsets(&self.group(&spec.name), spec.start_from, &inputs)?;
        let stored = StoredPipeline {
            spec,
            paused: false,
            created_at_ms: now_ms(),
            resumed_at_ms: 0,
        };
        let name = stored.spec.name.clone();
        self.publish_modules(&stored.spec)?;
        self.publish(&stored)?;
        if let Some(error) = self.start_error(&name) {
            // Nothing ran: take the pipeline back rather than leave it failed.
            if let Err(e) = self.registry.publish_pipeline(&name, None) {
                tracing::warn!(pipeline = %name, error = %e, "could not withdraw a pipeline that failed to start");
            }
            return Err(ManagerError::Unavailable(error));
        }
        tracing::info!(pipeline = %name, "pipeline created");
        self.get(&name)
    }

    fn topic_partitions(&self, topic: &str) -> Result<i32, ManagerError> {
        Ok(self.metadata.partition_count(topic)?)
    }

    /// Commits where a new pipeline starts, so its first consumer begins
    /// exactly there and any later out-of-range position is an error.
    fn commit_start_offsets(
        &self,
        group: &str,
        start_from: StartFrom,
        partitions: &[(String, i32)],
    ) -> Result<(), ManagerError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            let (low, high) = self
                .metadata
                .watermarks(topic, *partition)
                .map_err(|e| ManagerError::Unavailable(format!("{e:#}")))?;
            let offset = match start_from {
                StartFrom::Earliest => low,
                StartFrom::Latest => high,
            };
            tpl.add_partition_offset(topic, *partition, Offset::Offset(offset))
                .context("bad offset")?;
        }
        let consumer: BaseConsumer = self
            .kafka
            .consumer(group)
            .create()
            .context("could not create a Kafka client")?;
        consumer.commit(&tpl, CommitMode::Sync).map_err(|e| {
            ManagerError::Unavailable(format!("could not record the start offsets: {e}"))
        })
    }

    /// A pipeline with its per-partition status.
    pub fn get(&self, name: &str) -> Result<PipelineView, ManagerError> {
        let (stored, status, start_error) = {
            let pipelines = self.lock();
            let entry = match pipelines.get(name) {
                Some(entry) => entry,
                None => {
                    drop(pipelines);
                    self.check_read()?;
                    return Err(ManagerError::NotFound(name.to_owned()));
                }
            };
            (
                entry.stored.clone(),
                entry.runner.as_ref().map(PipelineRunner::status),
                entry.start_error.clone(),
            )
        };
        // Outside the lock: these may wait on Kafka.
        let (partitions, error, failed, committed) = match status {
            Some(status) => {
                let partitions = status.partitions();
                let committed = status.committed(&partitions);
                (partitions, status.error(), status.failed(), committed)
            }
            None => (Vec::new(), start_error.clone(), start_error.is_some(), None),
        };
        // A stopped pipeline has no consumer: read its partitions and the
        // group's offsets from the broker.
        let (partitions, committed) = if committed.is_none() && partitions.is_empty() {
            self.stopped_partitions(&stored.spec)
        } else {
            (partitions, committed)
        };
        let committed = committed.unwrap_or_else(|| vec![None; partitions.len()]);
        let partitions = partitions
            .iter()
            .zip(committed)
            .map(|(p, committed)| {
                let (topic, partition) = &p.partition;
                let committed = committed.unwrap_or(p.status.committed());
                let high = self
                    .metadata
                    .watermarks(topic, *partition)
                    .map_or(-1, |(_, high)| high);
                v1::PartitionStatus {
                    topic: topic.clone(),
                    partition: *partition,
                    committed_offset: committed,
                    high_watermark: high,
                    lag: if committed >= 0 && high >= 0 {
                        (high - committed).max(0)
                    } else {
                        -1
                    },
                    records_in: p.status.records_in(),
                    records_out: p.status.records_out(),
                    last_error: p.status.last_error(),
                    assigned: p.status.assigned(),
                    step: p.step,
                    restore: Some({
                        let r = p.status.restore();
                        v1::RestoreStatus {
                            restoring: r.restoring,
                            start_offset: r.start,
                            end_offset: r.end,
                            position: r.position,
                            replayed: r.replayed,
                            duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
                        }
                    }),
                    counters: p.status.counters().into_iter().collect(),
                    retries: p.status.retries(),
                    next_retry_at_ms: p.status.next_retry_at_ms(),
                    guest_calls: Some({
                        let c = p.status.call_times();
                        v1::GuestCalls {
                            calls: c.calls,
                            p50_us: c.p50_us,
                            p99_us: c.p99_us,
                            max_us: c.max_us,
                        }
                    }),
                }
            })
            .collect::<Vec<_>>();
        // From the same reads as the partitions' errors, so a task failing
        // during this call never shows as running with an error.
        let failed = failed || partitions.iter().any(|p| !p.last_error.is_empty());
        let state = if stored.paused {
            v1::PipelineState::Paused
        } else if failed {
            v1::PipelineState::Failed
        } else {
            v1::PipelineState::Running
        };
        Ok(PipelineView {
            pipeline: v1::Pipeline {
                spec: Some(stored.spec.to_proto()),
                state: state as i32,
                partitions,
                error: error.unwrap_or_default(),
                created_at_ms: stored.created_at_ms,
            },
        })
    }

    fn stopped_partitions(
        &self,
        spec: &PipelineSpec,
    ) -> (Vec<PartitionView>, Option<Vec<Option<i64>>>) {
        let names = self.names(&spec.name);
        let mut views = Vec::new();
        let mut committed = Vec::new();
        for step in 0..u32::try_from(spec.steps.len()).unwrap_or(0) {
            let keys: Vec<(String, i32)> = spec
                .step_inputs(names, step)
                .into_iter()
                .flat_map(|topic| {
                    let count = self.metadata.partition_count(&topic).unwrap_or(0);
                    (0..count).map(move |p| (topic.clone(), p))
                })
                .collect();
            let offsets = kafka::group_offsets(&self.kafka, &names.group(step), &keys)
                .unwrap_or_else(|_| vec![None; keys.len()]);
            committed.extend(offsets);
            views.extend(keys.into_iter().map(|partition| PartitionView {
                step,
                partition,
                status: Arc::default(),
            }));
        }
        (views, Some(committed))
    }

    /// Every pipeline.
    pub fn list(&self) -> Result<Vec<PipelineView>, ManagerError> {
        // An empty list from a daemon that has not read the registry would
        // be a lie.
        self.check_read()?;
        let names: Vec<String> = self.lock().keys().cloned().collect();
        Ok(names.iter().filter_map(|n| self.get(n).ok()).collect())
    }

    /// Stops a pipeline on every daemon, keeping its offsets and state.
    pub fn pause(&self, name: &str) -> Result<PipelineView, ManagerError> {
        let _changing = lock(&self.changing);
        let mut stored = self.stored(name)?;
        stored.paused = true;
        self.publish(&stored)?;
        tracing::info!(pipeline = %name, "pipeline paused");
        self.get(name)
    }

    /// Starts a paused pipeline, or restarts a failed one, on every daemon,
    /// from its committed state.
    pub fn resume(&self, name: &str) -> Result<PipelineView, ManagerError> {
        let _changing = lock(&self.changing);
        let mut stored = self.stored(name)?;
        let healthy = self
            .lock()
            .get(name)
            .and_then(|e| e.runner.as_ref())
            .is_some_and(|r| !r.status().failed());
        if healthy && !stored.paused {
            return self.get(name);
        }
        stored.paused = false;
        stored.resumed_at_ms = now_ms();
        self.publish(&stored)?;
        if let Some(error) = self.start_error(name) {
            return Err(ManagerError::Unavailable(error));
        }
        tracing::info!(pipeline = %name, "pipeline resumed");
        self.get(name)
    }

    /// Deletes a pipeline everywhere: every daemon stops it and drops its
    /// spec and state; this one then deletes its internal topics (the
    /// consumer groups' offsets stay on the broker).
    pub fn delete(&self, name: &str) -> Result<(), ManagerError> {
        let _changing = lock(&self.changing);
        let stored = self.stored(name)?;
        self.registry.publish_pipeline(name, None)?;
        let topics = self.names(name).topics(stored.spec.steps.len());
        if let Err(e) = kafka::delete_topics(&self.kafka, &topics) {
            tracing::warn!(pipeline = %name, error = %e, ?topics, "could not delete the internal topics; delete them by hand");
        }
        Ok(())
    }

    /// Reads a step's state from the partitions this daemon owns: one key,
    /// or a scan (see [`super::query`]).
    pub fn query_state(&self, request: v1::QueryStateRequest) -> Result<LocalAnswer, ManagerError> {
        let (status, steps, paused) = {
            let pipelines = self.lock();
            let entry = pipelines
                .get(&request.pipeline)
                .ok_or_else(|| ManagerError::NotFound(request.pipeline.clone()))?;
            (
                entry.runner.as_ref().map(PipelineRunner::status),
                entry.stored.spec.steps.len(),
                entry.stored.paused,
            )
        };
        let last = u32::try_from(steps.saturating_sub(1)).unwrap_or(0);
        let step = request.step.unwrap_or(last);
        if step > last {
            return Err(ManagerError::InvalidSpec(SpecError(format!(
                "pipeline `{}` has steps 0 to {last}; there is no step {step}",
                request.pipeline
            ))));
        }
        let Some(status) = status else {
            return Err(ManagerError::Unavailable(format!(
                "pipeline `{}` is {}; resume it to query its state",
                request.pipeline,
                if paused { "paused" } else { "not running" }
            )));
        };
        let tasks = status.step(step).ok_or_else(|| {
            ManagerError::Unavailable(format!("step {step} is not running on this daemon"))
        })?;
        if tasks.inputs.is_empty() {
            return Err(ManagerError::Unavailable(format!(
                "pipeline `{}` is starting; try again shortly",
                request.pipeline
            )));
        }
        let query = request.query.ok_or_else(|| {
            ManagerError::InvalidSpec(SpecError("a state query needs a key or a scan".into()))
        })?;
        let response = match &query {
            v1::query_state_request::Query::Key(key) => tasks.get(key)?,
            v1::query_state_request::Query::Scan(scan) => tasks.scan(scan)?,
        };
        Ok(LocalAnswer {
            response,
            needed: tasks.needed(&query),
        })
    }

    /// The other daemons' control-plane addresses, as the registry has them.
    pub fn peers(&self) -> Vec<String> {
        let me = lock(&self.identity).as_ref().map(|i| i.id.clone());
        lock(&self.peers)
            .iter()
            .filter(|(id, _)| Some(*id) != me.as_ref())
            .map(|(_, url)| url.clone())
            .collect()
    }

    /// Stops following the registry and every pipeline (each task
    /// commits); used on shutdown.
    pub fn shutdown(&self) {
        // Other daemons stop asking this one for state.
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
        let runners: Vec<PipelineRunner> = self
            .lock()
            .values_mut()
            .filter_map(|e| e.runner.take())
            .collect();
        let threads: Vec<_> = runners
            .into_iter()
            .map(|r| std::thread::spawn(move || r.stop()))
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

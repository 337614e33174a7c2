//! The pipeline manager: the one place that knows which pipelines exist,
//! and what the control plane asks of them.
//!
//! Which pipelines exist is the registry's to say (see `registry` and
//! `cluster`): a request to create, pause, resume or delete a pipeline
//! publishes the change there, and every daemon applies it, this one
//! included, to the pipelines it runs (`local`). The data directory keeps a
//! copy of each record, so a registry that lost them (a new or reset
//! broker) gets them back.
//!
//! Its methods block (they talk to Kafka and wait for tasks to commit), so
//! the control plane calls them from blocking threads.

use super::appliers::Appliers;
use super::cluster::{Cluster, DaemonIdentity, PipelineRecord};
use super::error::ManagerError;
use super::local::{LocalPipelines, Resources};
use super::lock;
use super::query::{LocalAnswer, StateQuery, StateRead};
use super::registry::Registry;
use super::signing::ClusterSecret;
use super::stored::{SpecDir, StoredPipeline};
use super::stores::StateStores;
use super::view::{PipelineView, Viewer};
use crate::config::{LimitsConfig, QuotasConfig};
use crate::kafka::{self, InternalTopic, KafkaMetadata, KafkaSettings};
use crate::modules::{LookupError, ModuleStore};
use crate::state::StateMemory;
use crate::task::{DaemonList, TaskRuntime, TaskSlots};
use anyhow::Context as _;
use eddy_spec::{InternalNames, PipelineSpec, Rules, SpecError, SpecRequest, StartFrom};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a daemon keeps its pipelines and what it runs them with.
pub struct ManagerOptions {
    /// Where copies of pipeline records are kept.
    pub specs_dir: PathBuf,
    /// Where the pipelines' state stores are.
    pub state_dir: PathBuf,
    /// The memory every pipeline's state store draws on.
    pub state_memory: StateMemory,
    /// The daemon's ceilings on pipeline limits.
    pub ceilings: LimitsConfig,
    /// How much of the daemon clients may take.
    pub quotas: QuotasConfig,
    /// The prefix of consumer groups and internal topics.
    pub group_prefix: String,
    /// Signs and checks registry records; `None` leaves them unsigned.
    pub secret: Option<ClusterSecret>,
}

/// Creates, persists, runs and stops pipelines.
pub struct PipelineManager {
    local: LocalPipelines,
    cluster: Arc<Cluster>,
    runtime: Arc<TaskRuntime>,
    modules: Arc<ModuleStore>,
    kafka: KafkaSettings,
    metadata: Arc<KafkaMetadata>,
    ceilings: LimitsConfig,
    quotas: QuotasConfig,
    group_prefix: String,
    /// One change at a time from this daemon's control plane.
    changing: Mutex<()>,
    /// Applies each pipeline's records off the registry thread.
    appliers: Arc<Appliers>,
}

/// How long a request waits for this daemon to apply its change: longer
/// than a stopping task's longest call with the default call deadline,
/// plus its commit.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a starting daemon waits for the pipelines it found in the
/// registry to start before it serves.
const STARTUP_SETTLE_TIMEOUT: Duration = Duration::from_secs(300);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl PipelineManager {
    /// A manager over the records kept in `options.specs_dir`; call
    /// [`restore`](Self::restore) to start them.
    pub fn new(
        runtime: Arc<TaskRuntime>,
        modules: Arc<ModuleStore>,
        kafka: KafkaSettings,
        options: ManagerOptions,
    ) -> anyhow::Result<Self> {
        let specs = SpecDir::open(options.specs_dir)?;
        let metadata = Arc::new(KafkaMetadata::new(&kafka)?);
        let registry = Registry::new(
            &kafka,
            format!("{}registry", options.group_prefix),
            options.secret,
        )
        .context("could not set up the pipeline registry")?;
        let cluster = Arc::new(Cluster::new(registry, modules.clone(), runtime.clone()));
        let daemons: DaemonList = {
            let cluster = Arc::downgrade(&cluster);
            Arc::new(move || {
                cluster
                    .upgrade()
                    .map(|c| c.daemon_ids())
                    .unwrap_or_default()
            })
        };
        let resources = Resources {
            runtime: runtime.clone(),
            modules: modules.clone(),
            kafka: kafka.clone(),
            metadata: metadata.clone(),
            group_prefix: options.group_prefix.clone(),
            daemons,
            budgets: options.ceilings.budgets(),
            slots: TaskSlots::new(options.quotas.max_tasks, options.quotas.max_pipeline_tasks),
        };
        let stores = StateStores::new(options.state_dir, options.state_memory);
        Ok(Self {
            local: LocalPipelines::new(resources, stores, specs),
            cluster,
            runtime,
            modules,
            kafka,
            metadata,
            ceilings: options.ceilings,
            quotas: options.quotas,
            group_prefix: options.group_prefix,
            changing: Mutex::new(()),
            appliers: Arc::default(),
        })
    }

    fn names<'a>(&'a self, name: &'a str) -> InternalNames<'a> {
        InternalNames {
            prefix: &self.group_prefix,
            pipeline: name,
        }
    }

    fn viewer(&self) -> Viewer<'_> {
        Viewer {
            kafka: &self.kafka,
            metadata: &self.metadata,
            group_prefix: &self.group_prefix,
        }
    }

    /// Reads the registry (see [`Self::join_registry`]) on a thread that
    /// retries with backoff while Kafka is unreachable; returns after the
    /// first attempt or `wait`, whichever comes first. Until the registry
    /// was read, pipeline requests answer UNAVAILABLE with the reason.
    pub fn restore(self: &Arc<Self>, identity: DaemonIdentity, wait: Duration) {
        self.cluster.set_identity(identity);
        let (tried, first_attempt) = std::sync::mpsc::channel();
        let manager = self.clone();
        let joiner = std::thread::Builder::new()
            .name("eddy-registry-join".into())
            .spawn(move || {
                let mut backoff = Duration::from_secs(1);
                while !manager.cluster.stopped() {
                    let result = manager.join_registry().map_err(|e| format!("{e:#}"));
                    let error = result.as_ref().err().cloned();
                    manager.cluster.set_read(result);
                    let _ = tried.send(());
                    let Some(error) = error else {
                        return;
                    };
                    tracing::warn!(
                        error,
                        retry_in = ?backoff,
                        "could not read the pipeline registry; pipelines start once it is read"
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            });
        match joiner {
            Ok(_) => {
                let _ = first_attempt.recv_timeout(wait);
            }
            Err(e) => self
                .cluster
                .set_read(Err(format!("could not start a thread: {e}"))),
        }
    }

    /// Answers UNAVAILABLE until the registry was read.
    fn check_read(&self) -> Result<(), ManagerError> {
        match self.cluster.unread() {
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
        let manager = Arc::downgrade(self);
        self.cluster.follow(&self.metadata, move |name, record| {
            let Some(manager) = manager.upgrade() else {
                return;
            };
            let applying = manager.clone();
            match record {
                PipelineRecord::Stored(stored) => match manager.checked(*stored) {
                    Ok(stored) => manager
                        .appliers
                        .submit(name, move || applying.local.apply(stored)),
                    Err(e) => tracing::error!(
                        pipeline = %name,
                        error = %e,
                        "ignoring a pipeline record in the registry that this daemon would refuse as a request"
                    ),
                },
                PipelineRecord::Deleted => {
                    let name = name.to_owned();
                    manager
                        .appliers
                        .submit(&name.clone(), move || applying.local.remove(&name));
                }
            }
        })?;
        // Started as the registry has them before this daemon serves.
        if !self.appliers.all_settled(STARTUP_SETTLE_TIMEOUT) {
            tracing::warn!("some pipelines are still starting; the daemon serves meanwhile");
        }
        for stored in self.local.specs().all()? {
            if self.cluster.knows(&stored.spec.name) {
                continue;
            }
            let stored = match self.checked(stored) {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::error!(error = %e, "not publishing a pipeline from the data directory that this daemon would refuse as a request");
                    continue;
                }
            };
            tracing::info!(pipeline = %stored.spec.name, "publishing a pipeline the registry does not know from the data directory");
            self.cluster.publish_modules(&stored.spec.steps)?;
            self.publish(&stored.spec.name, Some(&stored))?;
        }
        Ok(())
    }

    /// The rules every spec is checked against here.
    fn rules(&self) -> Rules<'_> {
        Rules {
            ceilings: &self.ceilings,
            group_prefix: &self.group_prefix,
        }
    }

    /// A recorded pipeline, its spec checked as a request would be.
    fn checked(&self, mut stored: StoredPipeline) -> Result<StoredPipeline, SpecError> {
        stored.spec = stored.spec.revalidate(self.rules())?;
        Ok(stored)
    }

    /// Validates a new pipeline, checks its topics, records its start
    /// offsets and publishes it (with its modules): every daemon starts it.
    pub fn create(&self, request: SpecRequest) -> Result<PipelineView, ManagerError> {
        let _changing = lock(&self.changing);
        self.check_read()?;
        let spec = PipelineSpec::check(request, self.rules(), |module| {
            self.modules
                .resolve(module)
                .map_err(|e| SpecError(e.to_string()))
        })?;
        if self.local.contains(&spec.name) {
            return Err(ManagerError::AlreadyExists(spec.name));
        }
        let pipelines = self.pipeline_count();
        if pipelines >= self.quotas.max_pipelines {
            return Err(ManagerError::Quota(format!(
                "the cluster has {pipelines} pipelines, the most this daemon's \
                 quotas.max-pipelines allows; delete one first"
            )));
        }
        // Compile now so a module problem fails the request, not the tasks.
        for digest in &spec.steps {
            self.runtime.module(digest, || self.modules.bytes(digest))?;
        }
        self.prepare_topics(&spec)?;
        let stored = StoredPipeline {
            spec,
            paused: false,
            created_at_ms: now_ms(),
            resumed_at_ms: 0,
        };
        let name = stored.spec.name.clone();
        self.cluster.publish_modules(&stored.spec.steps)?;
        self.publish(&name, Some(&stored))?;
        if let Some(error) = self.start_error(&name) {
            // Nothing ran: take the pipeline back rather than leave it failed.
            if let Err(e) = self.publish(&name, None) {
                tracing::warn!(pipeline = %name, error = %e, "could not withdraw a pipeline that failed to start");
            }
            return Err(ManagerError::Unavailable(error));
        }
        tracing::info!(pipeline = %name, "pipeline created");
        self.get(&name)
    }

    /// Makes sure failed records of `spec` have somewhere to go: a named
    /// dead-letter topic must exist; the default one eddy creates, and
    /// adopts when it exists only if eddy created it for this pipeline (an
    /// earlier one of the same name), never someone else's topic that
    /// happens to be called so.
    fn prepare_dead_letter(
        &self,
        spec: &PipelineSpec,
        topic: &str,
        partitions: i32,
    ) -> Result<(), ManagerError> {
        if spec.dead_letter_topic.is_some() {
            self.metadata.partition_count(topic)?;
            return Ok(());
        }
        match self.metadata.partition_count(topic) {
            Ok(_) if self.cluster.dead_letter_owner(topic).as_deref() == Some(&spec.name) => Ok(()),
            Ok(_) => Err(SpecError(format!(
                "topic `{topic}` exists and eddy did not create it as pipeline `{}`'s \
                 dead-letter topic: eddy will not write failed records into a topic it does \
                 not know to be for them; name one with --dead-letter-topic (this one, if it is \
                 meant for them)",
                spec.name
            ))
            .into()),
            Err(kafka::TopicError::Missing(_)) => {
                let created = InternalTopic::dead_letter(topic, partitions);
                kafka::ensure_topic(&self.kafka, &self.metadata, &created)?;
                self.cluster.publish_dead_letter(topic, &spec.name)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a new pipeline's topics, creates its internal ones and
    /// records where each step starts. Between steps, records go through a
    /// repartition topic as wide as the widest input (as in Kafka Streams),
    /// keyed by murmur2; later steps start at the beginning of theirs.
    fn prepare_topics(&self, spec: &PipelineSpec) -> Result<(), ManagerError> {
        let mut inputs = Vec::new();
        let mut widest = 1;
        for topic in &spec.inputs {
            let count = self.metadata.partition_count(topic)?;
            widest = widest.max(count);
            inputs.extend((0..count).map(|p| (topic.clone(), p)));
        }
        for topic in spec.output_topics() {
            self.metadata.partition_count(topic)?;
        }
        let names = self.names(&spec.name);
        if let Some(topic) = spec.dead_letter(names) {
            self.prepare_dead_letter(spec, &topic, widest)?;
        }
        for step in 1..u32::try_from(spec.steps.len()).unwrap_or(1) {
            let name = names.repartition(step);
            let topic = InternalTopic::repartition(&name, widest);
            kafka::ensure_topic(&self.kafka, &self.metadata, &topic)?;
            let partitions: Vec<(String, i32)> = (0..widest).map(|p| (name.clone(), p)).collect();
            self.commit_start_offsets(&names.group(step), StartFrom::Earliest, &partitions)?;
        }
        self.commit_start_offsets(&names.group(0), spec.start_from, &inputs)
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
                .settled_watermarks(topic, *partition)
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
        match self.local.snapshot(name) {
            // Outside the pipelines' lock: a view may wait on Kafka.
            Some(snapshot) => Ok(self.viewer().view(snapshot)),
            None => {
                self.check_read()?;
                Err(ManagerError::NotFound(name.to_owned()))
            }
        }
    }

    /// Every pipeline.
    pub fn list(&self) -> Result<Vec<PipelineView>, ManagerError> {
        // An empty list from a daemon that has not read the registry would
        // be a lie.
        self.check_read()?;
        Ok(self
            .local
            .names()
            .iter()
            .filter_map(|n| self.get(n).ok())
            .collect())
    }

    /// Deletes module `reference` (a digest or a unique prefix of one) on
    /// every daemon, unless a pipeline runs it; the full digest.
    pub fn delete_module(&self, reference: &str) -> Result<String, ManagerError> {
        let _changing = lock(&self.changing);
        self.check_read()?;
        let digest = self.modules.resolve(reference).map_err(|e| match e {
            LookupError::NotFound(_) => ManagerError::ModuleNotFound(e.to_string()),
            LookupError::Malformed(_) | LookupError::Ambiguous(..) => {
                ManagerError::InvalidSpec(SpecError(e.to_string()))
            }
            LookupError::Io(e) => ManagerError::Internal(e.into()),
        })?;
        let users = self.cluster.users_of(&digest);
        if !users.is_empty() {
            return Err(ManagerError::Precondition(format!(
                "module {digest} is run by pipeline(s) {}: delete them first",
                users.join(", ")
            )));
        }
        let size = self
            .modules
            .info(&digest)
            .map_err(|e| ManagerError::ModuleNotFound(e.to_string()))?
            .size;
        self.cluster.delete_module(&digest, size)?;
        tracing::info!(%digest, "module deleted on request");
        Ok(digest)
    }

    /// Stops a pipeline on every daemon, keeping its offsets and state.
    pub fn pause(&self, name: &str) -> Result<PipelineView, ManagerError> {
        let _changing = lock(&self.changing);
        let mut stored = self.stored(name)?;
        stored.paused = true;
        self.publish(name, Some(&stored))?;
        tracing::info!(pipeline = %name, "pipeline paused");
        self.get(name)
    }

    /// Starts a paused pipeline, or restarts a failed one, on every daemon,
    /// from its committed state.
    pub fn resume(&self, name: &str) -> Result<PipelineView, ManagerError> {
        let _changing = lock(&self.changing);
        let mut stored = self.stored(name)?;
        let healthy = self
            .local
            .snapshot(name)
            .and_then(|s| s.status)
            .is_some_and(|status| !status.failed());
        if healthy && !stored.paused {
            return self.get(name);
        }
        stored.paused = false;
        stored.resumed_at_ms = now_ms();
        self.publish(name, Some(&stored))?;
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
        self.publish(name, None)?;
        let topics = self.names(name).topics(stored.spec.steps.len());
        if let Err(e) = kafka::delete_topics(&self.kafka, &self.metadata, &topics) {
            tracing::warn!(pipeline = %name, error = %e, ?topics, "could not delete the internal topics; delete them by hand");
        }
        Ok(())
    }

    /// The record of pipeline `name`.
    fn stored(&self, name: &str) -> Result<StoredPipeline, ManagerError> {
        self.check_read()?;
        self.local
            .snapshot(name)
            .map(|s| s.stored)
            .ok_or_else(|| ManagerError::NotFound(name.to_owned()))
    }

    /// Why `name` could not start here after a change was applied.
    fn start_error(&self, name: &str) -> Option<String> {
        self.local.snapshot(name).and_then(|s| s.start_error)
    }

    /// Reads a step's state from the partitions this daemon owns: one key,
    /// or a scan (see `query`).
    pub fn query_state(&self, query: StateQuery) -> Result<LocalAnswer, ManagerError> {
        let snapshot = self
            .local
            .snapshot(&query.pipeline)
            .ok_or_else(|| ManagerError::NotFound(query.pipeline.clone()))?;
        let steps = snapshot.stored.spec.steps.len();
        let last = u32::try_from(steps.saturating_sub(1)).unwrap_or(0);
        let step = query.step.unwrap_or(last);
        if step > last {
            return Err(ManagerError::InvalidSpec(SpecError(format!(
                "pipeline `{}` has steps 0 to {last}; there is no step {step}",
                query.pipeline
            ))));
        }
        let Some(status) = snapshot.status else {
            return Err(ManagerError::Unavailable(format!(
                "pipeline `{}` is {}; resume it to query its state",
                query.pipeline,
                if snapshot.stored.paused {
                    "paused"
                } else {
                    "not running"
                }
            )));
        };
        let tasks = status.step(step).ok_or_else(|| {
            ManagerError::Unavailable(format!("step {step} is not running on this daemon"))
        })?;
        if tasks.inputs.is_empty() {
            return Err(ManagerError::Unavailable(format!(
                "pipeline `{}` is starting; try again shortly",
                query.pipeline
            )));
        }
        let answer = match &query.read {
            StateRead::Key(key) => tasks.get(key)?,
            StateRead::Scan(scan) => tasks.scan(scan)?,
        };
        Ok(LocalAnswer {
            answer,
            needed: tasks.needed(),
        })
    }

    /// Tasks running on this daemon, counted against `quotas.max-tasks`.
    pub fn tasks_running(&self) -> u32 {
        self.local.tasks_running()
    }

    /// Pipelines in the cluster, counted against `quotas.max-pipelines`.
    pub fn pipeline_count(&self) -> u32 {
        u32::try_from(self.local.names().len()).unwrap_or(u32::MAX)
    }

    /// The other daemons' control-plane addresses, as the registry has them.
    pub fn peers(&self) -> Vec<String> {
        self.cluster.peers()
    }

    /// Stops following the registry and every pipeline (each task
    /// commits); used on shutdown.
    pub fn shutdown(&self) {
        self.cluster.leave();
        if !self.appliers.all_settled(SETTLE_TIMEOUT) {
            tracing::warn!("changes to some pipelines were still being applied at shutdown");
        }
        self.local.stop_all();
    }

    /// Publishes pipeline `name`'s record (`None`: deleted) and waits
    /// until this daemon applied it.
    fn publish(&self, name: &str, stored: Option<&StoredPipeline>) -> Result<(), ManagerError> {
        self.cluster.publish(name, stored)?;
        self.settle(name);
        Ok(())
    }

    /// Waits for this daemon to have applied the change just published to
    /// pipeline `name` (see `appliers`): a stop waits for the pipeline's
    /// tasks to commit, at most [`SETTLE_TIMEOUT`] here.
    fn settle(&self, name: &str) {
        if !self.appliers.settled(name, SETTLE_TIMEOUT) {
            tracing::warn!(pipeline = %name, "the change is still being applied here; its status shows it once it is");
        }
    }
}

//! The pipelines on this daemon: each one's record as last applied from
//! the registry, its runner while it runs here, and why it could not start
//! if it could not. Applying a record (re)starts or stops the pipeline;
//! a deletion drops its runner, its spec's copy and its state.

use super::error::ManagerError;
use super::lock;
use super::runner::{GroupExit, PipelineRunner, RunnerStatus};
use super::stored::{SpecDir, StoredPipeline};
use super::stores::StateStores;
use crate::kafka::{KafkaMetadata, KafkaSettings, Producer};
use crate::modules::ModuleStore;
use crate::runtime::GuestLimits;
use crate::task::{DaemonList, TaskPlan, TaskRuntime, TaskSettings, TaskSlots};
use anyhow::Context as _;
use eddy_spec::{Guarantee, GuestBudgets, InternalNames, PipelineSpec};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One pipeline on this daemon.
struct Entry {
    stored: StoredPipeline,
    runner: Option<PipelineRunner>,
    /// Why the pipeline could not be started, if it could not.
    start_error: Option<String>,
}

/// A pipeline as this daemon has it, read without holding on to it.
pub(super) struct Snapshot {
    pub(super) stored: StoredPipeline,
    /// Its runner's status, while it runs here.
    pub(super) status: Option<RunnerStatus>,
    pub(super) start_error: Option<String>,
}

/// What a pipeline's runner is made from on this daemon.
pub(super) struct Resources {
    pub(super) runtime: Arc<TaskRuntime>,
    pub(super) modules: Arc<ModuleStore>,
    pub(super) kafka: KafkaSettings,
    pub(super) metadata: Arc<KafkaMetadata>,
    /// The daemon's prefix for groups and internal topics.
    pub(super) group_prefix: String,
    /// The daemons the registry lists, among which standby copies are placed.
    pub(super) daemons: DaemonList,
    /// What each task's guest may make this daemon hold.
    pub(super) budgets: GuestBudgets,
    /// The daemon's task slots.
    pub(super) slots: Arc<TaskSlots>,
}

/// The pipelines this daemon has applied.
pub(super) struct LocalPipelines {
    entries: Mutex<BTreeMap<String, Entry>>,
    resources: Resources,
    stores: StateStores,
    specs: SpecDir,
}

impl LocalPipelines {
    pub(super) fn new(resources: Resources, stores: StateStores, specs: SpecDir) -> Self {
        Self {
            entries: Mutex::new(BTreeMap::new()),
            resources,
            stores,
            specs,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        lock(&self.entries)
    }

    /// The copies of pipeline records in the data directory.
    pub(super) fn specs(&self) -> &SpecDir {
        &self.specs
    }

    /// Tasks running on this daemon.
    pub(super) fn tasks_running(&self) -> u32 {
        self.resources.slots.running()
    }

    /// The names of the pipelines this daemon has.
    pub(super) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Whether pipeline `name` is here.
    pub(super) fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Pipeline `name`, if it is here.
    pub(super) fn snapshot(&self, name: &str) -> Option<Snapshot> {
        self.lock().get(name).map(|entry| Snapshot {
            stored: entry.stored.clone(),
            status: entry.runner.as_ref().map(PipelineRunner::status),
            start_error: entry.start_error.clone(),
        })
    }

    /// Makes this daemon run `stored` as recorded: (re)started, or stopped
    /// when paused.
    pub(super) fn apply(&self, stored: StoredPipeline) {
        let name = stored.spec.name.clone();
        let old = {
            let mut entries = self.lock();
            match entries.get_mut(&name) {
                Some(entry) if entry.stored == stored => return,
                Some(entry) => entry.runner.take(),
                None => None,
            }
        };
        if let Some(old) = old {
            // Started again below unless paused: staying a member gives the
            // new version the same partitions without a rebalance.
            old.stop(if stored.paused {
                GroupExit::Leave
            } else {
                GroupExit::Stay
            });
        }
        if let Err(e) = self.specs.save(&stored) {
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

    /// Stops and forgets a deleted pipeline here: its runner, its spec's
    /// copy and its state store.
    pub(super) fn remove(&self, name: &str) {
        let entry = self.lock().remove(name);
        if let Some(runner) = entry.and_then(|e| e.runner) {
            runner.stop(GroupExit::Leave);
        }
        if let Err(e) = self.specs.remove(name) {
            tracing::warn!(pipeline = %name, error = %e, "could not remove the spec's copy");
        }
        if let Err(e) = self.stores.destroy(name) {
            tracing::warn!(pipeline = %name, error = %format!("{e:#}"), "could not delete the state");
        }
        tracing::info!(pipeline = %name, "pipeline deleted");
    }

    /// Starts every step of `spec` on this daemon.
    fn start(&self, spec: &PipelineSpec) -> Result<PipelineRunner, ManagerError> {
        let resources = &self.resources;
        let producer = Producer::create(&resources.kafka.producer())
            .context("could not create the producer")?;
        let db = self
            .stores
            .open(&spec.name)
            .map_err(|e| ManagerError::Internal(anyhow::anyhow!(e)))?;
        let config = Arc::new(spec.config.clone());
        let names = InternalNames {
            prefix: &resources.group_prefix,
            pipeline: &spec.name,
        };
        let mut plans = Vec::with_capacity(spec.steps.len());
        for (step, digest) in (0u32..).zip(&spec.steps) {
            let module = resources
                .runtime
                .module(digest, || resources.modules.bytes(digest))?;
            plans.push(Arc::new(TaskPlan {
                settings: task_settings(spec, step, config.clone(), resources.budgets),
                inputs: spec.step_inputs(names, step),
                output: spec.step_output(names, step),
                named_outputs: spec.named_outputs.clone(),
                changelog: names.changelog(step),
                // A step feeding another step always commits in transactions:
                // the next step's state must not count a replayed batch twice.
                transactional: spec.guarantee == Guarantee::ExactlyOnce
                    || (step as usize) + 1 < spec.steps.len(),
                dead_letter: spec.dead_letter(names),
                db: db.clone(),
                kafka: resources.kafka.clone(),
                module,
                runtime: resources.runtime.clone(),
                producer: producer.clone(),
                group: names.group(step),
                slots: resources.slots.clone(),
            }));
        }
        Ok(PipelineRunner::start(
            plans,
            &resources.kafka,
            &resources.metadata,
            &resources.daemons,
        )?)
    }

    /// Stops every pipeline here, in parallel (each task commits), as the
    /// daemon shuts down: its consumers stay group members, so a restart
    /// within the session timeout moves no partition.
    pub(super) fn stop_all(&self) {
        let runners: Vec<PipelineRunner> = self
            .lock()
            .values_mut()
            .filter_map(|e| e.runner.take())
            .collect();
        let threads: Vec<_> = runners
            .into_iter()
            .map(|r| std::thread::spawn(move || r.stop(GroupExit::Stay)))
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// How the tasks of `spec`'s `step` behave.
fn task_settings(
    spec: &PipelineSpec,
    step: u32,
    config: Arc<BTreeMap<String, String>>,
    budgets: GuestBudgets,
) -> TaskSettings {
    let limits = &spec.limits;
    TaskSettings {
        pipeline: spec.name.clone(),
        step,
        multi_step: spec.steps.len() > 1,
        module: spec.steps.get(step as usize).cloned().unwrap_or_default(),
        start_from: spec.start_from,
        error_policy: spec.error_policy,
        guest: GuestLimits {
            memory_bytes: limits.memory_bytes,
            call_timeout: limits.call_timeout,
            max_output_records: limits.max_output_records,
            max_output_bytes: limits.max_output_bytes,
            max_record_bytes: limits.max_record_bytes,
        },
        max_batch_records: limits.max_batch_records,
        batch_linger: limits.batch_linger,
        commit_interval: spec.commit_interval,
        transaction_timeout: spec.transaction_timeout,
        standby_replicas: spec.standby_replicas,
        config,
        budgets,
    }
}

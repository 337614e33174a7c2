//! A task's life: restore and start, turn the loop (see `batch`), and on a
//! failure hold the partition, back off and restart from the last
//! checkpoint, until it makes progress or is told to stop. The loop's state
//! is one [`Phase`]; each phase's step returns the next.

use super::batch::{IDLE_POLL, Progress};
use super::changelog::RestoreError;
use super::fault::Fault;
use super::partition::{PartitionTask, no_guest, now_ms};
use super::plan::{TaskExit, TaskGuest};
use super::producer::{
    TaskProducer, TopicNames, TxnError, legacy_transactional_id, transactional_id,
};
use super::retry::Retry;
use super::services::TaskServices;
use super::threads::{self, Afterwards};
use crate::runtime::Tier;
use crate::state::{StateLimits, TaskState};
use rdkafka::consumer::ConsumerContext;
use std::time::Instant;

/// Where a task's loop stands.
enum Phase {
    /// No guest: about to start, or waiting out the backoff after a
    /// failure (`failed_in` says where).
    Starting {
        retry: Retry,
        failed_in: Option<FailedIn>,
    },
    /// A guest processes batches. After a batch failed, `recovering` keeps
    /// its backoff until a batch commits again.
    Running {
        guest: TaskGuest,
        recovering: Option<Retry>,
    },
    /// Told to stop; what the guest left open is committed.
    Stopping { guest: Option<TaskGuest> },
}

/// Where a task failed, which decides when it counts as healed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FailedIn {
    /// Restoring or starting the guest: healed once a start succeeds.
    Start,
    /// A batch: healed once a batch commits.
    Batch,
}

impl<C: ConsumerContext + 'static> PartitionTask<C> {
    /// Runs until told to stop: restores the partition's state, then
    /// processes batches. A failure stops the work: the partition stays
    /// owned and paused, nothing is committed past the failing batch, and
    /// the task restarts after a backoff (see `retry`) from its last
    /// checkpoint, until it makes progress or the pipeline is paused. What
    /// the task leaves: its partition's queue, and whether its thread may
    /// serve another task (not once demoted).
    pub(crate) fn run(mut self) -> (TaskExit<C>, Afterwards) {
        self.status.set_assigned(true);
        self.status.clear_failure();
        tracing::info!(task = &*self.label, "task started");
        let mut phase = Phase::Starting {
            retry: Retry::default(),
            failed_in: None,
        };
        let guest = loop {
            if self.stopping() {
                break match phase {
                    Phase::Running { guest, .. } => Some(guest),
                    Phase::Stopping { guest } => guest,
                    Phase::Starting { .. } => None,
                };
            }
            phase = match phase {
                Phase::Starting { retry, failed_in } => self.starting(retry, failed_in),
                Phase::Running { guest, recovering } => self.running(guest, recovering),
                Phase::Stopping { guest } => break guest,
            };
        };
        if let Some(mut guest) = guest
            && let Err(fault) = self.commit_open(&mut guest)
        {
            tracing::warn!(task = &*self.label, error = %fault, "could not commit on stop; the next owner replays from the last commit");
            self.commits.abort();
        }
        self.offsets.commit_on_stop();
        self.status.set_assigned(false);
        tracing::info!(task = &*self.label, "task stopped");
        let afterwards = match self.tier {
            Tier::Fast => Afterwards::Reuse,
            Tier::Contained => Afterwards::End,
        };
        let exit = TaskExit {
            queue: self.input.into_queue(),
        };
        (exit, afterwards)
    }

    /// Starts the task once its backoff is over.
    fn starting(&mut self, mut retry: Retry, failed_in: Option<FailedIn>) -> Phase {
        let now = Instant::now();
        if !retry.due(now) {
            std::thread::sleep(retry.remaining(now).min(IDLE_POLL));
            return Phase::Starting { retry, failed_in };
        }
        retry.started();
        match self.start(retry.restarts()) {
            Ok(guest) => {
                let recovering = match failed_in {
                    None => None,
                    Some(FailedIn::Start) => {
                        self.healed(&mut retry);
                        None
                    }
                    Some(FailedIn::Batch) => Some(retry),
                };
                Phase::Running { guest, recovering }
            }
            Err(Fault::Restore(RestoreError::Stopped)) => Phase::Stopping { guest: None },
            Err(fault) => {
                self.fail(&fault, &mut retry);
                Phase::Starting {
                    retry,
                    failed_in: Some(FailedIn::Start),
                }
            }
        }
    }

    /// One turn of the loop.
    fn running(&mut self, guest: TaskGuest, recovering: Option<Retry>) -> Phase {
        let mut slot = Some(guest);
        let result = self.step(&mut slot);
        match (result, slot) {
            // Part of a batch ran; what is open is replayed by the
            // partition's next owner.
            (Err(Fault::Stopping), _) => {
                self.commits.abort();
                Phase::Stopping { guest: None }
            }
            (Ok(progress), Some(guest)) => {
                let recovering = match (progress, recovering) {
                    (Progress::Committed, Some(mut retry)) => {
                        self.healed(&mut retry);
                        None
                    }
                    (_, recovering) => recovering,
                };
                Phase::Running { guest, recovering }
            }
            // The failed batch was taken off the queue, so carrying on
            // would commit past it. What is open is aborted, its state
            // writes die with the instance, and the restart rewinds the
            // input to the last commit.
            (result, _) => {
                let fault = result.err().unwrap_or_else(no_guest);
                let mut retry = recovering.unwrap_or_default();
                self.commits.abort();
                self.fail(&fault, &mut retry);
                Phase::Starting {
                    retry,
                    failed_in: Some(FailedIn::Batch),
                }
            }
        }
    }

    fn fail(&self, fault: &Fault, retry: &mut Retry) {
        let error = self.explain(fault);
        let mut wait = retry.failed(Instant::now());
        if matches!(fault, Fault::Txn(TxnError::Fenced(_))) {
            // A fenced task is usually a zombie whose partition moved while
            // it was stalled: re-initialising at once would fence the new
            // owner in turn. Waiting a session timeout lets the group take
            // the partition away first (which stops this task).
            wait = retry.wait_at_least(self.plan.kafka.session_timeout, Instant::now());
        }
        let failures = retry.restarts();
        tracing::error!(
            task = &*self.label,
            error,
            failures,
            retry_in = ?wait,
            "task failed; it holds its partition and restarts from its last checkpoint"
        );
        let next_retry_at = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(0));
        self.status.fail(error);
        self.status.retry_at(failures, next_retry_at);
        self.input.pause();
    }

    /// The task's error as its status shows it. A failed write is
    /// explained by the cluster's state when Kafka refuses writes to a
    /// partition the task writes: the producer's own error is then only a
    /// timeout, or a transaction the broker could not finish aborting.
    fn explain(&self, fault: &Fault) -> String {
        let Some(kafka_error) = fault.write_error() else {
            return fault.to_string();
        };
        match self.plan.refused_writes() {
            Some(refusal) => format!("{refusal}. The producer's error: {kafka_error}"),
            None => fault.to_string(),
        }
    }

    fn healed(&self, retry: &mut Retry) {
        tracing::info!(
            task = &*self.label,
            failures = retry.restarts(),
            "task recovered after restarting"
        );
        retry.reset();
        self.status.clear_failure();
    }

    /// Starts (`restarts == 0`) or restarts the task: restores state and
    /// the guest, after a failure rewinds the input to the checkpoint, or to
    /// the failed batch when there is none yet, and resumes fetching. A
    /// first start resumes too: a previous task of this partition may have
    /// paused it after the partition was revoked (a fenced zombie's commit
    /// failing as the group takes the partition away), and librdkafka keeps
    /// that pause when the partition is assigned again.
    fn start(&mut self, restarts: u32) -> Result<TaskGuest, Fault> {
        if self.slot.is_none() {
            let slot = self.plan.slots.take(&self.plan.settings.pipeline);
            self.slot = Some(slot.map_err(|e| Fault::Quota(e.to_string()))?);
        }
        if restarts > 0 {
            tracing::info!(task = &*self.label, restarts, "restarting the task");
            self.status.retrying();
        }
        // Until the restore is done, queries must not read the local store.
        self.status.restore_started(0, 0);
        let started = self.start_guest();
        self.status.restore_stopped();
        let guest = started?;
        if restarts > 0
            && let Some(offset) = self.commits.rewind_to()
        {
            self.input.seek(offset)?;
        }
        self.input.resume()?;
        Ok(guest)
    }

    /// Restores the task's state, moves the input to where the state
    /// reaches, and instantiates the guest over it.
    fn start_guest(&mut self) -> Result<TaskGuest, Fault> {
        let plan = self.plan.clone();
        let changelog_partition = self.commits.changelog().partition;
        let store = plan.db.task_store(
            plan.settings.step,
            u32::try_from(changelog_partition).unwrap_or(0),
        );
        let mut state = TaskState::new(Box::new(store), StateLimits::default());
        let topics = TopicNames {
            output: &plan.output,
            changelog: &plan.changelog,
            named: plan
                .named_outputs
                .iter()
                .map(|(name, topic)| (name.as_str(), topic.as_str()))
                .collect(),
            dead_letter: plan.dead_letter.as_deref(),
        };
        let producer = if plan.transactional {
            let (group, topic, partition) = (&plan.group, &self.input.topic, self.input.partition);
            let timeout = plan.settings.transaction_timeout;
            TaskProducer::fence(
                &plan.kafka,
                &legacy_transactional_id(group, topic, partition),
                timeout,
            )
            .and_then(|()| {
                TaskProducer::transactional(
                    &plan.kafka,
                    &transactional_id(group, topic, partition),
                    timeout,
                    &topics,
                )
            })
        } else {
            TaskProducer::shared(&plan.producer, &topics)
        }
        .map_err(Fault::Txn)?;
        let changelog = self.commits.changelog().clone();
        let producer = self.commits.set_producer(producer);
        let restored =
            changelog.restore(&plan.kafka, producer, &mut state, &self.status, &self.stop)?;
        tracing::info!(
            task = &*self.label,
            replayed = restored.replayed,
            repaired = restored.repaired,
            checkpoint = ?restored.checkpoint,
            "state restored"
        );
        if let Some(checkpoint) = restored.checkpoint {
            self.commits.restored(checkpoint);
            if let Some(offset) = checkpoint.offset {
                self.input.seek(offset)?;
                self.status.set_committed(offset);
            }
        }
        let services = TaskServices::new(
            self.label.clone(),
            plan.settings.config.clone(),
            state,
            self.commits.checkpoint().stream_time,
            self.status.clone(),
            plan.settings.budgets,
        )?;
        let instantiating = (Instant::now(), crate::runtime::thread_cpu_time());
        let mut guest =
            plan.runtime
                .instantiate(&plan.module, services, plan.settings.guest, self.tier)?;
        let instantiate_us = instantiating.0.elapsed().as_micros();
        // Its own CPU time beside the wall time: tasks start together, and
        // on a busy machine the wall time is mostly waiting for a core.
        let instantiate_cpu_us = crate::runtime::thread_cpu_time()
            .zip(instantiating.1)
            .map_or(0, |(now, then)| now.saturating_sub(then).as_micros());
        guest.init(&self.guest_info())?;
        tracing::info!(
            task = &*self.label,
            instantiate_us,
            instantiate_cpu_us,
            thread_tasks_before = threads::tasks_before(),
            "guest instantiated"
        );
        Ok(guest)
    }
}

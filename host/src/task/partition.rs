//! A partition's task: what it holds (its input, its side of the commit
//! protocol, its group offsets, the engine its guests are made in), and
//! what its life (`lifecycle`), its batches (`batch`) and its error
//! policies (`isolation`) share.

use super::changelog::Changelog;
use super::commit::Commits;
use super::fault::Fault;
use super::group_offsets::GroupOffsets;
use super::input::Input;
use super::plan::{Assignment, TaskGuest, TaskPlan};
use super::status::TaskStatus;
use crate::runtime::{GuestError, GuestInfo, Tier};
use rdkafka::consumer::ConsumerContext;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One partition's task.
pub(crate) struct PartitionTask<C: ConsumerContext + 'static> {
    pub(super) label: Arc<str>,
    pub(super) plan: Arc<TaskPlan>,
    pub(super) status: Arc<TaskStatus>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) input: Input<C>,
    pub(super) commits: Commits,
    pub(super) offsets: GroupOffsets<C>,
    /// The engine the task's guests are made in: the containment engine
    /// once one of its guest calls failed (see [`Self::contain`]).
    pub(super) tier: Tier,
    /// The task's slot among the daemon's, once it has one.
    pub(super) slot: Option<super::TaskSlot>,
}

impl<C: ConsumerContext + 'static> PartitionTask<C> {
    /// The task of an assigned partition, which stops once `stop` is set;
    /// [`run`](Self::run) it on its own thread.
    pub(crate) fn new(
        assignment: Assignment<C>,
        plan: Arc<TaskPlan>,
        status: Arc<TaskStatus>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let Assignment {
            topic,
            partition,
            changelog_partition,
            topic_partitions,
            queue,
            consumer,
        } = assignment;
        let settings = &plan.settings;
        let label: Arc<str> = if settings.multi_step {
            format!(
                "{}/step-{}/{topic}-{partition}",
                settings.pipeline, settings.step
            )
            .into()
        } else {
            format!("{}/{topic}-{partition}", settings.pipeline).into()
        };
        let changelog = Changelog {
            topic: plan.changelog.clone(),
            partition: changelog_partition,
        };
        let offsets = GroupOffsets::new(
            consumer.clone(),
            topic.clone(),
            partition,
            status.clone(),
            label.clone(),
        );
        let input = Input::new(
            topic,
            partition,
            topic_partitions,
            queue,
            consumer,
            settings.start_from,
            settings.step > 0,
            label.clone(),
        );
        Self {
            label,
            plan,
            status,
            stop,
            input,
            commits: Commits::new(changelog),
            offsets,
            tier: Tier::Fast,
            slot: None,
        }
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// After a guest call failed, the task's guests are contained from now
    /// on: its thread is demoted to the idle class and every instance it
    /// makes (renewals, restarts) comes from the containment engine (see
    /// [`Tier`]); the thread ends with the task.
    pub(super) fn contain(&mut self) {
        if self.tier == Tier::Fast {
            crate::priority::demote_current_thread();
            self.tier = Tier::Contained;
        }
    }

    /// A guest call's result, containing the task's guests if it failed.
    pub(super) fn contain_failed<T>(&mut self, called: Result<T, GuestError>) -> Result<T, Fault> {
        called.map_err(|error| {
            // The host failed, not the guest: no reason to contain it.
            if !error.is_host_fault() {
                self.contain();
            }
            error.into()
        })
    }

    /// Where the task's guests run, as their `init` is told.
    pub(super) fn guest_info(&self) -> GuestInfo {
        GuestInfo {
            pipeline: self.plan.settings.pipeline.clone(),
            step: self.plan.settings.step,
            partition: self.input.partition,
        }
    }
}

/// The task's guest instance; a task without one has failed and never
/// calls this.
pub(super) fn live(slot: &mut Option<TaskGuest>) -> Result<&mut TaskGuest, Fault> {
    slot.as_mut().ok_or_else(no_guest)
}

pub(super) fn no_guest() -> Fault {
    Fault::internal("the task has no guest instance")
}

/// Makes one guest call, timing it for the partition's status.
pub(super) fn timed<T>(status: &TaskStatus, call: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = call();
    status.record_call(started.elapsed());
    result
}

/// The wall clock, in milliseconds since the Unix epoch.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

//! A pipeline's status as the control plane shows it: its spec, whether it
//! runs, and per input partition the task's progress, lag and counters,
//! read from the tasks on this daemon and from Kafka.

use super::local::Snapshot;
use super::runner::PartitionView;
use crate::kafka::{self, KafkaMetadata, KafkaSettings};
use crate::task::{CallTimes, RestoreProgress};
use eddy_spec::InternalNames;
use eddy_spec::PipelineSpec;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Whether a pipeline runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelineState {
    /// Its tasks run (on this daemon or others).
    Running,
    /// Paused on every daemon.
    Paused,
    /// A task failed and is retrying, or it could not start.
    Failed,
}

/// A snapshot of one pipeline.
#[derive(Clone, Debug)]
pub struct PipelineView {
    /// Its spec.
    pub spec: PipelineSpec,
    /// Whether it runs.
    pub state: PipelineState,
    /// Every input partition of every step.
    pub partitions: Vec<PartitionStatus>,
    /// A pipeline-level error (could not start, consumer trouble).
    pub error: Option<String>,
    /// When it was created, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// One input partition of a pipeline step.
#[derive(Clone, Debug)]
pub struct PartitionStatus {
    /// The input topic.
    pub topic: String,
    /// The input partition.
    pub partition: i32,
    /// The pipeline step it feeds.
    pub step: u32,
    /// The next offset to process, as committed; -1 if none.
    pub committed_offset: i64,
    /// The partition's end; -1 if unknown.
    pub high_watermark: i64,
    /// Records not yet processed; -1 if unknown.
    pub lag: i64,
    /// Records processed since this daemon started.
    pub records_in: u64,
    /// Records produced since this daemon started.
    pub records_out: u64,
    /// The task's last error, empty if none.
    pub last_error: String,
    /// Whether this daemon runs the partition's task.
    pub assigned: bool,
    /// The task's state restore, current or last.
    pub restore: RestoreProgress,
    /// Counters the guest reported.
    pub counters: BTreeMap<String, u64>,
    /// Failures since the task last made progress.
    pub retries: u32,
    /// When the next restart is due (Unix ms), 0 if none.
    pub next_retry_at_ms: i64,
    /// The task's guest call times.
    pub guest_calls: CallTimes,
    /// Keyed inputs that arrived off their key's murmur2 partition.
    pub off_partition_keys: u64,
}

/// Builds views from what this daemon has and what Kafka says.
pub(super) struct Viewer<'a> {
    pub(super) kafka: &'a KafkaSettings,
    pub(super) metadata: &'a KafkaMetadata,
    pub(super) group_prefix: &'a str,
}

impl Viewer<'_> {
    /// The view of a pipeline from its snapshot. May wait on Kafka.
    pub(super) fn view(&self, snapshot: Snapshot) -> PipelineView {
        let Snapshot {
            stored,
            status,
            start_error,
        } = snapshot;
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
        let partitions: Vec<PartitionStatus> = partitions
            .iter()
            .zip(committed)
            .map(|(p, committed)| self.partition(p, committed))
            .collect();
        // From the same reads as the partitions' errors, so a task failing
        // during this call never shows as running with an error.
        let failed = failed || partitions.iter().any(|p| !p.last_error.is_empty());
        let state = if stored.paused {
            PipelineState::Paused
        } else if failed {
            PipelineState::Failed
        } else {
            PipelineState::Running
        };
        PipelineView {
            spec: stored.spec,
            state,
            partitions,
            error,
            created_at_ms: stored.created_at_ms,
        }
    }

    fn partition(&self, p: &PartitionView, committed: Option<i64>) -> PartitionStatus {
        let (topic, partition) = &p.partition;
        let committed = committed.unwrap_or(p.status.committed());
        let high = self
            .metadata
            .watermarks(topic, *partition)
            .map_or(-1, |(_, high)| high);
        PartitionStatus {
            topic: topic.clone(),
            partition: *partition,
            step: p.step,
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
            restore: p.status.restore(),
            counters: p.status.counters(),
            retries: p.status.retries(),
            next_retry_at_ms: p.status.next_retry_at_ms(),
            guest_calls: p.status.call_times(),
            off_partition_keys: p.status.off_partition_keys(),
        }
    }

    /// A stopped pipeline's partitions, with the offsets its groups
    /// committed.
    fn stopped_partitions(
        &self,
        spec: &PipelineSpec,
    ) -> (Vec<PartitionView>, Option<Vec<Option<i64>>>) {
        let names = InternalNames {
            prefix: self.group_prefix,
            pipeline: &spec.name,
        };
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
            let offsets = kafka::group_offsets(self.kafka, &names.group(step), &keys)
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
}

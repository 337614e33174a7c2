//! Interactive queries: a step's state read from the task that owns it.
//!
//! A key's state lives in the task of the input partition its records
//! arrived in. Java clients and Kafka Streams put a key in the partition
//! murmur2 gives it, so a lookup reads that task's store first; but
//! producers built on librdkafka (kcat, confluent-kafka for Python, Go and
//! .NET) hash keys with CRC32 by default and put them elsewhere, so a key
//! not found there is looked for in every other partition of the step
//! before the answer is "no such key". A scan reads every task of the step
//! and merges in key order. This daemon reads the partitions it owns and says
//! which (`partitions_read`); the control plane asks the other daemons for
//! the rest (see `control::pipeline_service`). A task that is restoring
//! answers UNAVAILABLE rather than serve state older than what it already
//! acknowledged.

use super::error::ManagerError;
use super::runner::{StepTasks, TopicPartition};
use crate::kafka::murmur2_partition;
use crate::state::{StateStore, data_key};
use crate::task::TaskStatus;
use std::ops::Bound;

/// Most entries one scan returns.
const MAX_SCAN: usize = 10_000;

/// A read of a pipeline step's state.
#[derive(Clone, Debug)]
pub struct StateQuery {
    /// The pipeline.
    pub pipeline: String,
    /// The step whose state is read; the last step if `None`.
    pub step: Option<u32>,
    /// What is read.
    pub read: StateRead,
}

/// One key, or a scan.
#[derive(Clone, Debug)]
pub enum StateRead {
    /// The value of one key.
    Key(Vec<u8>),
    /// Entries in key order.
    Scan(StateScan),
}

/// Entries whose key starts with `prefix`, after `start_after`.
#[derive(Clone, Debug, Default)]
pub struct StateScan {
    /// The keys' prefix; empty for every key.
    pub prefix: Vec<u8>,
    /// Where a page starts (exclusive); empty for the first.
    pub start_after: Vec<u8>,
    /// Most entries; 0 for the default.
    pub limit: u32,
}

impl StateScan {
    /// The most entries this scan returns.
    pub fn limit(&self) -> usize {
        match self.limit {
            0 => 1000,
            n => (n as usize).min(MAX_SCAN),
        }
    }
}

/// One state entry, and the partition whose task holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateEntry {
    /// The guest's key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// The input partition whose task holds it.
    pub partition: TopicPartition,
}

/// What the partitions this daemon owns hold of a query's answer.
#[derive(Clone, Debug, Default)]
pub struct StateAnswer {
    /// The entries, in key order.
    pub entries: Vec<StateEntry>,
    /// Whether a scan has more entries past these.
    pub more: bool,
    /// The partitions read.
    pub partitions_read: Vec<TopicPartition>,
}

/// What this daemon could answer of a state query.
#[derive(Clone, Debug)]
pub struct LocalAnswer {
    /// The entries of the partitions it owns, and which those were.
    pub answer: StateAnswer,
    /// Every partition a complete answer reads.
    pub needed: Vec<TopicPartition>,
}

/// Whether a partition's task may answer: `Ok(false)` when it does not
/// run here, an error while it restores (its store could be behind what it
/// acknowledged).
fn check_readable(tp: &TopicPartition, status: Option<&TaskStatus>) -> Result<bool, ManagerError> {
    if !status.is_some_and(|s| s.assigned()) {
        return Ok(false);
    }
    let restore = status.map(|s| s.restore()).unwrap_or_default();
    if restore.restoring {
        return Err(ManagerError::Unavailable(format!(
            "partition {}/{} is restoring its state ({} of {} changelog records replayed); \
                 try again shortly",
            tp.0,
            tp.1,
            restore.position.saturating_sub(restore.start),
            restore.end.saturating_sub(restore.start)
        )));
    }
    Ok(true)
}

impl StepTasks {
    /// The store of the partition at `index`, if this daemon owns it.
    fn readable(&self, index: usize) -> Result<Option<crate::state::TaskStore>, ManagerError> {
        let tp = &self.inputs[index];
        if !check_readable(tp, self.statuses.get(tp).map(|s| &**s))? {
            return Ok(None);
        }
        let partition = u32::try_from(index).unwrap_or(u32::MAX);
        Ok(Some(
            self.plan.db.task_store(self.plan.settings.step, partition),
        ))
    }

    /// The partitions that may hold `key`: one per input topic.
    fn key_partitions(&self, key: &[u8]) -> Vec<usize> {
        self.plan
            .inputs
            .iter()
            .filter_map(|topic| {
                let count = self.inputs.iter().filter(|(t, _)| t == topic).count();
                let partition = murmur2_partition(key, i32::try_from(count).unwrap_or(1));
                self.inputs
                    .iter()
                    .position(|(t, p)| t == topic && *p == partition)
            })
            .collect()
    }

    /// The partitions that must have been read before a lookup may answer
    /// "no such key", or a scan is complete: every partition of the step
    /// (a key is wherever its records were consumed).
    pub(super) fn needed(&self) -> Vec<TopicPartition> {
        self.inputs.clone()
    }

    /// The value of `key`, if a partition this daemon owns holds it: the
    /// key's murmur2 partitions first, then the others.
    pub(super) fn get(&self, key: &[u8]) -> Result<StateAnswer, ManagerError> {
        let first = self.key_partitions(key);
        let rest = (0..self.inputs.len()).filter(|i| !first.contains(i));
        let mut partitions_read = Vec::new();
        for index in first.iter().copied().chain(rest) {
            let Some(store) = self.readable(index)? else {
                continue;
            };
            let partition = &self.inputs[index];
            partitions_read.push(partition.clone());
            if let Some(value) = store
                .get(&data_key(key))
                .map_err(|e| ManagerError::Unavailable(e.to_string()))?
            {
                return Ok(StateAnswer {
                    entries: vec![StateEntry {
                        key: key.to_vec(),
                        value,
                        partition: partition.clone(),
                    }],
                    more: false,
                    partitions_read,
                });
            }
        }
        Ok(StateAnswer {
            entries: Vec::new(),
            more: false,
            partitions_read,
        })
    }

    /// Entries starting with `scan.prefix`, after `scan.start_after`, in key
    /// order across the partitions of the step this daemon owns.
    pub(super) fn scan(&self, scan: &StateScan) -> Result<StateAnswer, ManagerError> {
        let limit = scan.limit();
        let start = data_key(&scan.prefix);
        let after = data_key(&scan.start_after);
        let lower = if !scan.start_after.is_empty() && after >= start {
            Bound::Excluded(after.as_slice())
        } else {
            Bound::Included(start.as_slice())
        };
        let end = crate::state::prefix_end(&start);
        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut entries = Vec::new();
        let mut partitions_read = Vec::new();
        for (index, partition) in self.inputs.iter().enumerate() {
            let Some(store) = self.readable(index)? else {
                continue;
            };
            partitions_read.push(partition.clone());
            let found = store
                .scan(lower, upper, limit + 1)
                .map_err(|e| ManagerError::Unavailable(e.to_string()))?;
            entries.extend(found.into_iter().map(|(k, value)| StateEntry {
                key: k[1..].to_vec(),
                value,
                partition: partition.clone(),
            }));
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok(StateAnswer {
            entries,
            more,
            partitions_read,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restoring_partition_answers_unavailable_with_progress_and_an_absent_one_is_skipped() {
        let tp = ("in".to_owned(), 2);
        let status = TaskStatus::default();
        assert!(matches!(check_readable(&tp, None), Ok(false)));
        status.set_assigned(true);
        status.restore_started(10, 110);
        status.restore_progress(35, 25);
        match check_readable(&tp, Some(&status)) {
            Err(ManagerError::Unavailable(m)) => {
                assert!(m.contains("in/2 is restoring"), "{m}");
                assert!(m.contains("25 of 100"), "{m}");
            }
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
        status.restore_finished(100, std::time::Duration::from_millis(5));
        assert!(matches!(check_readable(&tp, Some(&status)), Ok(true)));
    }
}

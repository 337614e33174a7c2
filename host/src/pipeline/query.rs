//! Interactive queries: a step's state read from the task that owns it.
//!
//! A key belongs to the input partition murmur2 puts it in, so a lookup
//! reads exactly one task's store; a scan reads every task of the step and
//! merges in key order. A task that is restoring answers UNAVAILABLE rather
//! than serve state older than what it already acknowledged.

use super::manager::ManagerError;
use super::runner::{StepTasks, TopicPartition};
use crate::kafka::murmur2_partition;
use crate::state::{StateStore, data_key};
use crate::task::TaskStatus;
use eddy_proto::v1;
use std::ops::Bound;

/// Most entries one scan returns.
const MAX_SCAN: usize = 10_000;

/// Whether a partition's task may answer: it runs here and is not
/// restoring (its store could be behind what it acknowledged).
fn check_readable(tp: &TopicPartition, status: Option<&TaskStatus>) -> Result<(), ManagerError> {
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
    if !status.is_some_and(|s| s.assigned()) {
        return Err(ManagerError::Unavailable(format!(
            "partition {}/{} is not running on this daemon (not yet assigned, or owned by \
                 another daemon); try again shortly",
            tp.0, tp.1
        )));
    }
    Ok(())
}

impl StepTasks {
    fn readable(&self, index: usize) -> Result<crate::state::TaskStore, ManagerError> {
        let tp = &self.inputs[index];
        check_readable(tp, self.statuses.get(tp).map(|s| &**s))?;
        let partition = u32::try_from(index).unwrap_or(u32::MAX);
        Ok(self.plan.db.task_store(self.plan.step, partition))
    }

    /// The value of `key`, from the partition that owns it.
    pub(super) fn get(&self, key: &[u8]) -> Result<v1::QueryStateResponse, ManagerError> {
        let mut entries = Vec::new();
        for topic in &self.plan.inputs {
            let count = self.inputs.iter().filter(|(t, _)| t == topic).count();
            let partition = murmur2_partition(key, i32::try_from(count).unwrap_or(1));
            let Some(index) = self
                .inputs
                .iter()
                .position(|(t, p)| t == topic && *p == partition)
            else {
                continue;
            };
            let store = self.readable(index)?;
            if let Some(value) = store
                .get(&data_key(key))
                .map_err(|e| ManagerError::Unavailable(e.to_string()))?
            {
                entries.push(v1::StateEntry {
                    key: key.to_vec(),
                    value,
                    topic: topic.clone(),
                    partition,
                });
                break;
            }
        }
        Ok(v1::QueryStateResponse {
            entries,
            more: false,
        })
    }

    /// Entries starting with `scan.prefix`, after `scan.start_after`, in key
    /// order across every partition of the step.
    pub(super) fn scan(
        &self,
        scan: &v1::StateScan,
    ) -> Result<v1::QueryStateResponse, ManagerError> {
        let limit = match scan.limit {
            0 => 1000,
            n => (n as usize).min(MAX_SCAN),
        };
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
        for (index, (topic, partition)) in self.inputs.iter().enumerate() {
            let store = self.readable(index)?;
            let found = store
                .scan(lower, upper, limit + 1)
                .map_err(|e| ManagerError::Unavailable(e.to_string()))?;
            entries.extend(found.into_iter().map(|(k, value)| v1::StateEntry {
                key: k[1..].to_vec(),
                value,
                topic: topic.clone(),
                partition: *partition,
            }));
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok(v1::QueryStateResponse { entries, more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restoring_or_absent_partition_answers_unavailable_with_progress() {
        let tp = ("in".to_owned(), 2);
        let status = TaskStatus::default();
        assert!(matches!(
            check_readable(&tp, None),
            Err(ManagerError::Unavailable(_))
        ));
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
        assert!(check_readable(&tp, Some(&status)).is_ok());
    }
}

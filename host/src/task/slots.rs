//! Task slots: how many tasks run on this daemon, all together and per
//! pipeline, within the daemon's quotas. Each running task holds one guest
//! instance from the engines' fixed pool, so without a bound one pipeline
//! with many partitions could take every instance and leave other
//! pipelines' tasks unable to start. A task takes its slot as it starts
//! and gives it back when it ends; a task that finds none waits and
//! retries, its status saying which quota is full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The daemon's task slots.
#[derive(Debug)]
pub struct TaskSlots {
    max_tasks: u32,
    max_pipeline_tasks: u32,
    /// Tasks running, per pipeline.
    taken: Mutex<HashMap<String, u32>>,
}

/// One running task's slot, given back on drop.
#[derive(Debug)]
pub struct TaskSlot {
    slots: Arc<TaskSlots>,
    pipeline: String,
}

/// Why a task could not take a slot.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoSlot(String);

impl TaskSlots {
    /// Slots for `max_tasks` tasks, at most `max_pipeline_tasks` per pipeline.
    pub fn new(max_tasks: u32, max_pipeline_tasks: u32) -> Arc<Self> {
        Arc::new(Self {
            max_tasks,
            max_pipeline_tasks,
            taken: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a task of `pipeline`, if the quotas leave one.
    pub fn take(self: &Arc<Self>, pipeline: &str) -> Result<TaskSlot, NoSlot> {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let total: u32 = taken.values().sum();
        if total >= self.max_tasks {
            return Err(NoSlot(format!(
                "this daemon runs {total} tasks, the most its quotas.max-tasks allows; the \\
                 task waits for one to end (add a daemon, or pause a pipeline)"
            )));
        }
        let mine = taken.entry(pipeline.to_owned()).or_default();
        if *mine >= self.max_pipeline_tasks {
            return Err(NoSlot(format!(
                "pipeline `{pipeline}` runs {mine} tasks on this daemon, the most \\
                 quotas.max-pipeline-tasks allows one pipeline; the task waits for one to end \\
                 (add a daemon)"
            )));
        }
        *mine += 1;
        Ok(TaskSlot {
            slots: self.clone(),
            pipeline: pipeline.to_owned(),
        })
    }

    /// Tasks running on this daemon.
    pub fn running(&self) -> u32 {
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        let mut taken = self
            .slots
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = taken.get_mut(&self.pipeline) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                taken.remove(&self.pipeline);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_in_all_and_per_pipeline_and_come_back() {
        let slots = TaskSlots::new(3, 2);
        let a1 = slots.take("a").expect("first");
        let _a2 = slots.take("a").expect("second");
        let error = slots.take("a").expect_err("a third of one pipeline");
        assert!(error.0.contains("quotas.max-pipeline-tasks"), "{error}");
        let _b1 = slots.take("b").expect("another pipeline");
        let error = slots.take("c").expect_err("the daemon is full");
        assert!(error.0.contains("quotas.max-tasks"), "{error}");
        assert_eq!(slots.running(), 3);
        drop(a1);
        assert_eq!(slots.running(), 2);
        slots.take("c").expect("a slot came back");
    }
}

//! Changes to pipelines, applied one pipeline at a time and each on a
//! thread of its own: the registry thread hands a pipeline's record over
//! and reads on. Stopping a pipeline waits for its tasks to finish their
//! calls and commit (as long as Kafka refuses the writes, if it does), and
//! that wait must hold neither the registry, nor the changes of other
//! pipelines, nor the daemon's own view of the cluster.
//! One pipeline's changes keep their order: a deletion and a re-creation
//! under the same name never overlap.

use super::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// The changes pending per pipeline.
#[derive(Default)]
pub(super) struct Appliers {
    /// Jobs waiting per pipeline; a pipeline is here while its thread runs.
    queues: Mutex<HashMap<String, VecDeque<Job>>>,
    /// Signalled when a pipeline's thread ran out of jobs.
    settled: Condvar,
}

impl Appliers {
    /// Runs `job` for pipeline `name` after the ones submitted before it.
    pub(super) fn submit(self: &Arc<Self>, name: &str, job: impl FnOnce() + Send + 'static) {
        let mut queues = lock(&self.queues);
        if let Some(queue) = queues.get_mut(name) {
            // Its thread runs, and takes this one in turn.
            queue.push_back(Box::new(job));
            return;
        }
        queues.insert(name.to_owned(), VecDeque::from([Box::new(job) as Job]));
        drop(queues);
        let appliers = self.clone();
        let owned = name.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("eddy-apply-{name}"))
            .spawn(move || appliers.drain(&owned));
        if let Err(e) = spawned {
            tracing::warn!(pipeline = %name, error = %e, "could not start a thread to apply a pipeline's change; applying it on this one");
            self.drain(name);
        }
    }

    /// Runs `name`'s jobs in order until there are none left.
    fn drain(&self, name: &str) {
        loop {
            let job = {
                let mut queues = lock(&self.queues);
                match queues.get_mut(name).and_then(VecDeque::pop_front) {
                    Some(job) => job,
                    None => {
                        queues.remove(name);
                        self.settled.notify_all();
                        return;
                    }
                }
            };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                tracing::error!(pipeline = %name, "applying a change to the pipeline panicked (a bug: please report it with this log)");
            }
        }
    }

    /// Waits until pipeline `name` has no change pending, at most
    /// `timeout`; whether it has none.
    pub(super) fn settled(&self, name: &str, timeout: Duration) -> bool {
        self.wait(timeout, |queues| !queues.contains_key(name))
    }

    /// Waits until no pipeline has a change pending, at most `timeout`;
    /// whether none has.
    pub(super) fn all_settled(&self, timeout: Duration) -> bool {
        self.wait(timeout, HashMap::is_empty)
    }

    fn wait(
        &self,
        timeout: Duration,
        done: impl Fn(&HashMap<String, VecDeque<Job>>) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut queues = lock(&self.queues);
        while !done(&queues) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            queues = self
                .settled
                .wait_timeout(queues, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_slow_pipeline_holds_neither_the_caller_nor_the_others_and_keeps_its_order() {
        let appliers = Arc::new(Appliers::default());
        let (release, held) = mpsc::channel::<()>();
        let (done, order) = mpsc::channel::<&str>();
        let slow = done.clone();
        appliers.submit("slow", move || {
            let _ = held.recv();
            let _ = slow.send("slow-1");
        });
        let second = done.clone();
        appliers.submit("slow", move || {
            let _ = second.send("slow-2");
        });
        appliers.submit("quick", move || {
            let _ = done.send("quick");
        });
        assert_eq!(order.recv_timeout(Duration::from_secs(10)), Ok("quick"));
        assert!(appliers.settled("quick", Duration::from_secs(10)));
        assert!(!appliers.settled("slow", Duration::from_millis(50)));
        assert!(!appliers.all_settled(Duration::from_millis(50)));
        drop(release);
        assert_eq!(order.recv_timeout(Duration::from_secs(10)), Ok("slow-1"));
        assert_eq!(order.recv_timeout(Duration::from_secs(10)), Ok("slow-2"));
        assert!(appliers.all_settled(Duration::from_secs(10)));
    }
}

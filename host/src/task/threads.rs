//! Task threads, kept for the next task.
//!
//! A new thread's allocator heap has no pages yet for what a task start
//! allocates, and each first page is a page fault: on this project's 2-core
//! machine a new thread took 27 faults and 90 µs of CPU to instantiate
//! `uppercase`, one that had instantiated before 23 µs (`just
//! bench-instantiation`). Tasks stop and start together (a rebalance, a
//! pause and resume, a redeploy), so a thread whose task ended waits a
//! while for the next one instead of exiting, unless the task says its
//! thread must end with it (it was demoted: see
//! [`crate::priority::demote_current_thread`]).

use std::sync::{Mutex, MutexGuard, mpsc};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Most threads waiting for a task; more exit when their task ends.
const MAX_IDLE: usize = 64;

/// How long a thread without a task waits for one before it exits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One task's work; whether its thread may run another afterwards.
type Job = Box<dyn FnOnce() -> Afterwards + Send>;

/// What becomes of a task thread once its task ended: the task's to say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Afterwards {
    /// It waits for the next task.
    Reuse,
    /// It ends with its task.
    End,
}

std::thread_local! {
    /// Tasks this thread ran to their end before the one it runs now.
    static TASKS_BEFORE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// How many tasks the calling task thread ran before its current one: 0 on
/// a new thread, whose first instantiation pays for its allocator heap.
pub(crate) fn tasks_before() -> u32 {
    TASKS_BEFORE.get()
}

/// Threads waiting for a task, each by the sender of its job queue.
static IDLE: Mutex<Vec<(ThreadId, mpsc::Sender<Job>)>> = Mutex::new(Vec::new());

fn idle() -> MutexGuard<'static, Vec<(ThreadId, mpsc::Sender<Job>)>> {
    // A panic while holding the lock cannot leave the list inconsistent.
    IDLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A task running on a pooled thread.
pub(crate) struct TaskThread<T> {
    result: mpsc::Receiver<std::thread::Result<T>>,
}

impl<T> TaskThread<T> {
    /// Waits for the task to end until `deadline`: its result, or the
    /// panic that ended it; the thread back if it has not ended, so that
    /// whoever waits can say so before waiting on.
    pub(crate) fn join_by(self, deadline: Instant) -> Result<std::thread::Result<T>, Self> {
        match self
            .result
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(result) => Ok(result),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(self),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Ok(Err(Box::new("the task's thread ended without a result")))
            }
        }
    }
}

/// Runs `task` on a waiting task thread, or on a new one named `name`.
/// `name` also becomes the thread's name in the OS (top, perf) for the
/// task's life. The task returns its result and what becomes of its thread.
pub(crate) fn spawn<T: Send + 'static>(
    name: String,
    task: impl FnOnce() -> (T, Afterwards) + Send + 'static,
) -> std::io::Result<TaskThread<T>> {
    let (done, result) = mpsc::channel();
    let os_name = name.clone();
    let mut job: Job = Box::new(move || {
        set_os_thread_name(&os_name);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
        // After a panic the thread's state is suspect: it is not reused.
        let (outcome, afterwards) = match outcome {
            Ok((value, afterwards)) => (Ok(value), afterwards),
            Err(panic) => (Err(panic), Afterwards::End),
        };
        let _ = done.send(outcome);
        afterwards
    });
    {
        let mut idle = idle();
        while let Some((_, thread)) = idle.pop() {
            // Sent under the lock: a thread that times out looks for its
            // entry under it, and finds the job queued if the entry is gone.
            match thread.send(job) {
                Ok(()) => return Ok(TaskThread { result }),
                Err(mpsc::SendError(back)) => job = back,
            }
        }
    }
    std::thread::Builder::new()
        .name(name)
        .spawn(move || serve(job))?;
    Ok(TaskThread { result })
}

/// A task thread's life: its first job, then any others it is given
/// while it waits.
fn serve(first: Job) {
    let id = std::thread::current().id();
    let (sender, jobs) = mpsc::channel::<Job>();
    let mut job = first;
    loop {
        if job() == Afterwards::End {
            return;
        }
        TASKS_BEFORE.set(TASKS_BEFORE.get().saturating_add(1));
        {
            let mut idle = idle();
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push((id, sender.clone()));
        }
        set_os_thread_name("eddy-task-idle");
        job = match jobs.recv_timeout(IDLE_TIMEOUT) {
            Ok(next) => next,
            Err(_) => {
                let mut idle = idle();
                if let Some(at) = idle.iter().position(|(entry, _)| *entry == id) {
                    idle.remove(at);
                    return;
                }
                // Taken just now: the job was sent under the lock.
                match jobs.try_recv() {
                    Ok(next) => next,
                    Err(_) => return,
                }
            }
        };
    }
}

/// Names the calling thread in the OS (at most 15 bytes are kept).
fn set_os_thread_name(name: &str) {
    #[cfg(target_os = "linux")]
    {
        let mut bytes: Vec<u8> = name.bytes().filter(|b| *b != 0).take(15).collect();
        bytes.push(0);
        // SAFETY: `bytes` is a NUL-terminated string of at most 16 bytes,
        // and the thread names itself.
        unsafe {
            libc::pthread_setname_np(libc::pthread_self(), bytes.as_ptr().cast());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

#[cfg(test)]
mod tests {
    use super::*;

    impl<T> TaskThread<T> {
        /// Waits for the task to end: its result, or the panic that ended it.
        fn join(self) -> std::thread::Result<T> {
            match self.join_by(Instant::now() + Duration::from_secs(60)) {
                Ok(result) => result,
                Err(_) => panic!("the task did not end within a minute"),
            }
        }
    }

    /// The pool is the process's: tests that spawn tasks take turns, or
    /// one takes the thread another waits to see offered.
    static POOL: Mutex<()> = Mutex::new(());

    fn pool() -> MutexGuard<'static, ()> {
        POOL.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[test]
    fn a_stuck_task_is_reported_at_the_deadline_and_joined_once_it_ends() {
        let _pool = pool();
        let (release, stuck) = mpsc::channel::<()>();
        let task = spawn("task-test-stuck".into(), move || {
            let _ = stuck.recv();
            (1, Afterwards::End)
        })
        .expect("spawns");
        let started = Instant::now();
        let Err(task) = task.join_by(started + Duration::from_millis(100)) else {
            panic!("the task is still stuck");
        };
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(release);
        let joined = task.join_by(Instant::now() + Duration::from_secs(10));
        assert_eq!(joined.ok().and_then(Result::ok), Some(1));
    }

    #[test]
    fn a_thread_whose_task_ended_runs_the_next_task() {
        let _pool = pool();
        let first = spawn("task-test-0".into(), || {
            (std::thread::current().id(), Afterwards::Reuse)
        })
        .expect("spawns")
        .join()
        .expect("the task returns");
        // The thread offers itself after it has handed over the result.
        let deadline = Instant::now() + Duration::from_secs(10);
        while idle().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the thread never waited for a task"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let second = spawn("task-test-1".into(), || {
            (std::thread::current().id(), Afterwards::Reuse)
        })
        .expect("spawns")
        .join()
        .expect("the task returns");
        assert_eq!(first, second);
    }

    #[test]
    fn a_panicking_task_is_reported_as_an_error() {
        let _pool = pool();
        let outcome = spawn("task-test-panic".into(), || -> (u32, Afterwards) {
            panic!("the task fails");
        })
        .expect("spawns")
        .join();
        assert!(outcome.is_err());
        let after = spawn("task-test-after".into(), || (7, Afterwards::End))
            .expect("spawns")
            .join();
        assert_eq!(after.ok(), Some(7));
    }
}

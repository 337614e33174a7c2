//! Which threads get the CPU first: those of guests in good standing.

/// Moves the calling thread to Linux's idle scheduling class
/// (`SCHED_IDLE`) for the rest of its life, after its guest failed a call:
/// a guest that loops to its deadline, fills its memory or floods its
/// output again and again (and is bisected and renewed each time under skip
/// or dead-letter) then runs only on CPU that healthy pipelines leave idle,
/// and any of their threads that wakes up preempts it at once. A lower nice
/// value is not enough: the healthy pipelines' threads wake and sleep per
/// batch, and each wake-up would wait out a hostile thread's time slice.
/// A task then ends its thread with it (`task::threads::Afterwards::End`):
/// the next task starts on a thread in the normal class. The guest
/// worker's threads are demoted from the start.
pub(crate) fn demote_current_thread() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            idle,
        ) {
            tracing::warn!(error = ?e, "could not move a thread of failing guests to the idle class");
        }
    }
}

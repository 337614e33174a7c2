//! A task: one input partition of one pipeline step, on its own thread.
//!
//! A task first restores its state (local store plus changelog tail, see
//! [`changelog`]) and resumes its input from the checkpoint the state
//! reaches. Then the loop is the unit of everything (`batch`): poll up to
//! N records or T ms from the partition's queue (`input`), make one guest
//! call, produce the outputs. Once per commit interval (100 ms by
//! default), and when its input pauses, the task commits (`commit`): it
//! logs the state mutations since the last commit (the last value per key)
//! and a checkpoint to the changelog, waits until Kafka acknowledges
//! everything (and, for a transactional task, commits the transaction),
//! then writes the mutations and the checkpoint to the local store in one
//! batch and commits the input offset to the group for lag tools
//! (`group_offsets`). A crash anywhere before that replays what was not
//! committed: outputs may repeat under at-least-once and never under
//! exactly-once, while state stays exact under both. A record the guest
//! fails on goes through the pipeline's error policy (`isolation`); a
//! failed task holds its partition and restarts with backoff
//! (`lifecycle`).
//!
//! The thread blocks only itself: a slow guest or a full producer queue
//! stalls this partition (backpressure through librdkafka's bounded fetch
//! queue), never the poll loop, the control plane or other pipelines.

mod batch;
mod changelog;
mod commit;
mod fault;
mod group_offsets;
mod guest_log;
mod input;
mod isolation;
mod lifecycle;
mod partition;
mod plan;
mod producer;
mod retry;
mod services;
mod settings;
mod slots;
mod standby;
mod status;
pub(crate) mod threads;

pub use changelog::{Changelog, RestoreError, Restored};
pub(crate) use partition::PartitionTask;
pub use plan::{Assignment, TaskExit, TaskGuest, TaskModule, TaskPlan, TaskRuntime};
pub use services::TaskServices;
pub use settings::{ErrorPolicy, GuestBudgets, StartFrom, TaskSettings};
pub use slots::{NoSlot, TaskSlot, TaskSlots};
pub use standby::{DaemonList, Standbys};
pub use status::{CallTimes, RestoreProgress, TaskStatus};

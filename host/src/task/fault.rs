//! Why a batch or a task start failed: the task's error, which decides how
//! it restarts (see `lifecycle`).

use super::changelog::RestoreError;
use super::producer::TxnError;
use crate::runtime::GuestError;
use crate::state::StateError;
use rdkafka::error::KafkaError;

/// Why a batch, or a task's start, failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum Fault {
    #[error(transparent)]
    Guest(GuestError),
    #[error("producing output failed: {0}{advice}", advice = crate::kafka::advice(.0))]
    Produce(KafkaError),
    #[error(transparent)]
    Txn(TxnError),
    #[error(
        "the guest sent a record to output `{0}`, but the pipeline has no such output \
         (define it with --named-output {0}=TOPIC)"
    )]
    UnknownOutput(String),
    #[error("{0}")]
    Consume(String),
    #[error("committing state failed: {0}")]
    State(#[from] StateError),
    /// The state store failed under a guest's call: the batch is retried
    /// from the last commit under every error policy, since its records
    /// are not at fault.
    #[error("the state store failed during a guest call, so the batch is retried: {0}")]
    Store(String),
    /// The guest worker process died or stopped answering during a
    /// contained guest's call: retried like [`Self::Store`], in a new worker.
    #[error("{0}; the batch is retried")]
    Worker(String),
    #[error("writing the changelog failed: {0}{advice}", advice = crate::kafka::advice(.0))]
    Changelog(KafkaError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The daemon's quotas leave the task no slot to run in.
    #[error("{0}")]
    Quota(String),
    /// The task was told to stop in the middle of a batch it is isolating
    /// failures in; the batch is left uncommitted for the next owner.
    #[error("stopped in the middle of a batch")]
    Stopping,
}

/// The fault of a failed guest call: the guest's, unless the state store
/// or the guest worker failed under it.
impl From<GuestError> for Fault {
    fn from(error: GuestError) -> Self {
        match error {
            GuestError::Store(m) => Self::Store(m),
            GuestError::Worker(m) => Self::Worker(m),
            e => Self::Guest(e),
        }
    }
}

impl Fault {
    /// Kafka's error, when Kafka refused or never acknowledged a write, or
    /// could not finish a transaction: the faults a partition short of
    /// in-sync replicas shows up as.
    pub(super) fn write_error(&self) -> Option<&KafkaError> {
        match self {
            Self::Produce(e)
            | Self::Changelog(e)
            | Self::Txn(TxnError::Failed(e) | TxnError::NoCoordinator(e)) => Some(e),
            _ => None,
        }
    }

    /// A bug in eddy, not in the guest or Kafka: the batch is replayed.
    pub(super) fn internal(what: &str) -> Self {
        Self::Consume(format!("internal error: {what}"))
    }
}

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
    Guest(#[from] GuestError),
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
    #[error("writing the changelog failed: {0}{advice}", advice = crate::kafka::advice(.0))]
    Changelog(KafkaError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The task was told to stop in the middle of a batch it is isolating
    /// failures in; the batch is left uncommitted for the next owner.
    #[error("stopped in the middle of a batch")]
    Stopping,
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

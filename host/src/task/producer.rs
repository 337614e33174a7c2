//! How a task produces. Under at-least-once, most tasks share their
//! pipeline's idempotent producer. A task whose output feeds another step,
//! and every task of an exactly-once pipeline, gets a transactional producer
//! of its own: its outputs, its changelog records and its checkpoint commit
//! in one Kafka transaction, so a batch replayed after a crash never
//! reaches a `read_committed` reader twice and the next step's state stays
//! exact. The transactional id is stable per task, so a restarted or moved
//! task fences the producer of its previous incarnation (a zombie).
//!
//! Errors are classified as librdkafka documents them: a retriable commit
//! is retried in place; an abortable error aborts the transaction and the
//! task starts over from its checkpoint; a fenced producer means another
//! instance of the task took over, and the producer is rebuilt only after
//! the group had time to take the partition away (see `Fault::Fenced`).

use crate::kafka::KafkaSettings;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer as _};
use std::time::Duration;

/// How long one transaction call may take before the commit fails.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a retriable commit is retried before the task starts over.
const COMMIT_ATTEMPTS: u32 = 3;

/// Why a transaction could not commit.
#[derive(Debug, thiserror::Error)]
pub(super) enum TxnError {
    /// A newer producer with the task's transactional id exists: another
    /// daemon (or a restart of this one) owns the task now.
    #[error(
        "this task's producer was fenced ({0}): another instance took over the partition; \
         nothing this instance wrote since its last commit becomes visible"
    )]
    Fenced(KafkaError),
    /// Any other failure: what was open is aborted and replayed.
    #[error("{0}")]
    Failed(KafkaError),
}

/// A task's producer.
pub(super) struct TaskProducer {
    producer: FutureProducer,
    transactional: bool,
}

impl TaskProducer {
    /// The pipeline's shared idempotent producer.
    pub(super) fn shared(producer: &FutureProducer) -> Self {
        Self {
            producer: producer.clone(),
            transactional: false,
        }
    }

    /// A transactional producer for the task `id`, with any previous
    /// producer of that id fenced and its open transaction aborted.
    pub(super) fn transactional(
        kafka: &KafkaSettings,
        id: &str,
        timeout: Duration,
    ) -> Result<Self, TxnError> {
        let producer: FutureProducer = kafka
            .transactional_producer(id, timeout)
            .create()
            .map_err(TxnError::Failed)?;
        let this = Self {
            producer,
            transactional: true,
        };
        this.producer
            .init_transactions(TXN_CALL_TIMEOUT)
            .map_err(|e| this.classify(e))?;
        Ok(this)
    }

    pub(super) fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Opens a transaction.
    pub(super) fn begin(&self) -> Result<(), TxnError> {
        if self.transactional {
            self.producer
                .begin_transaction()
                .map_err(|e| self.classify(e))?;
        }
        Ok(())
    }

    /// Commits the open transaction, whose records were all acknowledged.
    pub(super) fn commit(&self) -> Result<(), TxnError> {
        if !self.transactional {
            return Ok(());
        }
        let mut attempt = 1;
        loop {
            match self.producer.commit_transaction(TXN_CALL_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && attempt < COMMIT_ATTEMPTS =>
                {
                    tracing::warn!(error = %e, attempt, "retrying a transaction commit");
                    attempt += 1;
                }
                Err(e) => return Err(self.classify(e)),
            }
        }
    }

    /// Abandons the open transaction: nothing of it becomes visible to
    /// `read_committed`. A producer in a fatal state cannot abort; the
    /// broker aborts its transaction when a new producer fences it or when
    /// the transaction times out.
    pub(super) fn abort(&self) {
        if !self.transactional || self.producer.client().fatal_error().is_some() {
            return;
        }
        if let Err(e) = self.producer.abort_transaction(TXN_CALL_TIMEOUT) {
            tracing::warn!(error = %e, "could not abort the transaction; the broker aborts it when it times out");
        }
    }

    /// Classifies an error of this producer: whether it was fenced, which
    /// librdkafka reports either on the call or as the producer's fatal
    /// error (every later call then fails with `Fatal`). Only a
    /// transactional producer can be fenced.
    pub(super) fn classify(&self, error: KafkaError) -> TxnError {
        let fenced = |code| {
            matches!(
                code,
                RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
            )
        };
        if !self.transactional {
            return TxnError::Failed(error);
        }
        let fatal = self.producer.client().fatal_error().map(|(code, _)| code);
        if error.rdkafka_error_code().is_some_and(fenced) || fatal.is_some_and(fenced) {
            TxnError::Fenced(error)
        } else {
            TxnError::Failed(error)
        }
    }
}

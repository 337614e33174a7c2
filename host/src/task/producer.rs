//! How a task produces. Most tasks share their pipeline's idempotent
//! producer. A task whose output feeds another step gets a transactional
//! producer of its own: its outputs to the repartition topic, its changelog
//! records and its checkpoint commit in one Kafka transaction, so a batch
//! replayed after a crash never reaches the next step twice (the next step
//! reads `read_committed`) and the next step's state stays exact. The
//! transactional id is stable per task, so a restarted or moved task fences
//! the producer of its previous incarnation.

use crate::kafka::KafkaSettings;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer as _};
use std::time::Duration;

/// How long transaction calls may take before the batch fails.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// producer of that id fenced.
    pub(super) fn transactional(kafka: &KafkaSettings, id: &str) -> Result<Self, KafkaError> {
        let producer: FutureProducer = kafka.transactional_producer(id).create()?;
        producer.init_transactions(TXN_TIMEOUT)?;
        Ok(Self {
            producer,
            transactional: true,
        })
    }

    pub(super) fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Starts a batch.
    pub(super) fn begin(&self) -> Result<(), KafkaError> {
        if self.transactional {
            self.producer.begin_transaction()?;
        }
        Ok(())
    }

    /// Ends a batch whose records were all acknowledged.
    pub(super) fn commit(&self) -> Result<(), KafkaError> {
        if self.transactional {
            self.producer.commit_transaction(TXN_TIMEOUT)?;
        }
        Ok(())
    }

    /// Abandons a batch: nothing of it becomes visible to `read_committed`.
    pub(super) fn abort(&self) {
        if self.transactional
            && let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT)
        {
            tracing::warn!(error = %e, "could not abort the transaction; it times out on the broker");
        }
    }
}

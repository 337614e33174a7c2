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

use crate::kafka::{Acks, KafkaSettings, Outgoing, Producer, Topic};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::Producer as _;
use std::collections::HashMap;
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
    /// The broker could not start transactions for the task's producer:
    /// its transaction coordinator is unavailable, which on a healthy
    /// cluster means the transaction state log cannot exist.
    #[error(
        "could not start transactions ({0}): the broker's transaction coordinator is not \
         available. Kafka keeps transactions in its internal topic __transaction_state, which \
         needs transaction.state.log.replication.factor brokers (3 by default) and \
         transaction.state.log.min.isr of them in sync: on a smaller cluster set both broker \
         settings to at most its number of brokers. Exactly-once and multi-step pipelines \
         need transactions; the task retries with backoff and nothing is lost meanwhile"
    )]
    NoCoordinator(KafkaError),
    /// Any other failure: what was open is aborted and replayed.
    #[error("{0}{advice}", advice = crate::kafka::advice(.0))]
    Failed(KafkaError),
}

/// A task's producer.
pub(super) struct TaskProducer {
    producer: Producer,
    transactional: bool,
    topics: TaskTopics,
}

/// The topics a task sends to, looked up once per producer (a handle
/// belongs to its producer's client).
pub(super) struct TaskTopics {
    /// The step's default output.
    pub(super) output: Topic,
    /// The step's changelog.
    pub(super) changelog: Topic,
    /// The pipeline's named outputs, by name.
    named: HashMap<String, Topic>,
    /// Where the dead-letter policy sends records, if the pipeline has it.
    dead_letter: Option<Topic>,
}

/// The topic names behind [`TaskTopics`].
pub(super) struct TopicNames<'a> {
    pub(super) output: &'a str,
    pub(super) changelog: &'a str,
    /// Output name and topic.
    pub(super) named: Vec<(&'a str, &'a str)>,
    pub(super) dead_letter: Option<&'a str>,
}

impl TaskTopics {
    fn look_up(producer: &Producer, names: &TopicNames<'_>) -> KafkaResult<Self> {
        Ok(Self {
            output: producer.topic(names.output)?,
            changelog: producer.topic(names.changelog)?,
            named: names
                .named
                .iter()
                .map(|(name, topic)| Ok(((*name).to_owned(), producer.topic(topic)?)))
                .collect::<KafkaResult<_>>()?,
            dead_letter: names.dead_letter.map(|t| producer.topic(t)).transpose()?,
        })
    }

    /// The topic of the named output `name`.
    pub(super) fn named(&self, name: &str) -> Option<&Topic> {
        self.named.get(name)
    }

    /// The dead-letter topic, for a pipeline whose error policy has one.
    pub(super) fn dead_letter(&self) -> Option<&Topic> {
        self.dead_letter.as_ref()
    }
}

/// The transactional id of the task of input `topic`/`partition` in
/// consumer group `group`: stable, so a restarted or moved task fences its
/// predecessor, and unique, so no two tasks fence each other. A topic name
/// has no `/`, so read from the right the three parts cannot be confused
/// however the group is spelled.
pub(super) fn transactional_id(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}/{topic}/{partition}")
}

/// The id eddy 0.1.0 gave the same task: `{group}-{topic}-{partition}`,
/// which two tasks could share (pipeline `a` on topic `b-c`, pipeline
/// `a-b` on topic `c`). A task fences it once as it starts, so a daemon
/// still running 0.1.0 during a rolling upgrade cannot commit a zombie
/// transaction for a partition a new daemon took.
pub(super) fn legacy_transactional_id(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}-{topic}-{partition}")
}

/// Why initialising a transactional producer failed: no coordinator (the
/// cluster cannot keep transactions), or what `classify` makes of it.
fn init_error(e: KafkaError, classify: impl FnOnce(KafkaError) -> TxnError) -> TxnError {
    let no_coordinator = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorLoadInProgress
        )
    );
    if no_coordinator {
        TxnError::NoCoordinator(e)
    } else {
        classify(e)
    }
}

impl TaskProducer {
    /// Fences every producer of transactional id `id` (its open
    /// transaction aborted) with a producer used for nothing else.
    pub(super) fn fence(
        kafka: &KafkaSettings,
        id: &str,
        timeout: Duration,
    ) -> Result<(), TxnError> {
        let producer = Producer::create(&kafka.transactional_producer(id, timeout))
            .map_err(TxnError::Failed)?;
        producer
            .rdkafka()
            .init_transactions(TXN_CALL_TIMEOUT)
            .map_err(|e| init_error(e, TxnError::Failed))
    }

    /// The pipeline's shared idempotent producer.
    pub(super) fn shared(producer: &Producer, topics: &TopicNames<'_>) -> Result<Self, TxnError> {
        Ok(Self {
            topics: TaskTopics::look_up(producer, topics).map_err(TxnError::Failed)?,
            producer: producer.clone(),
            transactional: false,
        })
    }

    /// A transactional producer for the task `id`, with any previous
    /// producer of that id fenced and its open transaction aborted.
    pub(super) fn transactional(
        kafka: &KafkaSettings,
        id: &str,
        timeout: Duration,
        topics: &TopicNames<'_>,
    ) -> Result<Self, TxnError> {
        let producer = Producer::create(&kafka.transactional_producer(id, timeout))
            .map_err(TxnError::Failed)?;
        let this = Self {
            topics: TaskTopics::look_up(&producer, topics).map_err(TxnError::Failed)?,
            producer,
            transactional: true,
        };
        this.producer
            .rdkafka()
            .init_transactions(TXN_CALL_TIMEOUT)
            .map_err(|e| init_error(e, |e| this.classify(e)))?;
        Ok(this)
    }

    /// Whether each commit is a Kafka transaction.
    pub(super) fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// The topics this producer sends to.
    pub(super) fn topics(&self) -> &TaskTopics {
        &self.topics
    }

    /// Queues `record`, counted in `acks`; waits while the queue is full.
    pub(super) fn send(&self, record: Outgoing<'_>, acks: &Acks) -> KafkaResult<()> {
        self.producer.send(record, acks)
    }

    /// Opens a transaction.
    pub(super) fn begin(&self) -> Result<(), TxnError> {
        if self.transactional {
            self.producer
                .rdkafka()
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
            match self.producer.rdkafka().commit_transaction(TXN_CALL_TIMEOUT) {
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
        if !self.transactional || self.producer.rdkafka().client().fatal_error().is_some() {
            return;
        }
        if let Err(e) = self.producer.rdkafka().abort_transaction(TXN_CALL_TIMEOUT) {
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
        let fatal = self
            .producer
            .rdkafka()
            .client()
            .fatal_error()
            .map(|(code, _)| code);
        if error.rdkafka_error_code().is_some_and(fenced) || fatal.is_some_and(fenced) {
            TxnError::Fenced(error)
        } else {
            TxnError::Failed(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_ids_of_different_tasks_differ() {
        // Pipeline `a` on topic `b-c` and pipeline `a-b` on topic `c`.
        let (one, other) = (("eddy.a", "b-c", 0), ("eddy.a-b", "c", 0));
        assert_eq!(
            legacy_transactional_id(one.0, one.1, one.2),
            legacy_transactional_id(other.0, other.1, other.2),
            "0.1.0's ids collided"
        );
        assert_ne!(
            transactional_id(one.0, one.1, one.2),
            transactional_id(other.0, other.1, other.2)
        );
        assert_ne!(
            transactional_id("eddy.a", "t", 1),
            transactional_id("eddy.a", "t", 11)
        );
    }
}

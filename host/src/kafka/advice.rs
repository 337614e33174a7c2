//! What a broker's refusal means for the operator. Kafka answers a
//! misconfiguration with an error code ("not enough in-sync replicas"); the
//! fix is a setting on the broker, the topic or the pipeline, named here so
//! that the task's error says what to change.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// The setting to change for `error`, as a sentence to append to it
/// (starting with "; "), or empty when eddy has nothing to add.
pub fn advice(error: &KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::NotEnoughReplicas | RDKafkaErrorCode::NotEnoughReplicasAfterAppend,
        ) => {
            "; eddy produces with acks=all, and the topic's min.insync.replicas is more than \
             the replicas now in sync: bring the replicas back, or set min.insync.replicas \
             (on the topic, or the broker's default) to at most the topic's replication factor. \
             Nothing is committed meanwhile, so nothing is lost"
        }
        Some(RDKafkaErrorCode::InvalidTransactionTimeout) => {
            "; the pipeline's transaction timeout is longer than the broker allows \
             (transaction.max.timeout.ms, 15 minutes by default): re-create the pipeline with \
             a shorter --transaction-timeout, or raise the broker setting"
        }
        Some(RDKafkaErrorCode::InvalidTimestamp) => {
            "; the broker refuses records timestamped too far from its own clock \
             (log.message.timestamp.after.max.ms, one hour by default, and \
             log.message.timestamp.before.max.ms). Records eddy writes carry their input's \
             timestamp, except the outputs of wall-clock timers and the records of a registry \
             topic not created by eddy, which carry this daemon's clock: if that is wrong, set \
             it right (NTP); if the input's timestamps are, give the written topic the limits \
             its input has. Nothing is committed meanwhile, so nothing is lost"
        }
        Some(RDKafkaErrorCode::PolicyViolation) => {
            "; the cluster's topic policy refused the request: ask its operators which \
             topic settings it allows"
        }
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed,
        ) => {
            "; the principal eddy authenticates as (the [kafka.sasl] username, or its \
             certificate's) lacks an ACL: it needs Read on input topics, Write on output \
             topics, and All on the topics, groups and transactional ids that start with \
             the group prefix (docs/security.md, \"ACLs\")"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_setting_and_others_add_nothing() {
        let replicas = KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas);
        assert!(advice(&replicas).contains("min.insync.replicas"));
        let clock = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTimestamp);
        assert!(advice(&clock).contains("clock"));
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTransactionTimeout);
        assert!(advice(&timeout).contains("transaction.max.timeout.ms"));
        let acl = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert!(advice(&acl).contains("ACL"));
        assert_eq!(
            advice(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
            )),
            ""
        );
    }
}

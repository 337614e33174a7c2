//! The control plane's messages to and from the pipeline layer's own
//! types: requests are read into domain types (an unknown enum value is
//! refused here), views and answers written back as protobuf.

use crate::pipeline::{
    ErrorPolicy, Guarantee, LimitsRequest, PartitionStatus, PipelineSpec, PipelineState,
    PipelineView, SpecError, SpecRequest, StartFrom, StateAnswer, StateEntry, StateQuery,
    StateRead, StateScan, TopicPartition,
};
use eddy_proto::v1;
use std::time::Duration;

fn invalid(message: String) -> SpecError {
    SpecError(message)
}

/// A value the request left at its default (0, empty) means "not set".
fn set<T: Default + PartialEq>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A requested pipeline, as the pipeline layer checks it.
pub(super) fn spec_request(spec: v1::PipelineSpec) -> Result<SpecRequest, SpecError> {
    let start_from = match v1::StartPosition::try_from(spec.start_from) {
        Ok(v1::StartPosition::Unspecified | v1::StartPosition::Earliest) => StartFrom::Earliest,
        Ok(v1::StartPosition::Latest) => StartFrom::Latest,
        Err(_) => {
            return Err(invalid(format!(
                "unknown start position {}",
                spec.start_from
            )));
        }
    };
    let guarantee = match v1::Guarantee::try_from(spec.guarantee) {
        Ok(v1::Guarantee::Unspecified | v1::Guarantee::AtLeastOnce) => Guarantee::AtLeastOnce,
        Ok(v1::Guarantee::ExactlyOnce) => Guarantee::ExactlyOnce,
        Err(_) => return Err(invalid(format!("unknown guarantee {}", spec.guarantee))),
    };
    let error_policy = match v1::ErrorPolicy::try_from(spec.error_policy) {
        Ok(v1::ErrorPolicy::Unspecified | v1::ErrorPolicy::Fail) => ErrorPolicy::Fail,
        Ok(v1::ErrorPolicy::Skip) => ErrorPolicy::Skip,
        Ok(v1::ErrorPolicy::DeadLetter) => ErrorPolicy::DeadLetter,
        Err(_) => {
            return Err(invalid(format!(
                "unknown error policy {}",
                spec.error_policy
            )));
        }
    };
    let limits = spec.limits.unwrap_or_default();
    Ok(SpecRequest {
        name: spec.name,
        steps: spec.steps.into_iter().map(|s| s.module).collect(),
        inputs: spec.inputs,
        output: spec.output,
        named_outputs: spec.named_outputs.into_iter().collect(),
        config: spec.config.into_iter().collect(),
        start_from,
        guarantee,
        error_policy,
        limits: LimitsRequest {
            memory_bytes: set(limits.memory_bytes),
            call_timeout: set(limits.call_timeout_ms).map(Duration::from_millis),
            max_batch_records: set(limits.max_batch_records),
            batch_linger: set(limits.batch_linger_ms).map(Duration::from_millis),
            max_output_records: set(limits.max_output_records),
            max_output_bytes: set(limits.max_output_bytes),
        },
        commit_interval: set(spec.commit_interval_ms).map(Duration::from_millis),
        transaction_timeout: set(spec.transaction_timeout_ms).map(Duration::from_millis),
        standby_replicas: spec.standby_replicas,
        dead_letter_topic: (!spec.dead_letter_topic.is_empty()).then_some(spec.dead_letter_topic),
    })
}

/// A pipeline's spec as the API shows it.
pub(super) fn spec(spec: &PipelineSpec) -> v1::PipelineSpec {
    v1::PipelineSpec {
        name: spec.name.clone(),
        steps: spec
            .steps
            .iter()
            .map(|m| v1::Step { module: m.clone() })
            .collect(),
        inputs: spec.inputs.clone(),
        output: spec.output.clone(),
        named_outputs: spec.named_outputs.clone().into_iter().collect(),
        config: spec.config.clone().into_iter().collect(),
        start_from: match spec.start_from {
            StartFrom::Earliest => v1::StartPosition::Earliest,
            StartFrom::Latest => v1::StartPosition::Latest,
        } as i32,
        guarantee: match spec.guarantee {
            Guarantee::AtLeastOnce => v1::Guarantee::AtLeastOnce,
            Guarantee::ExactlyOnce => v1::Guarantee::ExactlyOnce,
        } as i32,
        error_policy: match spec.error_policy {
            ErrorPolicy::Fail => v1::ErrorPolicy::Fail,
            ErrorPolicy::Skip => v1::ErrorPolicy::Skip,
            ErrorPolicy::DeadLetter => v1::ErrorPolicy::DeadLetter,
        } as i32,
        limits: Some(v1::Limits {
            memory_bytes: spec.limits.memory_bytes,
            call_timeout_ms: millis(spec.limits.call_timeout),
            max_batch_records: spec.limits.max_batch_records,
            batch_linger_ms: millis(spec.limits.batch_linger),
            max_output_records: spec.limits.max_output_records,
            max_output_bytes: spec.limits.max_output_bytes,
        }),
        commit_interval_ms: millis(spec.commit_interval),
        transaction_timeout_ms: millis(spec.transaction_timeout),
        standby_replicas: spec.standby_replicas,
        dead_letter_topic: spec.dead_letter_topic.clone().unwrap_or_default(),
    }
}

/// A pipeline's view as the API shows it.
pub(super) fn pipeline(view: PipelineView) -> v1::Pipeline {
    v1::Pipeline {
        spec: Some(spec(&view.spec)),
        state: match view.state {
            PipelineState::Running => v1::PipelineState::Running,
            PipelineState::Paused => v1::PipelineState::Paused,
            PipelineState::Failed => v1::PipelineState::Failed,
        } as i32,
        partitions: view.partitions.into_iter().map(partition_status).collect(),
        error: view.error.unwrap_or_default(),
        created_at_ms: view.created_at_ms,
    }
}

fn partition_status(p: PartitionStatus) -> v1::PartitionStatus {
    let r = p.restore;
    let c = p.guest_calls;
    v1::PartitionStatus {
        topic: p.topic,
        partition: p.partition,
        committed_offset: p.committed_offset,
        high_watermark: p.high_watermark,
        lag: p.lag,
        records_in: p.records_in,
        records_out: p.records_out,
        last_error: p.last_error,
        assigned: p.assigned,
        step: p.step,
        restore: Some(v1::RestoreStatus {
            restoring: r.restoring,
            start_offset: r.start,
            end_offset: r.end,
            position: r.position,
            replayed: r.replayed,
            duration_ms: millis(r.duration),
        }),
        counters: p.counters.into_iter().collect(),
        retries: p.retries,
        next_retry_at_ms: p.next_retry_at_ms,
        guest_calls: Some(v1::GuestCalls {
            calls: c.calls,
            p50_us: c.p50_us,
            p99_us: c.p99_us,
            max_us: c.max_us,
        }),
        off_partition_keys: p.off_partition_keys,
    }
}

/// A state query, as the pipeline layer reads it.
pub(super) fn query(request: &v1::QueryStateRequest) -> Result<StateQuery, SpecError> {
    let read = match &request.query {
        Some(v1::query_state_request::Query::Key(key)) => StateRead::Key(key.clone()),
        Some(v1::query_state_request::Query::Scan(scan)) => StateRead::Scan(StateScan {
            prefix: scan.prefix.clone(),
            start_after: scan.start_after.clone(),
            limit: scan.limit,
        }),
        None => return Err(invalid("a state query needs a key or a scan".into())),
    };
    Ok(StateQuery {
        pipeline: request.pipeline.clone(),
        step: request.step,
        read,
    })
}

/// A partition as the API names it.
pub(super) fn partition((topic, partition): &TopicPartition) -> v1::StatePartition {
    v1::StatePartition {
        topic: topic.clone(),
        partition: *partition,
    }
}

/// An answer from this daemon's partitions, as the API shows it.
pub(super) fn answer(answer: StateAnswer) -> v1::QueryStateResponse {
    v1::QueryStateResponse {
        entries: answer.entries.into_iter().map(entry).collect(),
        more: answer.more,
        partitions_read: answer.partitions_read.iter().map(partition).collect(),
    }
}

fn entry(entry: StateEntry) -> v1::StateEntry {
    let (topic, partition) = entry.partition;
    v1::StateEntry {
        key: entry.key,
        value: entry.value,
        topic,
        partition,
    }
}

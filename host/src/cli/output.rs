//! How client verbs print: a table for people, JSON for scripts.

use super::args::Format;
use eddy_proto::v1;
use serde_json::{Value, json};

fn module_json(m: &v1::Module) -> Value {
    json!({
        "digest": m.digest,
        "size": m.size,
        "name": m.name,
        "world": m.world,
        "uploaded_at_ms": m.uploaded_at_ms,
    })
}

fn state_name(state: i32) -> &'static str {
    match v1::PipelineState::try_from(state) {
        Ok(v1::PipelineState::Running) => "running",
        Ok(v1::PipelineState::Paused) => "paused",
        Ok(v1::PipelineState::Failed) => "failed",
        _ => "unknown",
    }
}

fn delivery(spec: &v1::PipelineSpec) -> &'static str {
    match v1::Guarantee::try_from(spec.guarantee) {
        Ok(v1::Guarantee::ExactlyOnce) => "exactly-once",
        _ => "at-least-once",
    }
}

fn on_error(spec: &v1::PipelineSpec) -> &'static str {
    match v1::ErrorPolicy::try_from(spec.error_policy) {
        Ok(v1::ErrorPolicy::Skip) => "skip",
        Ok(v1::ErrorPolicy::DeadLetter) => "dead-letter",
        _ => "fail",
    }
}

fn pipeline_json(p: &v1::Pipeline) -> Value {
    let spec = p.spec.clone().unwrap_or_default();
    json!({
        "name": spec.name,
        "state": state_name(p.state),
        "error": p.error,
        "modules": spec.steps.iter().map(|s| s.module.clone()).collect::<Vec<_>>(),
        "inputs": spec.inputs,
        "output": spec.output,
        "named_outputs": spec.named_outputs,
        "config": spec.config,
        "delivery": delivery(&spec),
        "on_error": on_error(&spec),
        "commit_interval_ms": spec.commit_interval_ms,
        "transaction_timeout_ms": spec.transaction_timeout_ms,
        "standby_replicas": spec.standby_replicas,
        "created_at_ms": p.created_at_ms,
        "partitions": p.partitions.iter().map(|s| json!({
            "topic": s.topic,
            "partition": s.partition,
            "committed_offset": s.committed_offset,
            "high_watermark": s.high_watermark,
            "lag": s.lag,
            "records_in": s.records_in,
            "records_out": s.records_out,
            "last_error": s.last_error,
            "assigned": s.assigned,
            "step": s.step,
            "restore": s.restore.as_ref().map(|r| json!({
                "restoring": r.restoring,
                "start_offset": r.start_offset,
                "end_offset": r.end_offset,
                "position": r.position,
                "replayed": r.replayed,
                "duration_ms": r.duration_ms,
            })),
            "counters": s.counters,
            "retries": s.retries,
            "next_retry_at_ms": s.next_retry_at_ms,
            "guest_calls": s.guest_calls.as_ref().map(|c| json!({
                "calls": c.calls,
                "p50_us": c.p50_us,
                "p99_us": c.p99_us,
                "max_us": c.max_us,
            })),
            "off_partition_keys": s.off_partition_keys,
        })).collect::<Vec<_>>(),
    })
}

/// A call time for the partition table: microseconds under a
/// millisecond, milliseconds above.
fn call_time(micros: u64) -> String {
    if micros < 1_000 {
        format!("{micros}us")
    } else {
        format!("{:.1}ms", micros as f64 / 1e3)
    }
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

pub(super) fn print_daemon_info(info: &v1::DaemonInfo, format: Format) -> anyhow::Result<()> {
    let memory = info.memory.unwrap_or_default();
    let quotas = info.quotas.unwrap_or_default();
    if format == Format::Json {
        return print_json(&json!({
            "version": info.version,
            "brokers": info.brokers,
            "embedded_broker": info.embedded_broker,
            "world": info.world,
            "memory": {
                "resident_bytes": memory.resident_bytes,
                "state_budget_bytes": memory.state_budget_bytes,
                "state_cache_bytes": memory.state_cache_bytes,
                "state_write_buffer_bytes": memory.state_write_buffer_bytes,
                "state_table_reader_bytes": memory.state_table_reader_bytes,
                "state_stores": memory.state_stores,
                "native_heap_used_bytes": memory.native_heap_used_bytes,
                "native_heap_free_bytes": memory.native_heap_free_bytes,
                "guest_worker_resident_bytes": memory.guest_worker_resident_bytes,
            },
            "quotas": {
                "tasks_running": quotas.tasks_running,
                "max_tasks": quotas.max_tasks,
                "max_pipeline_tasks": quotas.max_pipeline_tasks,
                "modules_stored": quotas.modules_stored,
                "max_modules": quotas.max_modules,
                "module_store_bytes": quotas.module_store_bytes,
                "max_module_store_bytes": quotas.max_module_store_bytes,
                "pipelines": quotas.pipelines,
                "max_pipelines": quotas.max_pipelines,
            },
        }));
    }
    let embedded = if info.embedded_broker {
        " (embedded)"
    } else {
        ""
    };
    println!("version   {} ({})", info.version, info.world);
    println!("brokers   {}{embedded}", info.brokers);
    println!("resident  {}", mib(memory.resident_bytes));
    if memory.guest_worker_resident_bytes > 0 {
        println!(
            "worker    {} resident (the guest worker: guests that failed a call)",
            mib(memory.guest_worker_resident_bytes)
        );
    }
    println!(
        "state     {} of {} in the block cache (write buffers {}), table readers {}, {} store(s)",
        mib(memory.state_cache_bytes),
        mib(memory.state_budget_bytes),
        mib(memory.state_write_buffer_bytes),
        mib(memory.state_table_reader_bytes),
        memory.state_stores,
    );
    println!(
        "C heap    {} in use, {} free (glibc: RocksDB, librdkafka)",
        mib(memory.native_heap_used_bytes),
        mib(memory.native_heap_free_bytes),
    );
    println!(
        "tasks     {} of {} (at most {} per pipeline)",
        quotas.tasks_running, quotas.max_tasks, quotas.max_pipeline_tasks
    );
    println!(
        "modules   {} of {}, {} of {}",
        quotas.modules_stored,
        quotas.max_modules,
        mib(quotas.module_store_bytes),
        mib(quotas.max_module_store_bytes)
    );
    println!("pipelines {} of {}", quotas.pipelines, quotas.max_pipelines);
    Ok(())
}

pub(super) fn print_module(m: &v1::Module, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&module_json(m)),
        Format::Text => {
            println!("{}", m.digest);
            Ok(())
        }
    }
}

pub(super) fn print_modules(modules: &[v1::Module], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&Value::Array(modules.iter().map(module_json).collect())),
        Format::Text => {
            println!("{:<72} {:>10}  NAME", "DIGEST", "SIZE");
            for m in modules {
                println!("{:<72} {:>10}  {}", m.digest, m.size, m.name);
            }
            Ok(())
        }
    }
}

pub(super) fn print_pipeline(p: &v1::Pipeline, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(&pipeline_json(p));
    }
    let spec = p.spec.clone().unwrap_or_default();
    println!("pipeline  {}", spec.name);
    println!("state     {}", state_name(p.state));
    if !p.error.is_empty() {
        println!("error     {}", p.error);
    }
    for step in &spec.steps {
        println!("module    {}", step.module);
    }
    println!("inputs    {}", spec.inputs.join(", "));
    println!("output    {}", spec.output);
    for (name, topic) in &spec.named_outputs {
        println!("output    {name} -> {topic}");
    }
    println!(
        "delivery  {}, commit every {}",
        delivery(&spec),
        match spec.commit_interval_ms {
            0 => "batch".to_owned(),
            ms => format!("{ms}ms"),
        }
    );
    println!("on error  {}", on_error(&spec));
    if !p.partitions.is_empty() {
        println!(
            "\n{:>4} {:<28} {:>10} {:>10} {:>8} {:>10} {:>10} {:>12} {:>9}  NOTES",
            "STEP", "PARTITION", "COMMITTED", "END", "LAG", "IN", "OUT", "RESTORED", "CALL P99"
        );
    }
    for s in &p.partitions {
        let restore = s.restore.unwrap_or_default();
        let restored = if restore.restoring {
            format!(
                "{}/{}",
                restore.position - restore.start_offset,
                restore.end_offset - restore.start_offset
            )
        } else {
            restore.replayed.to_string()
        };
        let mut notes: Vec<String> = s.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if restore.restoring {
            notes.push("restoring".into());
        }
        if s.retries > 0 {
            notes.push(retry_note(s.retries, s.next_retry_at_ms));
        }
        if s.off_partition_keys > 0 {
            notes.push(format!("off-partition keys={}", s.off_partition_keys));
        }
        if !s.last_error.is_empty() {
            notes.push(format!("error: {}", s.last_error));
        }
        let call_p99 = match s.guest_calls {
            Some(c) if c.calls > 0 => call_time(c.p99_us),
            _ => "-".to_owned(),
        };
        println!(
            "{:>4} {:<28} {:>10} {:>10} {:>8} {:>10} {:>10} {:>12} {:>9}  {}",
            s.step,
            format!("{}/{}", s.topic, s.partition),
            s.committed_offset,
            s.high_watermark,
            s.lag,
            s.records_in,
            s.records_out,
            restored,
            call_p99,
            notes.join("; ")
        );
    }
    Ok(())
}

pub(super) fn print_pipelines(pipelines: &[v1::Pipeline], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&Value::Array(pipelines.iter().map(pipeline_json).collect())),
        Format::Text => {
            println!(
                "{:<24} {:<8} {:>8}  INPUTS -> OUTPUT",
                "NAME", "STATE", "LAG"
            );
            for p in pipelines {
                let spec = p.spec.clone().unwrap_or_default();
                let lag: i64 = p.partitions.iter().map(|s| s.lag.max(0)).sum();
                println!(
                    "{:<24} {:<8} {:>8}  {} -> {}",
                    spec.name,
                    state_name(p.state),
                    lag,
                    spec.inputs.join(","),
                    spec.output
                );
            }
            Ok(())
        }
    }
}

fn entry_json(e: &v1::StateEntry) -> Value {
    json!({
        "key": String::from_utf8_lossy(&e.key),
        "value": String::from_utf8_lossy(&e.value),
        "value_hex": hex::encode(&e.value),
        "topic": e.topic,
        "partition": e.partition,
    })
}

/// Prints state entries: the value alone for a lookup, KEY<TAB>VALUE for a
/// scan (values that are not UTF-8 are printed in hex).
pub(super) fn print_entries(
    response: &v1::QueryStateResponse,
    single: bool,
    format: Format,
) -> anyhow::Result<()> {
    let shown = |bytes: &[u8]| match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => format!("0x{}", hex::encode(bytes)),
    };
    match format {
        Format::Json if single => match response.entries.first() {
            Some(e) => print_json(&entry_json(e)),
            None => Ok(()),
        },
        Format::Json => print_json(&json!({
            "entries": response.entries.iter().map(entry_json).collect::<Vec<_>>(),
            "more": response.more,
        })),
        Format::Text => {
            for e in &response.entries {
                if single {
                    println!("{}", shown(&e.value));
                } else {
                    println!("{}\t{}", shown(&e.key), shown(&e.value));
                }
            }
            if response.more {
                eprintln!("(more entries: use --start-after with the last key)");
            }
            Ok(())
        }
    }
}

/// "failed 3 times, retry in 4s": when a failed task restarts next.
fn retry_note(retries: u32, next_retry_at_ms: i64) -> String {
    let times = if retries == 1 { "once" } else { "times" };
    let count = if retries == 1 {
        String::new()
    } else {
        format!("{retries} ")
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    if next_retry_at_ms <= 0 {
        format!("failed {count}{times}, restarting")
    } else {
        let secs = (next_retry_at_ms - now).max(0).div_euclid(1000);
        format!("failed {count}{times}, retry in {secs}s")
    }
}

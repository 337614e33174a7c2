//! How client verbs print: a table for people, JSON for scripts.

use super::Format;
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
        })).collect::<Vec<_>>(),
    })
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
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
    if !p.partitions.is_empty() {
        println!(
            "\n{:<24} {:>10} {:>10} {:>8} {:>10} {:>10}  ERROR",
            "PARTITION", "COMMITTED", "END", "LAG", "IN", "OUT"
        );
    }
    for s in &p.partitions {
        println!(
            "{:<24} {:>10} {:>10} {:>8} {:>10} {:>10}  {}",
            format!("{}/{}", s.topic, s.partition),
            s.committed_offset,
            s.high_watermark,
            s.lag,
            s.records_in,
            s.records_out,
            s.last_error
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

//! The gRPC control plane: uploads, specs, lifecycle, status codes, health
//! and reflection.

use super::setup;
use anyhow::Context as _;
use eddy_tests::{
    Broker, Daemon, Rec, block_on, consume, create_pipeline, plugin, produce, upload, v1, wait_for,
};
use std::time::Duration;
use tonic::Code;

fn spec(name: &str, module: &str, input: &str, output: &str) -> v1::PipelineSpec {
    v1::PipelineSpec {
        name: name.into(),
        steps: vec![v1::Step {
            module: module.into(),
        }],
        inputs: vec![input.into()],
        output: output.into(),
        ..Default::default()
    }
}

#[test]
fn bad_modules_are_rejected_with_invalid_argument_and_the_daemon_keeps_serving()
-> anyhow::Result<()> {
    let (_broker, daemon, dir) = setup(&[("in", 1), ("out", 1)])?;
    let garbage = upload(
        daemon.server(),
        "garbage.wasm",
        b"definitely not wasm".to_vec(),
    )
    .expect_err("garbage");
    assert_eq!(garbage.code(), Code::InvalidArgument);
    assert!(
        garbage.message().contains("not a WebAssembly binary"),
        "{}",
        garbage.message()
    );

    // The smallest valid core module: magic and version 1.
    let core = upload(daemon.server(), "core.wasm", b"\0asm\x01\0\0\0".to_vec()).expect_err("core");
    assert_eq!(core.code(), Code::InvalidArgument);
    assert!(
        core.message()
            .contains("core WebAssembly module, not a component"),
        "{}",
        core.message()
    );

    // A component with a cut-off body.
    let mut truncated = std::fs::read(plugin("uppercase"))?;
    truncated.truncate(truncated.len() / 2);
    let cut = upload(daemon.server(), "cut.wasm", truncated).expect_err("truncated");
    assert_eq!(cut.code(), Code::InvalidArgument);

    // Through the CLI, the message reaches the user.
    let file = dir.path().join("bad.wasm");
    std::fs::write(&file, b"\0asm\x01\0\0\0")?;
    let out = daemon.eddy(&["module", "push", file.to_str().unwrap_or_default()])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a component") && stderr.contains("wasm32-wasip2"),
        "{stderr}"
    );

    // Nothing bad was stored; a good module still uploads, idempotently.
    assert!(daemon.eddy_ok(&["module", "list", "-o", "json"])?.trim() == "[]");
    let good = upload(
        daemon.server(),
        "uppercase.wasm",
        std::fs::read(plugin("uppercase"))?,
    )?;
    assert!(good.digest.starts_with("sha256:"));
    assert_eq!(good.world, "eddy:processor/packed-processor@0.1.2");
    let typed = upload(
        daemon.server(),
        "typed_uppercase.wasm",
        std::fs::read(plugin("typed_uppercase"))?,
    )?;
    assert_eq!(typed.world, "eddy:processor/processor@0.1.2");
    let legacy = upload(
        daemon.server(),
        "packed_0_1_1.wasm",
        std::fs::read(plugin("packed_0_1_1"))?,
    )?;
    assert_eq!(legacy.world, "eddy:processor/packed-processor@0.1.1");
    let again = upload(
        daemon.server(),
        "uppercase.wasm",
        std::fs::read(plugin("uppercase"))?,
    )?;
    assert_eq!(again.digest, good.digest);
    assert!(daemon.eddy_ok(&["module", "list"])?.contains(&good.digest));
    Ok(())
}

#[test]
fn oversize_modules_get_resource_exhausted() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(
        broker.bootstrap(),
        dir.path(),
        &[],
        &[("EDDY_LIMITS__MAX_MODULE_BYTES", "10000")],
    )?;
    let err = upload(
        daemon.server(),
        "big.wasm",
        std::fs::read(plugin("uppercase"))?,
    )
    .expect_err("over the limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("10000"), "{}", err.message());
    Ok(())
}

/// An upload that opens and then sends nothing is cut off after the idle
/// timeout, with a code and a message that say so, and holds nothing: the
/// next upload goes through.
#[test]
fn a_stalled_upload_is_cut_off_after_the_idle_timeout() -> anyhow::Result<()> {
    use v1::upload_module_request::Part;
    let broker = Broker::start(&[])?;
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(
        broker.bootstrap(),
        dir.path(),
        &[],
        &[("EDDY_UPLOAD_IDLE_TIMEOUT", "2s")],
    )?;
    let server = daemon.server().to_owned();
    let err = block_on(async move {
        use tokio_stream::StreamExt as _;
        let mut client = v1::module_service_client::ModuleServiceClient::connect(server).await?;
        let metadata = v1::UploadModuleRequest {
            part: Some(Part::Metadata(v1::ModuleMetadata {
                name: "stalled.wasm".into(),
                size: 1000,
            })),
        };
        // The metadata, then nothing, with the stream left open.
        let stalled = tokio_stream::iter([metadata]).chain(tokio_stream::pending());
        // A client-side deadline far past the daemon's, so a daemon that
        // never cuts the upload off fails the test instead of hanging it.
        let answer = tokio::time::timeout(Duration::from_secs(60), client.upload_module(stalled))
            .await
            .map_err(|_| anyhow::anyhow!("the stalled upload was not cut off within 60 s"))?;
        anyhow::Ok(answer.expect_err("a stalled upload must fail"))
    })?;
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    assert!(
        err.message().contains("upload-idle-timeout"),
        "{}",
        err.message()
    );
    let module = upload(
        daemon.server(),
        "uppercase.wasm",
        std::fs::read(plugin("uppercase"))?,
    )?;
    assert!(module.digest.starts_with("sha256:"));
    Ok(())
}

/// A daemon asked to serve its control plane beyond loopback without
/// tokens refuses to start and says what to do, rather than hand anyone
/// who reaches the port the power to run code.
#[test]
fn a_control_plane_beyond_loopback_without_tokens_is_refused() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let dir = tempfile::tempdir()?;
    let mut child = std::process::Command::new(eddy_tests::eddy_bin())
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--brokers",
            broker.bootstrap(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let exited = wait_for("the daemon to refuse", Duration::from_secs(30), || {
        Ok(child.try_wait()?)
    });
    if exited.is_err() {
        child.kill()?;
    }
    let status = exited?;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut stderr)?;
    assert!(!status.success(), "it served: {stderr}");
    assert!(
        stderr.contains("without tokens") && stderr.contains("--anonymous-control-plane"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn pipeline_errors_use_canonical_codes() -> anyhow::Result<()> {
    let (_broker, daemon, _dir) = setup(&[("in", 1), ("out", 1)])?;
    let module = upload(
        daemon.server(),
        "u.wasm",
        std::fs::read(plugin("uppercase"))?,
    )?
    .digest;

    let missing = daemon.pipeline("nope").expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("nope"));

    let bad_specs = [
        (spec("Bad Name", &module, "in", "out"), "name"),
        (spec("p", "sha256:0000000000", "in", "out"), "not uploaded"),
        (
            spec("p", "builtin:shout", "in", "out"),
            "the builtins are builtin:uppercase",
        ),
        (spec("p", &module, "no-such-topic", "out"), "does not exist"),
        (spec("p", &module, "in", "no-such-output"), "does not exist"),
        (
            spec("p", &module, "in", "in"),
            "both an input and an output",
        ),
        (
            v1::PipelineSpec {
                limits: Some(v1::Limits {
                    memory_bytes: 1 << 40,
                    ..Default::default()
                }),
                ..spec("p", &module, "in", "out")
            },
            "ceiling",
        ),
        (
            v1::PipelineSpec {
                guarantee: v1::Guarantee::ExactlyOnce as i32,
                commit_interval_ms: 40_000,
                ..spec("p", &module, "in", "out")
            },
            "at most half the transaction-timeout",
        ),
        (
            v1::PipelineSpec {
                transaction_timeout_ms: 3_600_000,
                ..spec("p", &module, "in", "out")
            },
            "transaction-timeout must be between",
        ),
    ];
    for (bad, expected) in bad_specs {
        let err = create_pipeline(daemon.server(), bad).expect_err("bad spec");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains(expected),
            "{expected}: {}",
            err.message()
        );
    }

    create_pipeline(daemon.server(), spec("p", &module[..20], "in", "out"))?;
    let duplicate =
        create_pipeline(daemon.server(), spec("p", &module, "in", "out")).expect_err("duplicate");
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    for verb in ["pause", "resume", "delete", "get"] {
        let out = daemon.eddy(&["pipeline", verb, "ghost"])?;
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("NotFound"),
            "{verb}"
        );
    }
    Ok(())
}

#[test]
fn pause_resume_and_delete() -> anyhow::Result<()> {
    let (broker, daemon, _dir) = setup(&[("in", 2), ("out", 2)])?;
    daemon.deploy("shout", "uppercase", "in", "out", &[])?;
    produce(broker.bootstrap(), "in", &[Rec::value("one")])?;
    consume(
        broker.bootstrap(),
        "out",
        1,
        Duration::from_secs(60),
        Duration::ZERO,
    )?;

    daemon.eddy_ok(&["pipeline", "pause", "shout"])?;
    let paused = daemon.pipeline("shout")?;
    assert_eq!(paused.state, v1::PipelineState::Paused as i32);
    produce(broker.bootstrap(), "in", &[Rec::value("two")])?;
    let out = consume(
        broker.bootstrap(),
        "out",
        2,
        Duration::from_secs(3),
        Duration::ZERO,
    )?;
    assert_eq!(out.len(), 1, "a paused pipeline processes nothing");

    daemon.eddy_ok(&["pipeline", "resume", "shout"])?;
    let out = consume(
        broker.bootstrap(),
        "out",
        2,
        Duration::from_secs(60),
        Duration::from_secs(1),
    )?;
    let mut values: Vec<String> = out.iter().filter_map(Rec::text).collect();
    values.sort();
    assert_eq!(values, ["ONE", "TWO"]);

    let json: serde_json::Value =
        serde_json::from_str(&daemon.eddy_ok(&["pipeline", "get", "shout", "-o", "json"])?)?;
    assert_eq!(json["state"], "running");
    assert_eq!(json["partitions"].as_array().map(Vec::len), Some(2));

    daemon.eddy_ok(&["pipeline", "delete", "shout"])?;
    assert_eq!(
        daemon.pipeline("shout").expect_err("deleted").code(),
        Code::NotFound
    );
    assert!(!daemon.eddy_ok(&["pipeline", "list"])?.contains("shout"));
    Ok(())
}

#[test]
fn health_and_reflection_are_served() -> anyhow::Result<()> {
    let (_broker, daemon, _dir) = setup(&[])?;
    let server = daemon.server().to_owned();
    let (health, services) = eddy_tests::block_on(async move {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let channel = tonic::transport::Channel::from_shared(server)?
            .connect()
            .await?;
        let mut health = HealthClient::new(channel.clone());
        let status = health
            .check(HealthCheckRequest {
                service: "eddy.v1.PipelineService".into(),
            })
            .await?
            .into_inner()
            .status;
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner();
        let mut names = Vec::new();
        if let Some(response) = responses.message().await?
            && let Some(MessageResponse::ListServicesResponse(list)) = response.message_response
        {
            names = list.service.into_iter().map(|s| s.name).collect();
        }
        anyhow::Ok((status, names))
    })?;
    assert_eq!(
        health,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    for service in [
        "eddy.v1.PipelineService",
        "eddy.v1.ModuleService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == service),
            "{service} in {services:?}"
        );
    }
    Ok(())
}

#[test]
fn an_unreachable_broker_is_a_clear_error_and_the_daemon_keeps_serving() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Nothing listens on port 9 of loopback.
    let daemon = Daemon::start("127.0.0.1:9", dir.path(), &[], &[])?;
    let module = upload(
        daemon.server(),
        "u.wasm",
        std::fs::read(plugin("uppercase"))?,
    )?
    .digest;
    let err =
        create_pipeline(daemon.server(), spec("p", &module, "in", "out")).expect_err("no broker");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message()
            .contains("could not reach Kafka at 127.0.0.1:9"),
        "{}",
        err.message()
    );
    wait_for(
        "the daemon to keep answering",
        Duration::from_secs(5),
        || Ok(daemon.eddy_ok(&["module", "list"]).ok()),
    )?;
    // Without the registry it cannot say which pipelines exist, and says why.
    let listed = daemon.eddy(&["pipeline", "list"])?;
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(!listed.status.success(), "an empty list would be a lie");
    assert!(
        stderr.contains("pipeline registry") && stderr.contains("127.0.0.1:9"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_daemon_whose_broker_went_away_stops_promptly_on_sigterm() -> anyhow::Result<()> {
    let broker = Broker::start(&[("in", 2), ("out", 2)])?;
    let dir = tempfile::tempdir()?;
    let mut daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    daemon.deploy("p", "uppercase", "in", "out", &[])?;
    produce(
        broker.bootstrap(),
        "in",
        &[Rec::value("a"), Rec::value("b")],
    )?;
    let out = consume(
        broker.bootstrap(),
        "out",
        2,
        Duration::from_secs(30),
        Duration::ZERO,
    )?;
    assert_eq!(out.len(), 2, "the pipeline ran before the broker went");
    drop(broker);
    // Withdrawing from the registry and the tasks' last commits cannot reach
    // Kafka; the daemon says so and stops instead of waiting out the
    // producer's minute-long message timeout.
    let started = std::time::Instant::now();
    let status = daemon.terminate(Duration::from_secs(30))?;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopping took {:?}",
        started.elapsed()
    );
    Ok(())
}

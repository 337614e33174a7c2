//! Tenants that cannot reach each other: a pipeline must not reach eddy's
//! own topics nor fence another pipeline's transactions, and records
//! written to the registry by anything but a daemon must not steer the
//! daemons: the registry is a Kafka topic, and whoever can write to it is
//! not thereby trusted with every daemon's data directory.

use eddy_tests::{Broker, Daemon, Rec, consume, produce, read_all, sha256_hex, wait_for};
use std::path::Path;
use std::time::Duration;

#[test]
fn a_pipeline_may_not_read_or_write_kafkas_or_eddys_own_topics() -> anyhow::Result<()> {
    let broker = Broker::start(&[("in", 1), ("out", 1)])?;
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    let refused = [
        ("writes-the-registry", "in", "eddy.registry"),
        ("reads-offsets", "__consumer_offsets", "out"),
        ("reads-state", "eddy.other.step-0.changelog", "out"),
        ("feeds-a-step", "in", "eddy.other.step-1.repartition"),
    ];
    for (name, input, output) in refused {
        let err = daemon
            .deploy(name, "uppercase", input, output, &[])
            .expect_err("an internal topic must be refused");
        let message = err.to_string();
        assert!(
            message.contains("may not read or write") && message.contains("InvalidArgument"),
            "{name}: {message}"
        );
    }
    let listed = daemon.eddy_ok(&["pipeline", "list"])?;
    assert!(
        refused.iter().all(|(name, ..)| !listed.contains(name)),
        "nothing may be applied:\n{listed}"
    );
    Ok(())
}

/// What a daemon keeps in its data directory, which a forged record must
/// not touch.
fn kept(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut kept = Vec::new();
    for sub in ["daemon-id", "modules", "pipelines/keep.json", "state/keep"] {
        if dir.join(sub).exists() {
            kept.push(sub.to_owned());
        }
    }
    Ok(kept)
}

#[test]
fn forged_registry_records_are_ignored_and_logged() -> anyhow::Result<()> {
    let broker = Broker::start(&[("in", 1), ("out", 1)])?;
    let brokers = broker.bootstrap();
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(brokers, dir.path(), &[], &[])?;
    daemon.deploy("keep", "uppercase", "in", "out", &[])?;
    produce(brokers, "in", &[Rec::value("before")])?;
    consume(brokers, "out", 1, Duration::from_secs(60), Duration::ZERO)?;
    let before = kept(dir.path())?;
    assert_eq!(before.len(), 4, "the data directory holds {before:?}");
    let record = std::fs::read(dir.path().join("pipelines/keep.json"))?;

    // What someone with write access to the registry topic might write.
    let mut greedy: serde_json::Value = serde_json::from_slice(&record)?;
    greedy["spec"]["limits"]["memory-bytes"] = serde_json::json!(1u64 << 40);
    let mut snooping: serde_json::Value = serde_json::from_slice(&record)?;
    snooping["spec"]["name"] = serde_json::json!("snoop");
    snooping["spec"]["inputs"] = serde_json::json!(["eddy.keep.step-0.changelog"]);
    let malformed = [
        Rec::tombstone("pipeline/.."),
        Rec::value("1\n{}").keyed("module/../../daemon-id"),
        Rec::value("http://attacker.example/collect?").keyed("daemon/forged"),
    ];
    let specs = [
        Rec::value(serde_json::to_vec(&greedy)?).keyed("pipeline/keep"),
        Rec::value(serde_json::to_vec(&snooping)?).keyed("pipeline/snoop"),
    ];
    produce(brokers, "eddy.registry", &malformed)?;
    produce(brokers, "eddy.registry", &specs)?;

    wait_for(
        "the daemon to log every forged record as ignored",
        Duration::from_secs(30),
        || {
            let log = daemon.log();
            let records = log.matches("ignoring a registry record").count();
            let pipelines = log.matches("ignoring a pipeline record").count();
            Ok((records >= malformed.len() && pipelines >= specs.len()).then_some(()))
        },
    )?;
    let log = daemon.log();
    assert!(
        log.contains("registry records are not signed"),
        "a daemon without a cluster secret must say its registry is unauthenticated"
    );
    for why in [
        "pipeline/..",
        "module/../../daemon-id",
        "daemon/forged",
        "ceiling",
        "snoop",
    ] {
        assert!(log.contains(why), "the log does not say {why:?}:\n{log}");
    }
    assert_eq!(
        kept(dir.path())?,
        before,
        "the data directory lost something"
    );
    assert_eq!(
        std::fs::read(dir.path().join("pipelines/keep.json"))?,
        record,
        "the forged spec replaced the pipeline's"
    );
    let listed = daemon.eddy_ok(&["pipeline", "list"])?;
    assert!(
        listed.contains("keep") && !listed.contains("snoop"),
        "{listed}"
    );
    produce(brokers, "in", &[Rec::value("after")])?;
    let out = consume(brokers, "out", 2, Duration::from_secs(60), Duration::ZERO)?;
    let values: Vec<String> = out.iter().filter_map(Rec::text).collect();
    assert_eq!(values, ["BEFORE", "AFTER"], "the pipeline kept running");
    Ok(())
}

/// Pipeline `a` on topic `b-c` and pipeline `a-b` on topic `c`: under
/// eddy 0.1.0 their tasks shared a transactional id and fenced each other
/// forever. On Apache Kafka, whose transaction coordinator does the
/// fencing.
#[test]
fn pipelines_whose_names_and_topics_run_together_do_not_fence_each_other() -> anyhow::Result<()> {
    let broker = Broker::kafka(&[("b-c", 1), ("c", 1), ("out-1", 1), ("out-2", 1)], &[])?;
    let brokers = broker.bootstrap();
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(brokers, dir.path(), &[], &[])?;
    let exactly_once = ["--guarantee", "exactly-once"];
    daemon.deploy("a", "uppercase", "b-c", "out-1", &exactly_once)?;
    daemon.deploy("a-b", "uppercase", "c", "out-2", &exactly_once)?;
    let batch = |tag: &str| -> Vec<Rec> {
        (0..200)
            .map(|i| Rec::value(format!("{tag}-{i:03}")))
            .collect()
    };
    for round in 0..2 {
        produce(brokers, "b-c", &batch(&format!("one{round}")))?;
        produce(brokers, "c", &batch(&format!("two{round}")))?;
    }
    for output in ["out-1", "out-2"] {
        let out = consume(
            brokers,
            output,
            400,
            Duration::from_secs(90),
            Duration::from_secs(1),
        )?;
        assert_eq!(out.len(), 400, "{output}: {} of 400 out", out.len());
    }
    let log = daemon.log();
    assert!(
        !log.to_lowercase().contains("fenced"),
        "a task was fenced though no other had its partition:\n{log}"
    );
    Ok(())
}

/// Two daemons sharing a cluster secret (one from a file, one from the
/// environment) apply each other's records and ignore records written
/// without it, however well-formed.
#[test]
fn with_a_cluster_secret_only_records_signed_with_it_are_applied() -> anyhow::Result<()> {
    let broker = Broker::start(&[("in", 1), ("out", 1), ("elsewhere", 1)])?;
    let brokers = broker.bootstrap();
    let (dir_a, dir_b, secrets) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let secret = "5f1e0c2a9b8d7e6f5a4b3c2d1e0f9a8b";
    let secret_file = secrets.path().join("cluster-secret");
    std::fs::write(&secret_file, format!("{secret}\n"))?;
    let secret_path = secret_file.to_str().unwrap_or_default();
    let a = Daemon::start(
        brokers,
        dir_a.path(),
        &["--cluster-secret-file", secret_path],
        &[],
    )?;
    let b = Daemon::start(
        brokers,
        dir_b.path(),
        &[],
        &[("EDDY_CLUSTER_SECRET", secret)],
    )?;
    a.deploy("keep", "uppercase", "in", "out", &[])?;
    wait_for(
        "B to apply A's signed record",
        Duration::from_secs(30),
        || {
            Ok(b.eddy_ok(&["pipeline", "list"])?
                .contains("keep")
                .then_some(()))
        },
    )?;

    // Well-formed records of a pipeline reading `in` to `elsewhere`: one
    // unsigned, one with a signature made without the secret.
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir_a.path().join("pipelines/keep.json"))?)?;
    record["spec"]["output"] = serde_json::json!("elsewhere");
    record["spec"]["name"] = serde_json::json!("unsigned");
    let unsigned = Rec::value(serde_json::to_vec(&record)?).keyed("pipeline/unsigned");
    record["spec"]["name"] = serde_json::json!("missigned");
    let mut missigned = Rec::value(serde_json::to_vec(&record)?).keyed("pipeline/missigned");
    missigned
        .headers
        .push(("eddy-mac".into(), Some(vec![7; 32])));
    produce(brokers, "eddy.registry", &[unsigned, missigned])?;

    for (daemon, name) in [(&a, "A"), (&b, "B")] {
        wait_for(
            &format!("{name} to log both records as ignored"),
            Duration::from_secs(30),
            || {
                let log = daemon.log();
                Ok(
                    (log.contains("it is not signed") && log.contains("not this cluster's"))
                        .then_some(()),
                )
            },
        )?;
        let log = daemon.log();
        assert!(
            !log.contains("registry records are not signed"),
            "{name} warned of unsigned records though it has the secret"
        );
        assert!(!log.contains(secret), "{name} logged the secret");
        let listed = daemon.eddy_ok(&["pipeline", "list"])?;
        assert!(
            listed.contains("keep") && !listed.contains("signed"),
            "{name} lists:\n{listed}"
        );
    }
    assert!(
        read_all(brokers, "elsewhere")?.is_empty(),
        "a forged pipeline ran"
    );
    Ok(())
}

/// With tokens configured, a caller without one or with an unknown one is
/// UNAUTHENTICATED, and each role may do only its own: a reader reads, a
/// deployer deploys within its name prefix and topics. A state query that
/// claims to be forwarded by a daemon, without the cluster's proof, is
/// refused rather than answered from one daemon's partitions.
#[test]
fn the_control_plane_takes_only_known_tokens_each_within_its_role() -> anyhow::Result<()> {
    let broker = Broker::start(&[("team-a.in", 1), ("team-a.out", 1), ("other", 1)])?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("eddy.toml");
    std::fs::write(
        &config,
        format!(
            r#"
cluster-secret-file = "{secret}"

[[tokens]]
name = "ops"
role = "admin"
sha256 = "{admin}"

[[tokens]]
name = "team-a"
role = "deployer"
sha256 = "{deployer}"
pipeline-prefix = "team-a."
topics = ["team-a.*"]

[[tokens]]
name = "dashboard"
role = "reader"
sha256 = "{reader}"
"#,
            secret = dir.path().join("secret").display(),
            admin = sha256_hex("admin-token-0123456789"),
            deployer = sha256_hex("team-a-token-0123456789"),
            reader = sha256_hex("reader-token-0123456789"),
        ),
    )?;
    std::fs::write(dir.path().join("secret"), "a-cluster-secret-0123456789")?;
    let config = config.to_str().unwrap_or_default();
    let daemon = Daemon::start(broker.bootstrap(), dir.path(), &["--config", config], &[])?;
    let module = eddy_tests::plugin("uppercase");
    let module = module.to_str().unwrap_or_default();
    let eddy = |token: Option<&str>, args: &[&str]| -> anyhow::Result<(bool, String)> {
        let mut argv = args.to_vec();
        if let Some(token) = token {
            argv.extend(["--token", token]);
        }
        let out = daemon.eddy(&argv)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let create = |name: &'static str, input: &'static str| {
        vec![
            "pipeline",
            "create",
            name,
            "--module",
            module,
            "--input",
            input,
            "--output",
            "team-a.out",
        ]
    };

    for token in [None, Some("not-a-token")] {
        let (ok, err) = eddy(token, &["pipeline", "list"])?;
        assert!(!ok && err.contains("Unauthenticated"), "{token:?}: {err}");
    }
    let (ok, err) = eddy(Some("reader-token-0123456789"), &["pipeline", "list"])?;
    assert!(ok, "{err}");
    let (ok, err) = eddy(
        Some("reader-token-0123456789"),
        &create("team-a.wc", "team-a.in"),
    )?;
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    let (ok, err) = eddy(
        Some("team-a-token-0123456789"),
        &create("team-b.wc", "team-a.in"),
    )?;
    assert!(!ok && err.contains("team-a."), "{err}");
    let (ok, err) = eddy(
        Some("team-a-token-0123456789"),
        &create("team-a.wc", "other"),
    )?;
    assert!(!ok && err.contains("`other`"), "{err}");
    let (ok, err) = eddy(
        Some("team-a-token-0123456789"),
        &create("team-a.wc", "team-a.in"),
    )?;
    assert!(ok, "{err}");
    let (listed, _) = eddy(Some("admin-token-0123456789"), &["pipeline", "list"])?;
    assert!(listed);
    let (ok, err) = eddy(
        Some("reader-token-0123456789"),
        &["pipeline", "delete", "team-a.wc"],
    )?;
    assert!(!ok && err.contains("PermissionDenied"), "{err}");

    // A query that says it was forwarded by a daemon, from a client.
    let server = daemon.server().to_owned();
    let forged = eddy_tests::block_on(async move {
        let mut client =
            eddy_tests::v1::pipeline_service_client::PipelineServiceClient::connect(server).await?;
        let mut request = tonic::Request::new(eddy_tests::v1::QueryStateRequest {
            pipeline: "team-a.wc".into(),
            step: None,
            query: Some(eddy_tests::v1::query_state_request::Query::Key(
                b"k".to_vec(),
            )),
        });
        let metadata = request.metadata_mut();
        metadata.insert("authorization", "Bearer reader-token-0123456789".parse()?);
        metadata.insert("eddy-forwarded", "1".parse()?);
        anyhow::Ok(client.query_state(request).await)
    })?;
    let err = forged.expect_err("a forged forwarded query must be refused");
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "{}",
        err.message()
    );
    Ok(())
}

/// Failed records go only where they are meant to: a topic that happens to
/// be called `<pipeline>.dlq`, made by someone else, is not adopted; a
/// named dead-letter topic is used as named; and a pipeline deleted and
/// created again keeps the dead-letter topic eddy made for it.
#[test]
fn a_dead_letter_topic_eddy_did_not_make_for_the_pipeline_is_not_adopted() -> anyhow::Result<()> {
    let broker = Broker::start(&[
        ("in", 1),
        ("out", 1),
        ("orders.dlq", 1),
        ("orders-failures", 1),
    ])?;
    let brokers = broker.bootstrap();
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(brokers, dir.path(), &[], &[])?;
    let letters = ["--on-error", "dead-letter", "--config", "how=error"];

    let err = daemon
        .deploy("orders", "trap", "in", "out", &letters)
        .expect_err("someone else's orders.dlq must not be adopted");
    assert!(
        err.to_string().contains("--dead-letter-topic"),
        "the error says what to do: {err}"
    );
    let named = [&letters[..], &["--dead-letter-topic", "orders-failures"]].concat();
    daemon.deploy("orders", "trap", "in", "out", &named)?;
    produce(
        brokers,
        "in",
        &[Rec::value("ok-1"), Rec::value("boom-2"), Rec::value("ok-3")],
    )?;
    let failed = consume(
        brokers,
        "orders-failures",
        1,
        Duration::from_secs(60),
        Duration::from_secs(1),
    )?;
    assert_eq!(
        failed.iter().filter_map(Rec::text).collect::<Vec<_>>(),
        ["boom-2"]
    );
    assert!(
        read_all(brokers, "orders.dlq")?.is_empty(),
        "nothing may land in the topic eddy did not adopt"
    );

    // The default topic, made by eddy, survives delete and create.
    daemon.deploy("returns", "trap", "in", "out", &letters)?;
    daemon.eddy_ok(&["pipeline", "delete", "returns"])?;
    daemon.deploy("returns", "trap", "in", "out", &letters)?;
    let again = consume(
        brokers,
        "returns.dlq",
        1,
        Duration::from_secs(60),
        Duration::from_secs(1),
    )?;
    assert!(
        again.iter().filter_map(Rec::text).all(|v| v == "boom-2"),
        "{again:?}"
    );
    Ok(())
}

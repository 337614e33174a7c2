//! A daemon reaches Apache Kafka over SASL_SSL with SCRAM-SHA-512 and a
//! certificate from a CA of the cluster's own, for everything it does:
//! the registry, consumer groups, transactions, changelogs and the
//! repartition topic; `eddy consume` reaches it with the same file. Wrong
//! credentials or an untrusted certificate are named, with what to change.
//! The same listener takes OAUTHBEARER tokens that the daemon fetches from
//! an OpenID Connect token endpoint with client credentials.
//!
//! The broker also has a plaintext listener, which only the test's own
//! helpers use to feed and read topics; the daemon is given the SASL_SSL
//! address alone, and Kafka advertises to a client the listener it came
//! in on.

use eddy_tests::{
    Broker, BrokerKind, BrokerOptions, Daemon, IdentityProvider, Rec, consume, produce,
    sorted_texts, wait_for,
};
use std::collections::BTreeMap;
use std::time::Duration;

fn secure_kafka(topics: &[(&str, i32)]) -> anyhow::Result<Broker> {
    Broker::start_on(
        BrokerKind::Kafka,
        topics,
        &BrokerOptions {
            secure: true,
            ..BrokerOptions::default()
        },
    )
}

#[test]
fn a_daemon_runs_exactly_once_and_stateful_pipelines_over_sasl_ssl_with_scram() -> anyhow::Result<()>
{
    let broker = secure_kafka(&[("lines", 2), ("shouted", 2), ("counts", 2)])?;
    let secured = broker.secured()?;
    let config = secured.config.to_string_lossy().into_owned();
    let dir = tempfile::tempdir()?;
    // The configuration file names the SASL_SSL listener as `brokers`.
    let daemon = Daemon::start(&secured.bootstrap, dir.path(), &["--config", &config], &[])?;
    daemon.deploy(
        "shout",
        "uppercase",
        "lines",
        "shouted",
        &["--guarantee", "exactly-once"],
    )?;
    daemon.deploy_steps(
        "wc",
        &["split-words", "count"],
        "lines",
        "counts",
        &["--guarantee", "exactly-once"],
    )?;
    let lines = ["a b", "b c", "c a b", "d"];
    let records: Vec<Rec> = (0..50)
        .map(|i| Rec::value(lines[i % lines.len()]).keyed(format!("k{i}")))
        .collect();
    produce(broker.bootstrap(), "lines", &records)?;

    let shouted = consume(
        broker.bootstrap(),
        "shouted",
        50,
        Duration::from_secs(120),
        Duration::from_secs(1),
    )?;
    let expected: Vec<String> = sorted_texts(&records)
        .iter()
        .map(|v| v.to_uppercase())
        .collect();
    assert_eq!(
        sorted_texts(&shouted),
        expected,
        "every line upper-cased once"
    );

    // The counts' last value per word, against a reference computed here.
    let mut reference: BTreeMap<String, u64> = BTreeMap::new();
    for record in &records {
        for word in record.text().unwrap_or_default().split_whitespace() {
            *reference.entry(word.to_owned()).or_default() += 1;
        }
    }
    let reference: BTreeMap<String, String> = reference
        .into_iter()
        .map(|(word, n)| (word, n.to_string()))
        .collect();
    let counted = wait_for(
        "the counts to reach the reference",
        Duration::from_secs(120),
        || {
            let mut last = BTreeMap::new();
            for record in eddy_tests::read_all(broker.bootstrap(), "counts")? {
                if let (Some(word), Some(count)) = (record.key_text(), record.text()) {
                    last.insert(word, count);
                }
            }
            Ok((last == reference).then_some(last))
        },
    )?;
    assert_eq!(counted, reference);

    // `eddy consume` reaches the listener with the daemon's file.
    let out = daemon.eddy(&[
        "consume",
        "shouted",
        "--config",
        &config,
        "--from-beginning",
        "--count",
        "50",
        "--idle-timeout",
        "60s",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eddy consume failed: {stderr}");
    let consumed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(consumed.lines().count(), 50, "{consumed}");
    assert!(consumed.contains("C A B"), "{consumed}");
    Ok(())
}

/// Writes `text` to `file` in `dir`; returns its path.
fn write(dir: &std::path::Path, file: &str, text: &str) -> anyhow::Result<String> {
    let path = dir.join(file);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// Waits until `daemon`, asked to create a pipeline, answers with `expect`
/// (once it has tried to reach Kafka and can say why it could not).
fn refusal(daemon: &Daemon, expect: &str) -> anyhow::Result<String> {
    wait_for(
        &format!("the daemon to say `{expect}`"),
        Duration::from_secs(90),
        || {
            let out = daemon.eddy(&[
                "pipeline",
                "create",
                "other",
                "--module",
                &eddy_tests::plugin("uppercase").to_string_lossy(),
                "--input",
                "lines",
                "--output",
                "shouted",
            ])?;
            anyhow::ensure!(
                !out.status.success(),
                "a daemon that cannot reach Kafka created a pipeline"
            );
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            Ok(stderr.contains(expect).then_some(stderr))
        },
    )
}

#[test]
fn refused_credentials_and_an_untrusted_certificate_are_named_and_nothing_is_lost()
-> anyhow::Result<()> {
    let broker = secure_kafka(&[("lines", 2), ("shouted", 2)])?;
    let secured = broker.secured()?;
    let good = secured.config.to_string_lossy().into_owned();
    let files = tempfile::tempdir()?;
    let ca = secured.dir.join("ca.pem");
    let wrong_password = write(files.path(), "wrong-password", "not-the-password\n")?;
    let config = |sasl_password: &str, tls: &str| {
        format!(
            "brokers = \"{}\"\n\n[kafka]\nsecurity-protocol = \"sasl-ssl\"\n\n[kafka.sasl]\n\
             mechanism = \"SCRAM-SHA-512\"\nusername = \"eddy\"\npassword-file = \
             \"{sasl_password}\"\n{tls}",
            secured.bootstrap
        )
    };
    let refused = write(
        files.path(),
        "refused.toml",
        &config(
            &wrong_password,
            &format!("\n[kafka.tls]\nca-file = \"{}\"\n", ca.display()),
        ),
    )?;
    // Without the cluster's CA, the system's CAs do not trust the broker.
    let password = secured.dir.join("password");
    let untrusted = write(
        files.path(),
        "untrusted.toml",
        &config(&password.to_string_lossy(), ""),
    )?;
    nothing_lost_while_refused(
        &broker,
        &secured.bootstrap,
        &good,
        &[
            (
                refused.as_str(),
                "refused eddy's credentials",
                "[kafka.sasl]",
            ),
            (untrusted.as_str(), "TLS handshake failed", "ca-file"),
        ],
        |_| Ok(()),
    )
}

/// Runs exactly-once `uppercase` from `lines` to `shouted` under `good`,
/// then restarts the daemon under each of `refused` (a configuration, what
/// its refusal says, and what the advice names) while records arrive: each
/// names the cause and keeps trying. Then, under `good` again, what arrived
/// meanwhile comes out, and nothing twice. `after_first` checks the first
/// daemon once its records are out.
fn nothing_lost_while_refused(
    broker: &Broker,
    bootstrap: &str,
    good: &str,
    refused: &[(&str, &str, &str)],
    after_first: impl FnOnce(&Daemon) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let batch = |from: usize| -> Vec<Rec> {
        (from..from + 20)
            .map(|i| Rec::value(format!("r{i:03}")).keyed(format!("k{i}")))
            .collect()
    };
    let data = tempfile::tempdir()?;
    let mut daemon = Daemon::start(bootstrap, data.path(), &["--config", good], &[])?;
    daemon.deploy(
        "shout",
        "uppercase",
        "lines",
        "shouted",
        &["--guarantee", "exactly-once"],
    )?;
    produce(broker.bootstrap(), "lines", &batch(0))?;
    consume(
        broker.bootstrap(),
        "shouted",
        20,
        Duration::from_secs(120),
        Duration::ZERO,
    )?;
    after_first(&daemon)?;
    daemon.terminate(Duration::from_secs(60))?;

    produce(broker.bootstrap(), "lines", &batch(20))?;
    for (config, expect, fix) in refused {
        let mut daemon = Daemon::start(bootstrap, data.path(), &["--config", config], &[])?;
        let answer = refusal(&daemon, expect)?;
        assert!(answer.contains(fix), "{answer}");
        assert!(daemon.is_running(), "the daemon gave up");
        assert!(
            daemon.log().contains(expect),
            "the log does not say `{expect}`:\n{}",
            daemon.log()
        );
        daemon.terminate(Duration::from_secs(60))?;
    }

    let _daemon = Daemon::start(bootstrap, data.path(), &["--config", good], &[])?;
    let out = consume(
        broker.bootstrap(),
        "shouted",
        40,
        Duration::from_secs(120),
        Duration::from_secs(2),
    )?;
    let expected: Vec<String> = (0..40).map(|i| format!("R{i:03}")).collect();
    assert_eq!(sorted_texts(&out), expected, "every record once");
    Ok(())
}

#[test]
fn oauthbearer_tokens_from_an_oidc_provider_carry_exactly_once_and_a_wrong_secret_is_named()
-> anyhow::Result<()> {
    let broker = secure_kafka(&[("lines", 2), ("shouted", 2)])?;
    let secured = broker.secured()?;
    let provider = IdentityProvider::start(
        "eddy-daemon",
        "client-s3cret",
        "eddy",
        Duration::from_secs(600),
    )?;
    let files = tempfile::tempdir()?;
    let ca = secured.dir.join("ca.pem");
    let config = |secret: &str| -> anyhow::Result<String> {
        let secret_file = write(
            files.path(),
            &format!("secret-{secret}"),
            &format!("{secret}\n"),
        )?;
        write(
            files.path(),
            &format!("{secret}.toml"),
            &format!(
                "brokers = \"{}\"\n\n[kafka]\nsecurity-protocol = \"sasl-ssl\"\n\n\
                 [kafka.sasl]\nmechanism = \"OAUTHBEARER\"\n\n[kafka.sasl.oidc]\n\
                 token-endpoint-url = \"{}\"\nclient-id = \"eddy-daemon\"\n\
                 client-secret-file = \"{secret_file}\"\nscope = \"kafka\"\n\n\
                 [kafka.tls]\nca-file = \"{}\"\n",
                secured.bootstrap,
                provider.url,
                ca.display()
            ),
        )
    };
    let good = config("client-s3cret")?;
    let wrong = config("guessed")?;
    nothing_lost_while_refused(
        &broker,
        &secured.bootstrap,
        &good,
        &[(
            wrong.as_str(),
            "could not get a token from the identity provider",
            "[kafka.sasl.oidc]",
        )],
        |daemon| {
            // Every token went to the configured client, for the configured
            // scope, and the secret was never printed.
            let grants = provider.grants();
            assert!(!grants.is_empty(), "no token was fetched");
            for grant in &grants {
                assert!(grant.granted, "a request was refused: {grant:?}");
                assert_eq!(grant.client_id, "eddy-daemon");
                assert_eq!(grant.scope.as_deref(), Some("kafka"));
            }
            assert!(!daemon.log().contains("client-s3cret"), "{}", daemon.log());
            Ok(())
        },
    )?;
    assert!(
        provider.grants().iter().any(|g| !g.granted),
        "the provider saw no refused request"
    );
    Ok(())
}

#[test]
fn a_kafka_table_that_cannot_work_stops_the_daemon_at_start_naming_the_key() -> anyhow::Result<()> {
    let files = tempfile::tempdir()?;
    let password = write(files.path(), "password", "pw")?;
    let both = format!(
        "[kafka]\nsecurity-protocol = \"sasl-plaintext\"\n[kafka.sasl]\nmechanism = \"PLAIN\"\n\
         username = \"eddy\"\npassword-file = \"{password}\"\n"
    );
    let cases = [
        (
            "[kafka]\nsecurity-protocol = \"sasl-ssl\"\n",
            "add a [kafka.sasl] table",
        ),
        // The environment's password and the file's contradict each other.
        (both.as_str(), "are both set"),
        (
            "[kafka.properties]\n\"isolation.level\" = \"read_uncommitted\"\n",
            "is set by eddy itself",
        ),
        (
            "[kafka.properties]\n\"socket.keepalive.enabled\" = \"true\"\n",
            "socket.keepalive.enabled",
        ),
        (
            "[kafka]\nsecurity-protocol = \"ssl\"\n[kafka.tls]\nca-file = \"/nonexistent/ca.pem\"\n",
            "kafka.tls.ca-file: could not read /nonexistent/ca.pem",
        ),
        // The client secret would cross the network in the clear.
        (
            "[kafka]\nsecurity-protocol = \"sasl-ssl\"\n[kafka.sasl]\nmechanism = \"OAUTHBEARER\"\n\
             [kafka.sasl.oidc]\ntoken-endpoint-url = \"http://idp.example.com/token\"\n\
             client-id = \"eddy\"\nclient-secret = \"x\"\n",
            "must be an https:// URL",
        ),
        (
            "[kafka]\nsecurity-protocol = \"sasl-ssl\"\n[kafka.sasl]\nmechanism = \"OAUTHBEARER\"\n",
            "needs a [kafka.sasl.oidc] table",
        ),
    ];
    for (i, (table, expect)) in cases.iter().enumerate() {
        let config = write(
            files.path(),
            &format!("{i}.toml"),
            &format!("brokers = \"127.0.0.1:9\"\n{table}"),
        )?;
        let out = std::process::Command::new(eddy_tests::eddy_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--config", &config])
            .arg("--data-dir")
            .arg(files.path().join(format!("data-{i}")))
            .envs(
                table
                    .contains("PLAIN")
                    .then_some(("EDDY_KAFKA__SASL__PASSWORD", "from-the-environment")),
            )
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {table}");
        assert!(stderr.contains(expect), "{table} -> {stderr}");
    }
    Ok(())
}

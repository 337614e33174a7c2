//! The control plane over TLS, with client certificates (mutual TLS), and
//! on a Unix socket: who may connect is decided before any request is
//! read. Certificates are made at test time by `openssl`.

use eddy_tests::{Daemon, Pki, eddy_bin};
use std::process::{Command, Output};

/// Runs `eddy daemon info --format json` against `server` with `flags`.
fn daemon_info(server: &str, flags: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(eddy_bin())
        .args(["daemon", "info", "--format", "json", "--server", server])
        .args(flags)
        .env_remove("EDDY_SERVER")
        .output()?)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes a daemon configuration serving the control plane with `pki`'s
/// server certificate, requiring clients (other daemons too) to present
/// one from its CA; returns its path.
fn mutual_tls_config(dir: &std::path::Path, pki: &Pki) -> anyhow::Result<String> {
    let config = dir.join("eddy.toml");
    std::fs::write(
        &config,
        format!(
            "[control-tls]\ncert-file = \"{}\"\nkey-file = \"{}\"\nca-file = \"{}\"\n\
             require-client-cert = true\n",
            pki.file("server.pem"),
            pki.file("server.key"),
            pki.file("ca.pem"),
        ),
    )?;
    Ok(config.to_string_lossy().into_owned())
}

#[test]
fn mutual_tls_admits_only_clients_with_a_certificate_from_the_cluster_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Pki::new(&dir.path().join("pki"), "eddy control plane CA")?;
    let stranger = Pki::new(&dir.path().join("stranger"), "another CA")?;
    let config = mutual_tls_config(dir.path(), &ca)?;
    // Beyond loopback without tokens: mutual TLS keeps out whoever has no
    // certificate, so the daemon serves.
    let daemon = Daemon::start_embedded(
        &dir.path().join("data"),
        &["--config", &config, "--listen", "0.0.0.0:0"],
    )?;
    let server = daemon.server().to_owned();
    assert!(server.starts_with("https://127.0.0.1:"), "{server}");

    let (ca_pem, cert, key) = (
        ca.file("ca.pem"),
        ca.file("client.pem"),
        ca.file("client.key"),
    );
    let admitted = daemon_info(
        &server,
        &["--tls-ca", &ca_pem, "--tls-cert", &cert, "--tls-key", &key],
    )?;
    assert!(admitted.status.success(), "{}", stderr(&admitted));
    let info: serde_json::Value = serde_json::from_slice(&admitted.stdout)?;
    assert_eq!(info["embedded_broker"], true, "{info}");

    let (stranger_cert, stranger_key) = (stranger.file("client.pem"), stranger.file("client.key"));
    let refused = [
        ("no client certificate", vec!["--tls-ca", &ca_pem]),
        (
            "a certificate from another CA",
            vec![
                "--tls-ca",
                &ca_pem,
                "--tls-cert",
                &stranger_cert,
                "--tls-key",
                &stranger_key,
            ],
        ),
    ];
    for (what, flags) in refused {
        let out = daemon_info(&server, &flags)?;
        assert!(!out.status.success(), "served a client with {what}");
    }

    // The system's CAs do not know the cluster's CA: the daemon's
    // certificate is refused, and the error says to give --tls-ca.
    let untrusted = daemon_info(&server, &["--tls-cert", &cert, "--tls-key", &key])?;
    assert!(!untrusted.status.success());
    let message = stderr(&untrusted);
    assert!(
        message.contains("--tls-ca") && message.to_lowercase().contains("certificate"),
        "{message}"
    );
    // Plaintext to a TLS port gets nothing.
    let plaintext = daemon_info(&server.replace("https://", "http://"), &[])?;
    assert!(!plaintext.status.success());
    // TLS flags for a plaintext URL are a mistake, said so.
    let mixed = daemon_info("http://127.0.0.1:1", &["--tls-ca", &ca_pem])?;
    assert!(stderr(&mixed).contains("https://"), "{}", stderr(&mixed));
    Ok(())
}

#[test]
fn a_unix_socket_listener_is_for_this_user_alone_and_not_taken_twice() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("eddy.sock");
    let listen = format!("unix:{}", socket.display());
    let daemon = Daemon::start_embedded(&dir.path().join("a"), &["--listen", &listen])?;
    assert_eq!(daemon.server(), listen);
    let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is open to others: {mode:o}");

    let info = daemon_info(&listen, &[])?;
    assert!(info.status.success(), "{}", stderr(&info));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout)?;
    assert_eq!(info["embedded_broker"], true, "{info}");

    // A second daemon on the same socket is refused; the first serves on.
    let second = Daemon::start_embedded(&dir.path().join("b"), &["--listen", &listen]);
    let refusal = match second {
        Ok(_) => anyhow::bail!("a second daemon took {listen}"),
        Err(e) => format!("{e:#}"),
    };
    let log_dir = dir.path().join("b");
    let logs: String = std::fs::read_dir(&log_dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("daemon-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    assert!(
        logs.contains("is another eddy running"),
        "{refusal}\n{logs}"
    );
    assert!(daemon_info(&listen, &[])?.status.success());
    Ok(())
}

/// Runs `eddy ARGS --format json` against the TLS daemon at `server` with
/// the client certificate of `pki`; fails unless it succeeds.
fn eddy_json(server: &str, pki: &Pki, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(eddy_bin())
        .args(args)
        .args(["--format", "json", "--server", server])
        .args(["--tls-ca", &pki.file("ca.pem")])
        .args(["--tls-cert", &pki.file("client.pem")])
        .args(["--tls-key", &pki.file("client.key")])
        .env_remove("EDDY_SERVER")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "eddy {} failed: {}",
        args.join(" "),
        stderr(&out)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The input partitions `server`'s daemon runs of `pipeline`.
fn assigned(server: &str, pki: &Pki, pipeline: &str) -> anyhow::Result<usize> {
    let p = eddy_json(server, pki, &["pipeline", "get", pipeline])?;
    Ok(p["partitions"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|s| s["assigned"] == true).count()))
}

#[test]
fn daemons_forward_state_queries_to_each_other_over_mutual_tls() -> anyhow::Result<()> {
    use eddy_tests::{Broker, Rec, produce, wait_for};
    use std::collections::BTreeMap;
    use std::time::Duration;
    let broker = Broker::start(&[("words", 2), ("counts", 2)])?;
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(&dir.path().join("pki"), "eddy cluster CA")?;
    // One certificate for both daemons (127.0.0.1), each requiring
    // clients, and so each other, to present one from the CA.
    let config = mutual_tls_config(dir.path(), &pki)?;
    let secret = [("EDDY_CLUSTER_SECRET", "tls-cluster-test-secret-0123456789")];
    let a = Daemon::start(
        broker.bootstrap(),
        &dir.path().join("a"),
        &["--config", &config],
        &secret,
    )?;
    let b = Daemon::start(
        broker.bootstrap(),
        &dir.path().join("b"),
        &["--config", &config],
        &secret,
    )?;
    let (a_url, b_url) = (a.server().to_owned(), b.server().to_owned());
    assert!(a_url.starts_with("https://") && b_url.starts_with("https://"));
    let module = eddy_tests::plugin("count");
    eddy_json(
        &a_url,
        &pki,
        &[
            "pipeline",
            "create",
            "tally",
            "--module",
            &module.to_string_lossy(),
            "--input",
            "words",
            "--output",
            "counts",
        ],
    )?;
    wait_for(
        "each daemon to run a partition",
        Duration::from_secs(90),
        || {
            let a_runs = assigned(&a_url, &pki, "tally").unwrap_or(0);
            let b_runs = assigned(&b_url, &pki, "tally").unwrap_or(0);
            Ok((a_runs == 1 && b_runs == 1).then_some(()))
        },
    )?;
    let words = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen"];
    let records: Vec<Rec> = (0..80)
        .map(|i| {
            let word = words[i % words.len()];
            Rec::value(word).keyed(word)
        })
        .collect();
    produce(broker.bootstrap(), "words", &records)?;
    let expected: BTreeMap<String, String> = words
        .iter()
        .map(|w| ((*w).to_owned(), "10".to_owned()))
        .collect();
    // Each daemon holds half the keys: a full answer from either one
    // means it asked the other, over mutual TLS.
    for url in [&a_url, &b_url] {
        wait_for(
            &format!("{url} to answer every key"),
            Duration::from_secs(90),
            || {
                let scan = eddy_json(url, &pki, &["state", "scan", "tally"]);
                let Ok(scan) = scan else { return Ok(None) };
                let entries: BTreeMap<String, String> = scan["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        Some((
                            e["key"].as_str()?.to_owned(),
                            e["value"].as_str()?.to_owned(),
                        ))
                    })
                    .collect();
                Ok((entries == expected).then_some(()))
            },
        )?;
    }
    Ok(())
}

/// Runs `eddy ARGS` against `server` as the holder of `pki`'s certificate
/// `who` (`who.pem`, `who.key`); returns whether it succeeded and stderr.
fn eddy_as(server: &str, pki: &Pki, who: &str, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = Command::new(eddy_bin())
        .args(args)
        .args(["--server", server, "--tls-ca", &pki.file("ca.pem")])
        .args(["--tls-cert", &pki.file(&format!("{who}.pem"))])
        .args(["--tls-key", &pki.file(&format!("{who}.key"))])
        .env_remove("EDDY_SERVER")
        .env_remove("EDDY_TOKEN")
        .output()?;
    Ok((out.status.success(), stderr(&out)))
}

#[test]
fn client_certificates_are_known_by_name_each_within_its_role() -> anyhow::Result<()> {
    use eddy_tests::Broker;
    let broker = Broker::start(&[("team-a.in", 1), ("team-a.out", 1), ("other", 1)])?;
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(&dir.path().join("pki"), "eddy control plane CA")?;
    pki.client("dashboard", "DNS:dashboard.clients.test")?;
    pki.client("team-a-ci", "URI:spiffe://clients.test/team-a/ci")?;
    // From the same CA, but named in no [[client-certificates]] entry.
    pki.client("intern", "DNS:intern.clients.test")?;
    let config = dir.path().join("eddy.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[control-tls]
cert-file = "{server}"
key-file = "{server_key}"
ca-file = "{ca}"
require-client-cert = true

[[client-certificates]]
name = "dashboard"
role = "reader"
san = "dashboard.clients.test"

[[client-certificates]]
name = "team-a ci"
role = "deployer"
san = "spiffe://clients.test/team-a/ci"
pipeline-prefix = "team-a."
topics = ["team-a.*"]

[[tokens]]
name = "ops"
role = "admin"
sha256 = "{admin}"
"#,
            server = pki.file("server.pem"),
            server_key = pki.file("server.key"),
            ca = pki.file("ca.pem"),
            admin = eddy_tests::sha256_hex("admin-token-0123456789"),
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    let daemon = Daemon::start(
        broker.bootstrap(),
        &dir.path().join("data"),
        &["--config", &config],
        &[],
    )?;
    let server = daemon.server().to_owned();
    let module = eddy_tests::plugin("uppercase");
    let module = module.to_string_lossy();
    let create = |name: &'static str, input: &'static str| {
        [
            "pipeline",
            "create",
            name,
            "--module",
            &module,
            "--input",
            input,
            "--output",
            "team-a.out",
        ]
        .map(str::to_owned)
    };
    let run = |who: &str, args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        eddy_as(&server, &pki, who, &args)
    };
    let list = ["pipeline".to_owned(), "list".to_owned()];

    // A certificate from the CA that names no configured client, and the
    // test's generic one, are not admitted by the certificate alone.
    for who in ["intern", "client"] {
        let (ok, err) = run(who, &list)?;
        assert!(!ok && err.contains("Unauthenticated"), "{who}: {err}");
    }
    let (ok, err) = run("intern", &list)?;
    assert!(!ok && err.contains("intern.clients.test"), "{err}");
    let (ok, err) = run("dashboard", &list)?;
    assert!(ok, "{err}");
    let (ok, err) = run("dashboard", &create("team-a.wc", "team-a.in"))?;
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    let (ok, err) = run("team-a-ci", &create("team-b.wc", "team-a.in"))?;
    assert!(!ok && err.contains("team-a."), "{err}");
    let (ok, err) = run("team-a-ci", &create("team-a.wc", "other"))?;
    assert!(!ok && err.contains("`other`"), "{err}");
    let (ok, err) = run("team-a-ci", &create("team-a.wc", "team-a.in"))?;
    assert!(ok, "{err}");
    // A token still decides for whoever sends one, over any certificate.
    let mut delete = vec!["pipeline", "delete", "team-a.wc"];
    let (ok, err) = eddy_as(&server, &pki, "intern", &delete)?;
    assert!(!ok && err.contains("Unauthenticated"), "{err}");
    delete.extend(["--token", "admin-token-0123456789"]);
    let (ok, err) = eddy_as(&server, &pki, "intern", &delete)?;
    assert!(ok, "{err}");
    Ok(())
}

#[test]
fn client_certificates_without_mutual_tls_stop_the_daemon_at_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("eddy.toml");
    std::fs::write(
        &config,
        "[[client-certificates]]\nname = \"ci\"\nrole = \"admin\"\nsan = \"ci.clients.test\"\n",
    )?;
    let out = Command::new(eddy_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()?;
    assert!(
        !out.status.success(),
        "a daemon started that no certificate could reach"
    );
    assert!(
        stderr(&out).contains("require-client-cert"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

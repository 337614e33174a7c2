//! The harness for eddy's end-to-end tests: the real `eddy` binary, a broker
//! in its own process (`eddy dev-broker` or Apache Kafka, as
//! `EDDY_TEST_BROKER` says), plugins built from `plugins/`, and an
//! independent Kafka client to write inputs and read outputs.
//!
//! Build first (`just build`); the harness finds the binary at `EDDY_BIN` or
//! in this checkout's `target/debug/`, and the plugins in `target/plugins/`.

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod broker;
mod oidc;
mod pki;

pub use broker::{Broker, BrokerKind, BrokerOptions, Secured};
pub use eddy_proto::v1;
pub use oidc::{Grant, IdentityProvider};
pub use pki::Pki;

/// The `eddy` binary under test: `EDDY_BIN` (as `just test` sets it), else
/// this checkout's `target/debug/eddy`.
pub fn eddy_bin() -> PathBuf {
    let path = std::env::var_os("EDDY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/eddy"));
    assert!(
        path.is_file(),
        "{} is missing: run `just build` (or `cargo build -p eddy`) before the tests",
        path.display()
    );
    path
}

/// The SHA-256 of a control-plane token in hex, as a daemon's
/// configuration holds it (`[[tokens]] sha256`).
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A plugin built for wasm32-wasip2 by `just plugins`, by crate name
/// (`split-words`): in this checkout's `target/plugins`, or `EDDY_PLUGINS_DIR`.
pub fn plugin(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDDY_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/wasm32-wasip2/release")
        });
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: run `just plugins` before the tests",
        path.display()
    );
    path
}

/// Waits until `check` returns `Some`, polling every 100 ms, or fails after
/// `timeout` with `what` and the last value seen.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_error.map_or(String::new(), |e| format!(" (last error: {e:#})"))
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads lines from a child's stdout on a thread until one matches.
pub(crate) fn read_until(
    stdout: std::process::ChildStdout,
    timeout: Duration,
    mut want: impl FnMut(&str) -> Option<String> + Send + 'static,
) -> anyhow::Result<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = want(&line) {
                let _ = tx.send(found);
            }
        }
    });
    rx.recv_timeout(timeout)
        .context("the process did not print what was expected")
}

fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// A process's resident memory, from /proc (Linux).
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `eddy serve` in its own process, pointed at a broker or on its embedded
/// one; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    server: String,
    /// The embedded broker's address, when the daemon runs one.
    embedded: Option<String>,
    log: PathBuf,
}

impl Daemon {
    /// Starts a daemon on `data_dir` with a short session timeout (6 s, as
    /// fault tests need, unless `extra` sets `--session-timeout`), plus
    /// `extra` flags and `env` variables.
    pub fn start(
        brokers: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut args = vec!["--brokers", brokers];
        args.extend_from_slice(extra);
        Self::launch(data_dir, &args, env)
    }

    /// Starts a daemon on its embedded broker (no `--brokers`), on
    /// `data_dir`, with `extra` flags such as `--topic NAME:N`.
    pub fn start_embedded(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::launch(data_dir, extra, &[])
    }

    /// The embedded broker's bootstrap address, if the daemon runs one.
    pub fn embedded_broker(&self) -> Option<&str> {
        self.embedded.as_deref()
    }

    fn launch(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let log = data_dir.join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        ));
        // Short by default, as fault tests need; `extra` may set its own.
        let session_timeout: &[&str] = if extra.contains(&"--session-timeout") {
            &[]
        } else {
            &["--session-timeout", "6s"]
        };
        // Loopback on a free port, unless `extra` says where.
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(eddy_bin())
            .arg("serve")
            .args(listen)
            .args(session_timeout)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("could not start eddy serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        // The embedded broker's line, if any, comes first.
        let mut embedded = String::new();
        let started = read_until(stdout, Duration::from_secs(60), move |l| {
            if let Some((_, address)) = l.split_once("embedded Kafka broker at ") {
                embedded = address.trim().to_owned();
            }
            l.split_once("control plane listening on ")
                .map(|(_, url)| format!("{} {embedded}", url.trim()))
        })
        .with_context(|| format!("daemon did not start; see {}", log.display()))?;
        let (server, embedded) = started.split_once(' ').unwrap_or((&started, ""));
        Ok(Self {
            child: Some(child),
            server: server.to_owned(),
            embedded: (!embedded.is_empty()).then(|| embedded.to_owned()),
            log,
        })
    }

    /// The daemon's gRPC address.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The daemon's resident memory now, with its guest worker's (where
    /// guests that failed run), from /proc (Linux).
    pub fn rss_bytes(&self) -> Option<u64> {
        let daemon = rss_of(self.child.as_ref()?.id())?;
        let workers: u64 = self.guest_workers().into_iter().filter_map(rss_of).sum();
        Some(daemon + workers)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `eddy ARGS` against this daemon.
    pub fn eddy(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(eddy_bin())
            .args(args)
            .env("EDDY_SERVER", &self.server)
            .output()
            .context("could not run eddy")
    }

    /// Runs `eddy ARGS` and fails unless it succeeds; returns stdout.
    pub fn eddy_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.eddy(args)?;
        if !out.status.success() {
            bail!(
                "eddy {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Deploys `plugin` as pipeline `name` from `input` to `output`, with
    /// extra `eddy pipeline create` flags.
    pub fn deploy(
        &self,
        name: &str,
        plugin_name: &str,
        input: &str,
        output: &str,
        extra: &[&str],
    ) -> anyhow::Result<()> {
        let module = plugin(plugin_name);
        let module = module.to_str().context("path")?;
        let mut args = vec![
            "pipeline", "create", name, "--module", module, "--input", input, "--output", output,
        ];
        args.extend_from_slice(extra);
        self.eddy_ok(&args).map(drop)
    }

    /// Deploys a pipeline of several steps (plugins in order).
    pub fn deploy_steps(
        &self,
        name: &str,
        plugins: &[&str],
        input: &str,
        output: &str,
        extra: &[&str],
    ) -> anyhow::Result<()> {
        let modules: Vec<String> = plugins
            .iter()
            .map(|p| plugin(p).to_string_lossy().into_owned())
            .collect();
        let mut args = vec![
            "pipeline", "create", name, "--input", input, "--output", output,
        ];
        for m in &modules {
            args.extend(["--module", m.as_str()]);
        }
        args.extend_from_slice(extra);
        self.eddy_ok(&args).map(drop)
    }

    /// A state query over gRPC.
    pub fn query_state(
        &self,
        request: v1::QueryStateRequest,
    ) -> Result<v1::QueryStateResponse, tonic::Status> {
        let server = self.server.clone();
        block_on(async move {
            let mut client = v1::pipeline_service_client::PipelineServiceClient::connect(server)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            client
                .query_state(request)
                .await
                .map(tonic::Response::into_inner)
        })
    }

    /// Every state entry of a pipeline's last step, as text, paging through
    /// scans.
    pub fn state_all(&self, pipeline: &str) -> Result<BTreeMap<String, String>, tonic::Status> {
        let mut all = BTreeMap::new();
        let mut after = Vec::new();
        loop {
            let page = self.query_state(v1::QueryStateRequest {
                pipeline: pipeline.to_owned(),
                step: None,
                query: Some(v1::query_state_request::Query::Scan(v1::StateScan {
                    prefix: Vec::new(),
                    start_after: after.clone(),
                    limit: 5000,
                })),
            })?;
            if let Some(last) = page.entries.last() {
                after = last.key.clone();
            }
            for e in page.entries {
                all.insert(
                    String::from_utf8_lossy(&e.key).into_owned(),
                    String::from_utf8_lossy(&e.value).into_owned(),
                );
            }
            if !page.more {
                return Ok(all);
            }
        }
    }

    /// A pipeline's status, over gRPC.
    pub fn pipeline(&self, name: &str) -> Result<v1::Pipeline, tonic::Status> {
        let server = self.server.clone();
        let name = name.to_owned();
        block_on(async move {
            let mut client = v1::pipeline_service_client::PipelineServiceClient::connect(server)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            client
                .get_pipeline(v1::GetPipelineRequest { name })
                .await
                .map(tonic::Response::into_inner)
        })
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("daemon not running")?;
        sigterm(&child);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                bail!("daemon did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's guest worker processes (`eddy guest-worker`, where
    /// guests that failed a call run), by pid.
    pub fn guest_workers(&self) -> Vec<u32> {
        let Some(daemon) = self.child.as_ref().map(Child::id) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                // The parent's pid is the second field after the name,
                // which is in parentheses and may hold spaces.
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let parent = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                parent == Some(daemon)
                    && cmdline.split(|b| *b == 0).any(|arg| arg == b"guest-worker")
            })
            .collect()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a future on a small runtime of its own.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// A record as the tests write and read it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub partition: i32,
    pub offset: i64,
    /// Event time in ms; `None` lets the producer stamp it.
    pub timestamp: Option<i64>,
}

impl Rec {
    /// A record with a value and no key.
    pub fn value(v: impl Into<Vec<u8>>) -> Self {
        Self {
            key: None,
            value: Some(v.into()),
            headers: Vec::new(),
            partition: -1,
            offset: -1,
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn keyed(mut self, k: impl Into<Vec<u8>>) -> Self {
        self.key = Some(k.into());
        self
    }

    /// Sets the event time, in ms.
    pub fn at(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// A tombstone.
    pub fn tombstone(k: impl Into<Vec<u8>>) -> Self {
        Self {
            key: Some(k.into()),
            value: None,
            headers: Vec::new(),
            partition: -1,
            offset: -1,
            timestamp: None,
        }
    }

    /// The value as text.
    pub fn text(&self) -> Option<String> {
        self.value
            .as_deref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The key as text.
    pub fn key_text(&self) -> Option<String> {
        self.key
            .as_deref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Header `name` as text; empty when absent or null.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }
}

/// The records' values as text, sorted: what arrived, order aside.
pub fn sorted_texts(records: &[Rec]) -> Vec<String> {
    let mut texts: Vec<String> = records.iter().filter_map(Rec::text).collect();
    texts.sort();
    texts
}

/// Produces records (to `partition` if set, else by key's murmur2 hash, as
/// Java clients do) and waits for acks.
pub fn produce(brokers: &str, topic: &str, records: &[Rec]) -> anyhow::Result<()> {
    produce_with(brokers, topic, records, "murmur2_random")
}

/// [`produce`] with another of librdkafka's partitioners, e.g.
/// `consistent_random` (CRC32), its default and kcat's.
pub fn produce_with(
    brokers: &str,
    topic: &str,
    records: &[Rec],
    partitioner: &str,
) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", partitioner)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    for r in records {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic);
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            record = record.payload(v.as_slice());
        }
        if r.partition >= 0 {
            record = record.partition(r.partition);
        }
        if let Some(t) = r.timestamp {
            record = record.timestamp(t);
        }
        if !r.headers.is_empty() {
            record = record.headers(r.headers.iter().fold(OwnedHeaders::new(), |hs, (k, v)| {
                hs.insert(rdkafka::message::Header {
                    key: k,
                    value: v.as_deref(),
                })
            }));
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    if e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                        bail!("produce to {topic} failed: {e}");
                    }
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// Reads every partition of `topic` from the beginning until `want` records
/// arrived or `timeout` passed; then keeps reading for `settle` to catch
/// anything extra (duplicates or unexpected records).
pub fn consume(
    brokers: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
    settle: Duration,
) -> anyhow::Result<Vec<Rec>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "eddy-tests-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, i32::try_from(p)?, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if settle_until.is_some_and(|s| now >= s) || (settle_until.is_none() && now >= deadline) {
            break;
        }
        if out.len() >= want && settle_until.is_none() {
            settle_until = Some(now + settle);
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = message?;
        out.push(Rec {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
        });
    }
    Ok(out)
}

/// Every record of `topic` from each partition's start to its end as it
/// was when called, read uncommitted (so transaction markers are the only
/// offsets without a record, besides what compaction removed).
pub fn read_all(brokers: &str, topic: &str) -> anyhow::Result<Vec<Rec>> {
    let ends = watermarks(brokers, topic)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "eddy-tests-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_uncommitted")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut open = 0;
    for (p, (low, high)) in ends.iter().enumerate() {
        if high > low {
            tpl.add_partition_offset(topic, i32::try_from(p)?, Offset::Beginning)?;
            open += 1;
        }
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = std::collections::BTreeSet::new();
    while done.len() < open {
        if Instant::now() >= deadline {
            bail!("could not read {topic} to its end within 60 s");
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = match message {
            Ok(m) => m,
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                done.insert(p);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let end = ends[usize::try_from(m.partition())?].1;
        if m.offset() >= end {
            done.insert(m.partition());
            continue;
        }
        if m.offset() + 1 >= end {
            done.insert(m.partition());
        }
        out.push(Rec {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: Vec::new(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
        });
    }
    Ok(out)
}

/// The sum over partitions of the committed offsets minus the start, as
/// the daemon reports them: how many inputs the pipeline has committed.
pub fn committed_total(pipeline: &v1::Pipeline) -> i64 {
    pipeline
        .partitions
        .iter()
        .map(|p| p.committed_offset.max(0))
        .sum()
}

/// The partition of `partitions` Java clients put `key` in: Kafka's murmur2
/// (`Utils.murmur2` and `toPositive`), written here apart from eddy's own.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ u32::try_from(key.len()).unwrap_or(u32::MAX);
    let mut chunks = key.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(first) = tail.first() {
        h ^= u32::from(*first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    i32::try_from((h & 0x7fff_ffff) % u32::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// Uploads `bytes` as a module over gRPC, returning the daemon's answer.
pub fn upload(server: &str, name: &str, bytes: Vec<u8>) -> Result<v1::Module, tonic::Status> {
    use v1::upload_module_request::Part;
    let server = server.to_owned();
    let name = name.to_owned();
    block_on(async move {
        let mut client = v1::module_service_client::ModuleServiceClient::connect(server)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let size = bytes.len() as u64;
        let mut messages = vec![v1::UploadModuleRequest {
            part: Some(Part::Metadata(v1::ModuleMetadata { name, size })),
        }];
        messages.extend(bytes.chunks(64 << 10).map(|c| v1::UploadModuleRequest {
            part: Some(Part::Chunk(c.to_vec())),
        }));
        client
            .upload_module(tokio_stream::iter(messages))
            .await
            .map(|r| r.into_inner().module.unwrap_or_default())
    })
}

/// Creates a pipeline over gRPC.
pub fn create_pipeline(
    server: &str,
    spec: v1::PipelineSpec,
) -> Result<v1::Pipeline, tonic::Status> {
    let server = server.to_owned();
    block_on(async move {
        let mut client = v1::pipeline_service_client::PipelineServiceClient::connect(server)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        client
            .create_pipeline(v1::CreatePipelineRequest { spec: Some(spec) })
            .await
            .map(tonic::Response::into_inner)
    })
}

/// The (low, high) watermarks of every partition of `topic`; empty if the
/// topic does not exist.
pub fn watermarks(brokers: &str, topic: &str) -> anyhow::Result<Vec<(i64, i64)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    (0..partitions)
        .map(|p| {
            Ok(consumer.fetch_watermarks(topic, i32::try_from(p)?, Duration::from_secs(10))?)
        })
        .collect()
}

/// The offsets a consumer group has committed on `topic` (partition -> offset),
/// read straight from the broker.
pub fn group_committed(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect())
}

/// SIGKILLs `daemon` and checks the kill landed mid-stream: the group of
/// `topic` (with `partitions`) committed some but not all of `total`
/// inputs. Returns how many it had committed.
pub fn kill_mid_stream(
    daemon: &mut Daemon,
    brokers: &str,
    group: &str,
    (topic, partitions): (&str, i32),
    total: usize,
) -> anyhow::Result<i64> {
    daemon.kill();
    let committed: i64 = group_committed(brokers, group, topic, partitions)?
        .into_iter()
        .map(|o| o.max(0))
        .sum();
    anyhow::ensure!(
        committed > 0 && committed < i64::try_from(total)?,
        "the kill must land mid-stream: {committed} of {total} committed"
    );
    Ok(committed)
}

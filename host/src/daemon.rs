//! `eddy serve` and `eddy dev-broker`: wiring the parts together and
//! shutting them down in order.

use crate::config::{ListenAddr, ServeConfig};
use crate::control::{
    self, Access, ControlTls, DaemonInfoService, ModuleServiceImpl, PipelineServiceImpl,
};
use crate::kafka::{Connection, EmbeddedBroker, KafkaSettings, TopicSpec};
use crate::modules::ModuleStore;
use crate::native_heap;
use crate::pipeline::{ClusterSecret, DaemonIdentity, ManagerOptions, PipelineManager};
use crate::runtime::worker::{WorkerOptions, WorkerStore};
use crate::runtime::{RuntimeOptions, WORLD};
use crate::state::StateMemory;
use crate::task::TaskRuntime;
use anyhow::Context as _;
use eddy_proto::v1;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Prints a line on stdout right away: tests and scripts read these.
fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Runs the daemon until SIGTERM: then stops polling, lets every task
/// finish its batch and commit, and exits.
pub async fn serve(config: ServeConfig, topics: Vec<TopicSpec>) -> anyhow::Result<()> {
    for dir in [
        config.modules_dir(),
        config.pipelines_dir(),
        config.state_dir(),
    ] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    let daemon_id = daemon_id(&config.data_dir)?;
    let mut topics = topics;
    for t in &config.topics {
        topics.push(t.parse().map_err(|e: String| anyhow::anyhow!(e))?);
    }
    let connection = Connection::resolve(&config.kafka)
        .context("the [kafka] configuration cannot be used (docs/security.md)")?;
    anyhow::ensure!(
        connection.is_default() || !config.brokers.is_empty(),
        "the [kafka] table configures how to reach a cluster, but no --brokers is given and \
         the embedded broker takes plaintext only: set brokers, or remove [kafka]"
    );
    let broker = if config.brokers.is_empty() {
        let broker = EmbeddedBroker::start(
            &topics,
            config.embedded_retention_bytes,
            None,
            Some(config.broker_dir()),
        )?;
        announce(&format!(
            "eddy: embedded Kafka broker at {}",
            broker.bootstrap()
        ));
        Some(broker)
    } else {
        if !topics.is_empty() {
            tracing::warn!("--topic only creates topics in the embedded broker; ignored");
        }
        None
    };
    let brokers = broker
        .as_ref()
        .map_or(config.brokers.clone(), |b| b.bootstrap().to_owned());
    let kafka = KafkaSettings {
        brokers: brokers.clone(),
        session_timeout: config.session_timeout,
        max_record_bytes: config.limits.max_record_bytes,
        daemon_id: Some(daemon_id.clone()),
        connection,
    };
    let modules = Arc::new(ModuleStore::open(&config.modules_dir())?);
    let worker = if config.guest_worker {
        Some(WorkerOptions {
            program: running_binary()
                .context("could not find the eddy binary to start the guest worker with")?,
            store: WorkerStore {
                modules_dir: config.modules_dir(),
                compiled_dir: config.compiled_dir(),
                max_memory_bytes: config.limits.memory_bytes,
            },
        })
    } else {
        None
    };
    let runtime = TaskRuntime::new(RuntimeOptions {
        max_memory_bytes: config.limits.memory_bytes,
        compiled_dir: Some(config.compiled_dir()),
        modules: Some(modules.clone()),
        worker,
    })?;
    let state_memory = StateMemory::new(config.state_memory_bytes);
    let heap_trimmer = native_heap::Trimmer::start(config.heap_trim_interval)
        .context("could not start the heap trimming thread")?;
    let secret = ClusterSecret::load(config.cluster_secret_file.as_deref())?;
    let access = Arc::new(Access::new(&config.tokens, &config.client_certificates));
    let tls = config
        .control_tls
        .as_ref()
        .map(ControlTls::load)
        .transpose()?;
    let mutual_tls = tls.as_ref().is_some_and(ControlTls::is_mutual);
    if access.required() && tls.is_none() && !config.listen.is_local() {
        tracing::warn!(
            listen = %config.listen,
            "tokens travel in plaintext to {}: configure [control-tls] (docs/security.md)",
            config.listen
        );
    }
    if !access.required() && !mutual_tls && !config.listen.is_local() {
        anyhow::ensure!(
            config.anonymous_control_plane,
            "refusing to serve the control plane on {} without tokens: anyone who reaches it \
             could run code on this daemon and read every pipeline's state. Configure [[tokens]] \
             or mutual TLS ([control-tls] require-client-cert; docs/security.md), listen on \
             loopback or a Unix socket, or, on a network nobody else reaches, set \
             anonymous-control-plane (--anonymous-control-plane)",
            config.listen
        );
        tracing::warn!(
            listen = %config.listen,
            "the control plane takes requests from anyone who reaches {} without a token \
             (anonymous-control-plane)",
            config.listen
        );
    }
    let manager = Arc::new(PipelineManager::new(
        runtime.clone(),
        modules.clone(),
        kafka,
        ManagerOptions {
            specs_dir: config.pipelines_dir(),
            state_dir: config.state_dir(),
            state_memory: state_memory.clone(),
            ceilings: config.limits.clone(),
            quotas: config.quotas.clone(),
            group_prefix: config.group_prefix.clone(),
            secret: secret.clone(),
        },
    )?);
    let listener = control::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let identity = DaemonIdentity {
        id: daemon_id,
        url: advertised_url(&config.advertise, &addr, scheme),
    };
    {
        // Pipelines come from the registry in Kafka: wait for the first
        // read, but serve anyway (answering UNAVAILABLE) if Kafka is away.
        let manager = manager.clone();
        tokio::task::spawn_blocking(move || manager.restore(identity, Duration::from_secs(15)))
            .await?;
    }
    announce(&format!(
        "eddy: control plane listening on {}",
        client_url(&addr, scheme)
    ));
    let token = CancellationToken::new();
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing batches in flight");
            token.cancel();
        });
    }
    let info = v1::DaemonInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        brokers,
        embedded_broker: broker.is_some(),
        world: WORLD.into(),
        // Filled in at each request.
        memory: None,
        quotas: None,
    };
    let served = control::serve(
        listener,
        tls.as_ref(),
        DaemonInfoService {
            info,
            state_memory,
            access: access.clone(),
            quotas: config.quotas.clone(),
            manager: manager.clone(),
            modules: modules.clone(),
            runtime: runtime.clone(),
        },
        ModuleServiceImpl {
            runtime,
            store: modules,
            max_bytes: config.limits.max_module_bytes,
            idle_timeout: config.upload_idle_timeout,
            compiles: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            )),
            access: access.clone(),
            quota: (
                config.quotas.max_modules,
                config.quotas.max_module_store_bytes,
            ),
            manager: manager.clone(),
        },
        PipelineServiceImpl {
            manager: manager.clone(),
            access,
            peer_proof: secret.as_ref().map(ClusterSecret::peer_proof),
            peer_tls: tls.as_ref().map(ControlTls::peer_client),
        },
        token.clone().cancelled_owned(),
    )
    .await;
    tokio::task::spawn_blocking(move || manager.shutdown()).await?;
    drop(heap_trimmer);
    drop(broker);
    tracing::info!("stopped");
    served
}

/// This daemon's id, kept in the data directory so a restarted daemon
/// replaces its own registry entry rather than adding one.
fn daemon_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("daemon-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if eddy_registry::is_daemon_id(id) {
            return Ok(id.to_owned());
        }
    }
    let seed = format!(
        "{:?} {} {}",
        std::time::SystemTime::now(),
        std::process::id(),
        data_dir.display()
    );
    let id = crate::modules::digest_of(seed.as_bytes())["sha256:".len()..][..16].to_owned();
    crate::modules::write_file_atomically(&path, id.as_bytes())
        .with_context(|| format!("could not write {}", path.display()))?;
    Ok(id)
}

/// Where other daemons reach this one: `advertise`, or the listen address
/// (loopback for an unspecified one).
fn advertised_url(advertise: &str, addr: &ListenAddr, scheme: &str) -> String {
    if advertise.is_empty() {
        client_url(addr, scheme)
    } else {
        advertise.to_owned()
    }
}

/// The URL a client on this machine reaches `addr` at (`--server`).
fn client_url(addr: &ListenAddr, scheme: &str) -> String {
    match addr {
        ListenAddr::Tcp(socket) => {
            let mut socket = *socket;
            if socket.ip().is_unspecified() {
                socket.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("{scheme}://{socket}")
        }
        ListenAddr::Unix(_) => addr.to_string(),
    }
}

/// Runs a broker in this process until SIGTERM or Ctrl-C.
pub async fn dev_broker(
    topics: Vec<TopicSpec>,
    retention_bytes: u64,
    port: Option<u16>,
    data: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let kept = data.as_ref().map_or_else(
        || "in memory".to_owned(),
        |dir| format!("data in {}", dir.display()),
    );
    let broker = EmbeddedBroker::start(&topics, retention_bytes, port, data)?;
    announce(broker.bootstrap());
    eprintln!(
        "eddy dev-broker: Kafka-protocol broker at {} ({kept}; stop with Ctrl-C)",
        broker.bootstrap()
    );
    shutdown_signal().await;
    drop(broker);
    Ok(())
}

/// The binary this daemon runs, to start its guest worker with: the very
/// file it was started from, even after an upgrade replaced it at its path
/// (Linux's `/proc/self/exe`), so daemon and worker always speak the same
/// protocol and compile for the same engine.
fn running_binary() -> std::io::Result<std::path::PathBuf> {
    let this = std::path::PathBuf::from("/proc/self/exe");
    if this.exists() {
        return Ok(this);
    }
    std::env::current_exe()
}

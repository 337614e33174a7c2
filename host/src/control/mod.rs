//! The control plane: eddy.v1 over gRPC, with grpc.health.v1 and server
//! reflection so grpcurl works without the .proto files.

mod auth;
mod convert;
mod daemon_service;
mod module_service;
mod pipeline_service;
mod tls;

pub use auth::Access;
pub use daemon_service::DaemonInfoService;
pub use module_service::ModuleServiceImpl;
pub use pipeline_service::PipelineServiceImpl;
pub use tls::{ControlTls, client_config};

use crate::config::ListenAddr;
use anyhow::Context as _;
use eddy_proto::v1::daemon_service_server::DaemonServiceServer;
use eddy_proto::v1::module_service_server::ModuleServiceServer;
use eddy_proto::v1::pipeline_service_server::PipelineServiceServer;
use std::future::Future;
use std::time::Duration;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

/// The longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Requests served at once across every connection; more wait their turn.
const CONCURRENT_REQUESTS: usize = 64;
/// Requests served at once on one connection.
const CONCURRENT_REQUESTS_PER_CONNECTION: usize = 16;
/// How often an idle connection is probed, and how long a probe may go
/// unanswered before the connection is dropped: a peer that vanished
/// without closing holds nothing for long.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound control-plane listener.
pub enum Listener {
    /// On a TCP address.
    Tcp(tokio::net::TcpListener),
    /// On a Unix socket.
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl Listener {
    /// The address clients reach it at (the port chosen for port 0).
    pub fn local_addr(&self) -> anyhow::Result<ListenAddr> {
        Ok(match self {
            Self::Tcp(l) => ListenAddr::Tcp(l.local_addr()?),
            Self::Unix(_, path) => ListenAddr::Unix(path.clone()),
        })
    }
}

/// Serves the control plane on `listener` until `shutdown` completes; health
/// turns NOT_SERVING first, so load balancers stop sending work. With
/// `tls`, only TLS connections are served.
pub async fn serve(
    listener: Listener,
    tls: Option<&ControlTls>,
    daemon: DaemonInfoService,
    modules: ModuleServiceImpl,
    pipelines: PipelineServiceImpl,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<PipelineServiceServer<PipelineServiceImpl>>()
        .await;
    health
        .set_serving::<ModuleServiceServer<ModuleServiceImpl>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(eddy_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(eddy_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let draining = async move {
        shutdown.await;
        health
            .set_not_serving::<PipelineServiceServer<PipelineServiceImpl>>()
            .await;
        health
            .set_not_serving::<ModuleServiceServer<ModuleServiceImpl>>()
            .await;
    };
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server
            .tls_config(tls.server())
            .context("the control plane's TLS certificate or key cannot be used")?;
    }
    let router = server
        // The longest any request may take: creating or deleting a
        // pipeline waits for every daemon's tasks, an upload carries up to
        // 256 MiB; more is a stuck client or an attack.
        .timeout(REQUEST_TIMEOUT)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            CONCURRENT_REQUESTS,
        ))
        .concurrency_limit_per_connection(CONCURRENT_REQUESTS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(DaemonServiceServer::new(daemon))
        .add_service(ModuleServiceServer::new(modules))
        .add_service(PipelineServiceServer::new(pipelines));
    match listener {
        Listener::Tcp(listener) => {
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), draining)
                .await?;
        }
        Listener::Unix(listener, path) => {
            router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), draining)
                .await?;
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// Binds a Unix socket at `path` that only this user can connect to, with
/// no moment in which anyone else could: it is bound in a new directory
/// only this user may enter, restricted to this user, then moved into
/// place (replacing a stale socket in one step).
fn bind_private_socket(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let private = parent.join(format!(".eddy-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("socket");
    let bound = tokio::net::UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// Binds the control plane's address, with a message that says what to do
/// when it is taken. A Unix socket is made readable and writable by this
/// user alone; one left behind by a daemon that is gone is replaced.
pub async fn bind(addr: &ListenAddr) -> anyhow::Result<Listener> {
    let taken = |e: std::io::Error| {
        anyhow::anyhow!(
            "could not listen on {addr}: {e} (is another eddy running? choose another address \
             with --listen)"
        )
    };
    match addr {
        ListenAddr::Tcp(socket) => tokio::net::TcpListener::bind(socket)
            .await
            .map(Listener::Tcp)
            .map_err(taken),
        ListenAddr::Unix(path) => {
            // One left by a daemon that is gone is replaced by the rename.
            if path.exists() && tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(taken(std::io::ErrorKind::AddrInUse.into()));
            }
            let listener = bind_private_socket(path).map_err(taken)?;
            Ok(Listener::Unix(listener, path.clone()))
        }
    }
}

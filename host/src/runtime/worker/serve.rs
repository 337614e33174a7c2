//! The worker process, `eddy guest-worker`: guests that failed a call
//! run here, one thread per guest instance, in the containment engine.
//!
//! It listens where the daemon told it to, takes connections only with
//! the daemon's token, says `ready` on stdout, and exits when its stdin
//! closes: the daemon holds the other end, so the worker never outlives
//! it, however the daemon ends.

use super::proxy::ProxyServices;
use super::wire::{self, Event, Hello, Lists, Request};
use crate::modules::ModuleStore;
use crate::priority::demote_current_thread;
use crate::runtime::{GuestError, Outputs, Runtime, RuntimeOptions, Tier};
use anyhow::Context as _;
use std::io::Write as _;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;

/// The environment variable the daemon hands the worker its token in.
pub(super) const TOKEN_VARIABLE: &str = "EDDY_GUEST_WORKER_TOKEN";

/// Largest request the worker reads: a batch is bounded by the daemon.
const MAX_REQUEST: usize = 1 << 30;

/// Where the worker finds what it runs: the daemon's module store and
/// compiled-module cache, and the daemon's memory ceiling for guests.
#[derive(Clone, Debug)]
pub struct WorkerStore {
    /// The daemon's module store, where the worker reads modules.
    pub modules_dir: PathBuf,
    /// The daemon's compiled-module cache, which the worker shares.
    pub compiled_dir: PathBuf,
    /// The largest linear memory any guest may have.
    pub max_memory_bytes: u64,
}

/// Runs the worker until its stdin closes, listening on the abstract Unix
/// socket `listen`.
pub fn run(listen: &str, options: WorkerStore) -> anyhow::Result<()> {
    let token = std::env::var(TOKEN_VARIABLE)
        .with_context(|| {
            format!("the guest worker is started by the daemon, with {TOKEN_VARIABLE}")
        })?
        .into_bytes();
    // SAFETY: the worker is single-threaded until here; nothing else reads
    // the environment at the same time.
    unsafe { std::env::remove_var(TOKEN_VARIABLE) };
    let address = SocketAddr::from_abstract_name(listen.as_bytes())?;
    let listener = UnixListener::bind_addr(&address)
        .with_context(|| format!("could not listen on @{listen}"))?;
    let modules = Arc::new(ModuleStore::open(&options.modules_dir)?);
    let runtime = Runtime::<ProxyServices>::new(RuntimeOptions {
        max_memory_bytes: options.max_memory_bytes,
        compiled_dir: Some(options.compiled_dir),
        modules: Some(modules.clone()),
        worker: None,
    })?;
    std::thread::Builder::new()
        .name("eddy-lifeline".into())
        .spawn(|| {
            // Returns when the daemon is gone (or closes it to stop us).
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        })?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let worker = Arc::new(Worker {
        token,
        runtime,
        modules,
    });
    for connection in listener.incoming() {
        let connection = match connection {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the guest worker could not accept a connection");
                continue;
            }
        };
        let worker = worker.clone();
        let spawned = std::thread::Builder::new()
            .name("eddy-contained".into())
            .spawn(move || worker.serve(connection));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "the guest worker could not start a thread for a guest");
        }
    }
    Ok(())
}

struct Worker {
    token: Vec<u8>,
    runtime: Arc<Runtime<ProxyServices>>,
    modules: Arc<ModuleStore>,
}

impl Worker {
    /// Serves one guest instance until the daemon closes its connection.
    fn serve(&self, mut connection: UnixStream) {
        // Guests here failed before: they run on what CPU the daemon's
        // healthy pipelines leave.
        demote_current_thread();
        let Ok(hello) = wire::receive::<Hello>(&mut connection, MAX_REQUEST) else {
            return;
        };
        if !same_secret(&hello.token, &self.token) {
            tracing::warn!("the guest worker refused a connection without its daemon's token");
            return;
        }
        let Ok(services) = connection.try_clone() else {
            return;
        };
        let services = ProxyServices::new(services, hello.label.clone(), hello.config);
        let made = self
            .runtime
            .module(&hello.digest, || self.modules.bytes(&hello.digest))
            .map_err(|e| GuestError::Instantiate(e.to_string()))
            .and_then(|module| {
                self.runtime
                    .instantiate(&module, services, hello.limits, Tier::Contained)
            });
        let mut guest = match made {
            Ok(guest) => guest,
            Err(e) => {
                let _ = wire::send(&mut connection, &Event::Done(Err(e)));
                return;
            }
        };
        if wire::send(&mut connection, &Event::Done(Ok(Lists::default()))).is_err() {
            return;
        }
        while let Ok(request) = wire::receive::<Request>(&mut connection, MAX_REQUEST) {
            let done = match request {
                Request::Init(info) => guest.init(&info).map(|()| Lists::default()),
                Request::Process(batch) => guest.process(&batch.into()).map(lists),
                Request::OnTimers(timers) => guest.on_timers(&timers).map(lists),
                Request::Reply(_) => {
                    tracing::warn!(guest = %hello.label, "the daemon replied to no call; the guest is dropped");
                    return;
                }
            };
            if wire::send(&mut connection, &Event::Done(done)).is_err() {
                return;
            }
        }
    }
}

fn lists(outputs: Outputs) -> Lists {
    outputs.into_lists().into()
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

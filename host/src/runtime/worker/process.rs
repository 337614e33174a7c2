//! In the daemon: the guest worker process, started on first need and
//! started again when it died.

use super::serve::{TOKEN_VARIABLE, WorkerStore};
use std::io::{BufRead as _, BufReader, Read as _};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How the daemon starts its guest worker.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The `eddy` binary: the daemon's own (`/proc/self/exe` on Linux).
    pub program: PathBuf,
    /// What the worker runs guests from.
    pub store: WorkerStore,
}

/// How long a new worker may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon's guest worker: at most one process at a time.
pub struct WorkerProcess {
    options: WorkerOptions,
    running: Mutex<Option<Running>>,
    /// How many workers were started.
    started: AtomicU64,
}

/// A started worker.
struct Running {
    child: Child,
    /// Where it listens: an abstract Unix socket, which needs no file and
    /// is gone with the process.
    address: SocketAddr,
    /// What a connection must present.
    token: Vec<u8>,
    /// Its stdin: the worker exits when this closes.
    _lifeline: ChildStdin,
    /// Counts the workers started, so a connection that saw one fail
    /// stops only that one.
    generation: u64,
}

/// A connection to the worker, made for one guest instance.
pub(crate) struct Connection {
    pub(super) stream: UnixStream,
    pub(super) token: Vec<u8>,
    /// The worker it goes to.
    pub(super) generation: u64,
}

impl WorkerProcess {
    /// The worker as `options` start it, not yet started.
    pub fn new(options: WorkerOptions) -> Self {
        Self {
            options,
            running: Mutex::new(None),
            started: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        // A panic while holding the lock leaves at worst a dead worker,
        // which the next connection replaces.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection to the worker, starting it first if it is not
    /// running (or died).
    pub(crate) fn connect(&self) -> std::io::Result<Connection> {
        let mut running = self.lock();
        let alive = running
            .as_mut()
            .is_some_and(|r| matches!(r.child.try_wait(), Ok(None)));
        if !alive {
            if let Some(dead) = running.take() {
                stop(dead);
            }
            let generation = self.started.fetch_add(1, Ordering::Relaxed);
            *running = Some(self.start(generation)?);
        }
        let r = running
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the guest worker did not start"))?;
        Ok(Connection {
            stream: UnixStream::connect_addr(&r.address)?,
            token: r.token.clone(),
            generation: r.generation,
        })
    }

    /// The running worker's process id, if one runs.
    pub fn pid(&self) -> Option<u32> {
        let mut running = self.lock();
        let r = running.as_mut()?;
        matches!(r.child.try_wait(), Ok(None)).then(|| r.child.id())
    }

    /// Stops worker `generation` if it still runs, after one of its guests'
    /// connections found it unresponsive: the next connection starts another.
    pub(super) fn restart(&self, generation: u64) {
        let mut running = self.lock();
        if running.as_ref().is_some_and(|r| r.generation == generation)
            && let Some(stuck) = running.take()
        {
            tracing::warn!(
                pid = stuck.child.id(),
                "stopping the guest worker, which stopped answering; guests that failed before are made in a new one"
            );
            stop(stuck);
        }
    }

    fn start(&self, generation: u64) -> std::io::Result<Running> {
        let token = hex::encode(random_bytes()?);
        let name = format!(
            "eddy-guest-worker-{}-{}",
            std::process::id(),
            hex::encode(random_bytes()?)
        );
        let options = &self.options;
        let mut child = Command::new(&options.program)
            // `eddy guest-worker ...` in ps, whatever path started it.
            .arg0("eddy")
            .arg("guest-worker")
            .arg("--listen")
            .arg(&name)
            .arg("--modules")
            .arg(&options.store.modules_dir)
            .arg("--compiled")
            .arg(&options.store.compiled_dir)
            .arg("--max-memory-bytes")
            .arg(options.store.max_memory_bytes.to_string())
            .env(TOKEN_VARIABLE, &token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let lifeline = child.stdin.take();
        let stdout = child.stdout.take();
        let ready = stdout.map(|out| {
            // The first line says it listens; read on a thread of its own,
            // so a worker that never says it costs a timeout, not a hang.
            let (tx, rx) = std::sync::mpsc::channel();
            let reader = std::thread::Builder::new().name("eddy-worker-out".into());
            let _ = reader.spawn(move || {
                let mut out = BufReader::new(out);
                let mut line = String::new();
                let _ = tx.send(out.read_line(&mut line).map(|_| line));
                // Whatever else it prints is drained, never blocking it.
                let _ = std::io::copy(&mut out, &mut std::io::sink());
            });
            rx.recv_timeout(START_TIMEOUT)
        });
        let started = match (lifeline, ready) {
            (Some(lifeline), Some(Ok(Ok(line)))) if line.trim() == "ready" => Ok(lifeline),
            (_, Some(Ok(Ok(line)))) => Err(format!("it said {:?} instead of ready", line.trim())),
            (_, Some(Ok(Err(e)))) => Err(format!("its output could not be read: {e}")),
            (_, Some(Err(_))) => Err(format!("it did not start within {START_TIMEOUT:?}")),
            (_, None) => Err("its stdout was not captured".to_owned()),
        };
        match started {
            Ok(lifeline) => {
                tracing::info!(
                    pid = child.id(),
                    "guest worker started: guests that failed a call run in it"
                );
                Ok(Running {
                    child,
                    address: SocketAddr::from_abstract_name(name.as_bytes())?,
                    token: token.into_bytes(),
                    _lifeline: lifeline,
                    generation,
                })
            }
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::io::Error::other(format!(
                    "the guest worker ({} guest-worker) did not start: {why}",
                    options.program.display()
                )))
            }
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(running) = self.lock().take() {
            stop(running);
        }
    }
}

/// Kills a worker and reaps it.
fn stop(mut running: Running) {
    let _ = running.child.kill();
    let _ = running.child.wait();
}

/// 16 bytes from the kernel's random source.
fn random_bytes() -> std::io::Result<[u8; 16]> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

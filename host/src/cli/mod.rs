//! The `eddy` command line: one binary for the daemon, the broker for
//! development, and the client verbs that talk to a daemon over gRPC.
//! `args` defines the verbs; this module runs them.

mod args;
mod client;
mod kafka_tools;
mod output;

pub use args::{Cli, Format, ServerArgs};

use args::{Command, ServeArgs};
use client::{ClientCommand, run_client};
use kafka_tools::{consume, produce};

/// Logs go to stderr, filtered by `RUST_LOG`. The daemon logs at info by
/// default; client verbs only warn, and leave librdkafka's own connection
/// chatter out: their errors say what went wrong. Colours only on a
/// terminal, so a log file greps plainly.
fn init_logging(daemon: bool) {
    let default = if daemon {
        "info,librdkafka=warn,rdkafka=warn,wasmtime=warn,cranelift=warn"
    } else {
        "warn,librdkafka=off,rdkafka=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The serve flags that were given, shaped like the configuration.
fn overrides(args: &ServeArgs) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    if let Some(d) = &args.data_dir {
        map.insert("data-dir".into(), d.display().to_string().into());
    }
    if let Some(l) = &args.listen {
        map.insert("listen".into(), l.clone().into());
    }
    if let Some(b) = &args.brokers {
        map.insert("brokers".into(), b.clone().into());
    }
    if let Some(a) = &args.advertise {
        map.insert("advertise".into(), a.clone().into());
    }
    if args.anonymous_control_plane {
        map.insert("anonymous-control-plane".into(), true.into());
    }
    if let Some(file) = &args.cluster_secret_file {
        map.insert(
            "cluster-secret-file".into(),
            file.display().to_string().into(),
        );
    }
    if let Some(bytes) = args.state_memory {
        map.insert("state-memory-bytes".into(), bytes.into());
    }
    if let Some(t) = args.session_timeout {
        map.insert(
            "session-timeout".into(),
            humantime::format_duration(t).to_string().into(),
        );
    }
    serde_json::Value::Object(map)
}

/// Runs a parsed command line; errors are printed with their causes.
pub async fn run(cli: Cli) -> std::process::ExitCode {
    init_logging(matches!(
        cli.command,
        Command::Serve(_) | Command::DevBroker(_) | Command::GuestWorker(_)
    ));
    let result = match cli.command {
        Command::Serve(args) => {
            match crate::config::ServeConfig::load(args.config.as_deref(), overrides(&args)) {
                Ok(config) => crate::daemon::serve(config, args.topics).await,
                Err(e) => Err(e),
            }
        }
        Command::DevBroker(args) => {
            crate::daemon::dev_broker(args.topics, args.retention, args.port, args.data).await
        }
        Command::Module(m) => run_client(ClientCommand::Module(m)).await,
        Command::Pipeline(p) => run_client(ClientCommand::Pipeline(p)).await,
        Command::State(q) => run_client(ClientCommand::State(q)).await,
        Command::Daemon(d) => run_client(ClientCommand::Daemon(d)).await,
        Command::Produce(args) => produce(args).await,
        Command::Consume(args) => consume(args).await,
        Command::GuestWorker(args) => tokio::task::block_in_place(|| {
            let store = crate::runtime::worker::WorkerStore {
                modules_dir: args.modules,
                compiled_dir: args.compiled,
                max_memory_bytes: args.max_memory_bytes,
            };
            crate::runtime::worker::run(&args.listen, store)
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

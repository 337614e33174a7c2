//! The `eddy` command line: one binary for the daemon, the broker for
//! development, and the client verbs that talk to a daemon over gRPC.

mod client;
mod kafka_tools;
mod output;

use crate::kafka::TopicSpec;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

use client::{ClientCommand, run_client};
use kafka_tools::{consume, produce};

/// eddy runs WebAssembly stream processors on Kafka partitions.
#[derive(Debug, Parser)]
#[command(name = "eddy", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How client verbs find the daemon.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// The daemon's gRPC address.
    #[arg(
        long,
        env = "EDDY_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
}

/// Output format of client verbs.
#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// One JSON document, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: consume, process and produce for every pipeline.
    ///
    /// With no brokers configured, an embedded Kafka-protocol broker starts in
    /// the same process and its bootstrap address is printed.
    ///
    /// Example: eddy serve --topic lines:3 --topic lines-upper:3
    Serve(ServeArgs),

    /// Run a Kafka-protocol broker for development and tests, in its own
    /// process, until stopped. Prints its bootstrap address on stdout.
    ///
    /// It honours transactions, fencing, CreateTopics and retention; it keeps
    /// everything in memory.
    ///
    /// Example: eddy dev-broker --port 9092 --topic input:3 --topic output:3
    DevBroker(DevBrokerArgs),

    /// Upload and list WebAssembly modules.
    ///
    /// Example: eddy module push target/plugins/wasm32-wasip2/release/uppercase.wasm
    #[command(subcommand)]
    Module(ModuleCommand),

    /// Deploy and operate pipelines.
    ///
    /// Example: eddy pipeline create shout --module uppercase.wasm --input lines --output lines-upper
    #[command(subcommand)]
    Pipeline(PipelineCommand),

    /// Ask a running daemon about itself: version, Kafka, memory.
    ///
    /// Example: eddy daemon info -o json
    #[command(subcommand)]
    Daemon(DaemonCommand),

    /// Read a pipeline's state (interactive queries).
    ///
    /// Example: eddy state get word-count hello
    #[command(subcommand)]
    State(StateCommand),

    /// Produce one record per line of stdin to a topic.
    ///
    /// Example: printf 'k1:hello\nk2:world\n' | eddy produce lines --key-separator :
    Produce(ProduceArgs),

    /// Print records of a topic, one per line.
    ///
    /// Example: eddy consume lines-upper --from-beginning --count 3
    Consume(ConsumeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML configuration file (flags and EDDY_* variables override it).
    #[arg(long, short = 'c', env = "EDDY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where modules, pipelines and state are kept.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The gRPC address to listen on (port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<String>,
    /// Kafka bootstrap servers; without them an embedded broker runs.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Create a topic in the embedded broker, as NAME:PARTITIONS (repeatable).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    pub topics: Vec<TopicSpec>,
    /// Consumer group session timeout, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub session_timeout: Option<Duration>,
    /// The URL other daemons reach this one's control plane at, to forward
    /// state queries to the owner of a key (default: http://LISTEN).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Memory for all pipelines' state stores together (RocksDB's block
    /// cache and write buffers), e.g. 256MiB (default 64MiB).
    #[arg(long, value_parser = parse_bytes)]
    pub state_memory: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Version, brokers, and where the memory is: the resident set, and the
    /// state stores' shared budget and what it holds.
    ///
    /// Example: eddy daemon info
    Info {
        #[command(flatten)]
        server: ServerArgs,
        /// Output format.
        #[arg(long = "format", short = 'o', value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, Args)]
pub struct DevBrokerArgs {
    /// Create a topic, as NAME:PARTITIONS (repeatable). Clients can also
    /// create topics (CreateTopics).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    pub topics: Vec<TopicSpec>,
    /// How much each partition keeps before the oldest data is deleted, e.g. 64MiB.
    #[arg(long, value_parser = parse_bytes, default_value = "1GiB")]
    pub retention: u64,
    /// Listen on 127.0.0.1:PORT instead of a free port.
    #[arg(long)]
    pub port: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Upload a module (.wasm component); prints its digest.
    ///
    /// Example: eddy module push target/plugins/wasm32-wasip2/release/uppercase.wasm
    Push {
        /// The .wasm file.
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        /// Output format.
        #[arg(long = "format", short = 'o', value_enum, default_value_t)]
        format: Format,
    },
    /// List uploaded modules.
    ///
    /// Example: eddy module list -o json
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Output format.
        #[arg(long = "format", short = 'o', value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StartArg {
    /// The oldest records still in the log.
    Earliest,
    /// Only records produced after creation.
    Latest,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GuaranteeArg {
    /// Nothing is lost; after a crash some outputs may be written twice.
    AtLeastOnce,
    /// Each commit interval is one Kafka transaction: read_committed
    /// readers see every output exactly once.
    ExactlyOnce,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnErrorArg {
    /// Stop the task and restart it with exponential backoff (1 s doubling
    /// to 1 min); nothing past the failing record is committed.
    Fail,
    /// Drop the records the guest fails on (counted and logged).
    Skip,
    /// Send them to NAME.dlq with their source and the error in headers.
    DeadLetter,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The pipeline's name.
    pub name: String,
    /// A .wasm file (uploaded first) or the digest of an uploaded module.
    /// Repeat it for a pipeline of several steps, in order: records between
    /// steps go through a repartition topic keyed by the previous step's keys.
    #[arg(long = "module", value_name = "FILE|DIGEST", required = true)]
    pub modules: Vec<String>,
    /// Input topic (repeatable).
    #[arg(long = "input", required = true)]
    pub inputs: Vec<String>,
    /// Default output topic.
    #[arg(long)]
    pub output: String,
    /// A named output a plugin can address, as NAME=TOPIC (repeatable).
    #[arg(long = "named-output", value_name = "NAME=TOPIC", value_parser = parse_pair)]
    pub named_outputs: Vec<(String, String)>,
    /// Configuration for the plugin, as KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub config: Vec<(String, String)>,
    /// Where the pipeline starts reading.
    #[arg(long = "from", value_enum, default_value = "earliest")]
    pub start_from: StartArg,
    /// The delivery guarantee.
    #[arg(long, value_enum, default_value = "at-least-once")]
    pub guarantee: GuaranteeArg,
    /// How often tasks commit, e.g. 1s (default 100ms). Tasks also commit
    /// when their input pauses.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub commit_interval: Option<Duration>,
    /// Exactly-once: how long a transaction may stay open before the broker
    /// aborts it, e.g. 60s (the default).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub transaction_timeout: Option<Duration>,
    /// What happens to a record the guest fails on: stop the task (fail),
    /// drop it (skip), or send it to the topic NAME.dlq (dead-letter).
    #[arg(long = "on-error", value_enum, default_value = "fail")]
    pub on_error: OnErrorArg,
    /// Memory cap per guest instance, e.g. 64MiB (default: the daemon's).
    #[arg(long, value_parser = parse_bytes)]
    pub memory: Option<u64>,
    /// Deadline per guest call in CPU time, e.g. 2s (default: the daemon's);
    /// a call also stops after twice this by the wall clock.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub call_timeout: Option<Duration>,
    /// Most records per guest call.
    #[arg(long)]
    pub max_batch: Option<u32>,
    /// How long to wait to fill a batch, e.g. 20ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub linger: Option<Duration>,
    /// Most records one guest call may emit; a call over it fails like a
    /// trap (default: the daemon's).
    #[arg(long)]
    pub max_output_records: Option<u32>,
    /// Most bytes one guest call may emit, e.g. 8MiB (default: the daemon's).
    #[arg(long, value_parser = parse_bytes)]
    pub max_output_bytes: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Deploy a pipeline.
    ///
    /// Example: eddy pipeline create errors --module filter.wasm --input logs --output errors --config pattern=ERROR
    Create {
        #[command(flatten)]
        args: Box<CreateArgs>,
        #[command(flatten)]
        server: ServerArgs,
        /// Output format.
        #[arg(long = "format", short = 'o', value_enum, default_value_t)]
        format: Format,
    },
    /// List pipelines.
    ///
    /// Example: eddy pipeline list
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Output format.
        #[arg(long = "format", short = 'o', value_enum, default_value_t)]
        format: Format,
    },
    /// Show a pipeline: per partition, committed offset, lag, records and errors.
    ///
    /// Example: eddy pipeline get errors -o json
    Get {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
        /// Output format.
        #[arg(long = "format", short = 'o', value_enum, default_value_t)]
        format: Format,
    },
    /// Stop consuming, keeping committed offsets.
    ///
    /// Example: eddy pipeline pause errors
    Pause {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resume a paused pipeline, or restart a failed one, from its committed offsets.
    ///
    /// Example: eddy pipeline resume errors
    Resume {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop and remove a pipeline.
    ///
    /// Example: eddy pipeline delete errors
    Delete {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the value of one key, read from the partition that owns it.
    ///
    /// Example: eddy state get word-count hello
    Get {
        /// The pipeline.
        pipeline: String,
        /// The key (UTF-8).
        key: String,
        /// Which step's state (default: the last step).
        #[arg(long)]
        step: Option<u32>,
        #[command(flatten)]
        server: ServerArgs,
        /// Output format.
        #[arg(long = "format", short = 'o', value_enum, default_value_t)]
        format: Format,
    },
    /// Print entries in key order, across all partitions.
    ///
    /// Example: eddy state scan word-count --prefix he --limit 20
    Scan {
        /// The pipeline.
        pipeline: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only keys after this one (to page through a large state).
        #[arg(long, default_value = "")]
        start_after: String,
        /// At most this many entries (at most 10000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Which step's state (default: the last step).
        #[arg(long)]
        step: Option<u32>,
        #[command(flatten)]
        server: ServerArgs,
        /// Output format.
        #[arg(long = "format", short = 'o', value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Kafka bootstrap servers; without them, the daemon's (asked over gRPC).
    #[arg(long, env = "EDDY_BROKERS")]
    pub brokers: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The topic.
    pub topic: String,
    /// Split each line at the first SEP into key and value (no key otherwise).
    #[arg(long, short = 'k', value_name = "SEP")]
    pub key_separator: Option<String>,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The topic.
    pub topic: String,
    /// Start at the oldest record instead of new ones.
    #[arg(long)]
    pub from_beginning: bool,
    /// Exit after this many records.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Exit if no record arrives for this long, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Print KEY<TAB>VALUE instead of the value.
    #[arg(long)]
    pub print_key: bool,
    /// text: the value per line; json: one JSON object per record.
    #[arg(long = "format", short = 'o', value_enum, default_value_t)]
    pub format: Format,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

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
        Command::Serve(_) | Command::DevBroker(_)
    ));
    let result = match cli.command {
        Command::Serve(args) => {
            match crate::config::ServeConfig::load(args.config.as_deref(), overrides(&args)) {
                Ok(config) => crate::daemon::serve(config, args.topics).await,
                Err(e) => Err(e),
            }
        }
        Command::DevBroker(args) => {
            crate::daemon::dev_broker(args.topics, args.retention, args.port).await
        }
        Command::Module(m) => run_client(ClientCommand::Module(m)).await,
        Command::Pipeline(p) => run_client(ClientCommand::Pipeline(p)).await,
        Command::State(q) => run_client(ClientCommand::State(q)).await,
        Command::Daemon(d) => run_client(ClientCommand::Daemon(d)).await,
        Command::Produce(args) => produce(args).await,
        Command::Consume(args) => consume(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Parses sizes like `64MiB`, `512KiB`, `1GB`, `1048576`.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 64MiB)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB, GiB)")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_pairs_parse() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("12 parsecs").is_err());
        assert_eq!(parse_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_pair("=x").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}

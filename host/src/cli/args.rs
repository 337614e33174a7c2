//! The command line's definition: every verb, its flags and their help
//! (clap derive), and the parsers of flag values.

use crate::kafka::TopicSpec;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// eddy runs WebAssembly stream processors on Kafka partitions.
#[derive(Debug, Parser)]
#[command(name = "eddy", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
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
    /// The token the daemon knows this caller by, when it requires one.
    #[arg(long, env = "EDDY_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// For an https:// server: the CA its certificate is checked against
    /// (default: the system's CAs).
    #[arg(long, env = "EDDY_TLS_CA", global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// For a server that requires client certificates (mutual TLS): this
    /// client's certificate, in PEM.
    #[arg(
        long,
        env = "EDDY_TLS_CERT",
        global = true,
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, in PEM.
    #[arg(
        long,
        env = "EDDY_TLS_KEY",
        global = true,
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
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
pub(crate) enum Command {
    /// Run the daemon: consume, process and produce for every pipeline.
    ///
    /// With no brokers configured, an embedded Kafka-protocol broker starts in
    /// the same process and its bootstrap address is printed; it keeps its
    /// topics and offsets in the data directory, so a restart resumes.
    ///
    /// Example: eddy serve --topic lines:3 --topic lines-upper:3
    Serve(ServeArgs),

    /// Run a Kafka-protocol broker for development and tests, in its own
    /// process, until stopped. Prints its bootstrap address on stdout.
    ///
    /// It honours transactions, fencing, CreateTopics and retention; it keeps
    /// everything in memory, or with --data in a folder it resumes from.
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

    /// The process guests that failed a call run in; the daemon starts it.
    #[command(hide = true)]
    GuestWorker(GuestWorkerArgs),
}

/// What the daemon starts its guest worker with.
#[derive(Debug, Args)]
pub(crate) struct GuestWorkerArgs {
    /// The abstract Unix socket name to listen on.
    #[arg(long)]
    pub(crate) listen: String,
    /// The daemon's module store.
    #[arg(long)]
    pub(crate) modules: PathBuf,
    /// The daemon's compiled-module cache.
    #[arg(long)]
    pub(crate) compiled: PathBuf,
    /// The largest linear memory any guest may have.
    #[arg(long)]
    pub(crate) max_memory_bytes: u64,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// A TOML configuration file (flags and EDDY_* variables override it).
    #[arg(long, short = 'c', env = "EDDY_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Where modules, pipelines and state are kept.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// The gRPC address to listen on (port 0 picks a free port).
    #[arg(long)]
    pub(crate) listen: Option<String>,
    /// Kafka bootstrap servers; without them an embedded broker runs.
    #[arg(long)]
    pub(crate) brokers: Option<String>,
    /// Create a topic in the embedded broker, as NAME:PARTITIONS (repeatable).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    pub(crate) topics: Vec<TopicSpec>,
    /// Consumer group session timeout, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) session_timeout: Option<Duration>,
    /// The URL other daemons reach this one's control plane at, to forward
    /// state queries to the owner of a key (default: http://LISTEN).
    #[arg(long)]
    pub(crate) advertise: Option<String>,
    /// Memory for all pipelines' state stores together (RocksDB's block
    /// cache and write buffers), e.g. 256MiB (default 64MiB).
    #[arg(long, value_parser = parse_bytes)]
    pub(crate) state_memory: Option<u64>,
    /// A file holding the secret every daemon of the cluster shares (at
    /// least 16 bytes, e.g. `openssl rand -hex 32`): registry records are
    /// signed with it, and records without its signature are ignored. Or
    /// set EDDY_CLUSTER_SECRET to the secret itself.
    #[arg(long, value_name = "FILE")]
    pub(crate) cluster_secret_file: Option<PathBuf>,
    /// Serve the control plane without tokens beyond loopback, where anyone
    /// who reaches it may do anything: only on a network nobody else
    /// reaches.
    #[arg(long)]
    pub(crate) anonymous_control_plane: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DaemonCommand {
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
pub(crate) struct DevBrokerArgs {
    /// Create a topic, as NAME:PARTITIONS (repeatable). Clients can also
    /// create topics (CreateTopics).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    pub(crate) topics: Vec<TopicSpec>,
    /// How much each partition keeps before the oldest data is deleted, e.g. 64MiB.
    #[arg(long, value_parser = parse_bytes, default_value = "1GiB")]
    pub(crate) retention: u64,
    /// Listen on 127.0.0.1:PORT instead of a free port.
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// Keep topics, logs and committed offsets in DIR, and resume from what
    /// an earlier broker kept there; in memory only without it.
    #[arg(long, value_name = "DIR")]
    pub(crate) data: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ModuleCommand {
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
    /// Delete a module no pipeline runs, on every daemon (admins only).
    ///
    /// Example: eddy module delete sha256:3f2a...
    Delete {
        /// The module's digest, or a unique prefix of its hex (6 or more).
        digest: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum StartArg {
    /// The oldest records still in the log.
    Earliest,
    /// Only records produced after creation.
    Latest,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GuaranteeArg {
    /// Nothing is lost; after a crash some outputs may be written twice.
    AtLeastOnce,
    /// Each commit interval is one Kafka transaction: read_committed
    /// readers see every output exactly once.
    ExactlyOnce,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OnErrorArg {
    /// Stop the task and restart it with exponential backoff (1 s doubling
    /// to 1 min); nothing past the failing record is committed.
    Fail,
    /// Drop the records the guest fails on (counted and logged).
    Skip,
    /// Send them to NAME.dlq with their source and the error in headers.
    DeadLetter,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The pipeline's name.
    pub(crate) name: String,
    /// A .wasm file (uploaded first) or the digest of an uploaded module.
    /// Repeat it for a pipeline of several steps, in order: records between
    /// steps go through a repartition topic keyed by the previous step's keys.
    #[arg(long = "module", value_name = "FILE|DIGEST", required = true)]
    pub(crate) modules: Vec<String>,
    /// Input topic (repeatable).
    #[arg(long = "input", required = true)]
    pub(crate) inputs: Vec<String>,
    /// Default output topic.
    #[arg(long)]
    pub(crate) output: String,
    /// A named output a plugin can address, as NAME=TOPIC (repeatable).
    #[arg(long = "named-output", value_name = "NAME=TOPIC", value_parser = parse_pair)]
    pub(crate) named_outputs: Vec<(String, String)>,
    /// Configuration for the plugin, as KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub(crate) config: Vec<(String, String)>,
    /// Where the pipeline starts reading.
    #[arg(long = "from", value_enum, default_value = "earliest")]
    pub(crate) start_from: StartArg,
    /// The delivery guarantee.
    #[arg(long, value_enum, default_value = "at-least-once")]
    pub(crate) guarantee: GuaranteeArg,
    /// How often tasks commit, e.g. 1s (default 100ms). Tasks also commit
    /// when their input pauses.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) commit_interval: Option<Duration>,
    /// Exactly-once: how long a transaction may stay open before the broker
    /// aborts it, e.g. 60s (the default).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) transaction_timeout: Option<Duration>,
    /// How many daemons besides each partition's owner keep a warm copy of
    /// its state (following its changelog), so a partition whose owner
    /// died restores in seconds on a daemon that has one (default 0).
    #[arg(long, default_value_t = 0)]
    pub(crate) standby_replicas: u32,
    /// What happens to a record the guest fails on: stop the task (fail),
    /// drop it (skip), or send it to the dead-letter topic (dead-letter).
    #[arg(long = "on-error", value_enum, default_value = "fail")]
    pub(crate) on_error: OnErrorArg,
    /// With --on-error dead-letter: the topic failed records go to, which
    /// must exist (default: NAME.dlq, created by eddy).
    #[arg(long, value_name = "TOPIC")]
    pub(crate) dead_letter_topic: Option<String>,
    /// Memory cap per guest instance, e.g. 64MiB (default: the daemon's).
    #[arg(long, value_parser = parse_bytes)]
    pub(crate) memory: Option<u64>,
    /// Deadline per guest call in CPU time, e.g. 2s (default: the daemon's);
    /// a call also stops after twice this by the wall clock.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) call_timeout: Option<Duration>,
    /// Most records per guest call.
    #[arg(long)]
    pub(crate) max_batch: Option<u32>,
    /// How long to wait to fill a batch, e.g. 20ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) linger: Option<Duration>,
    /// Most records one guest call may emit; a call over it fails like a
    /// trap (default: the daemon's).
    #[arg(long)]
    pub(crate) max_output_records: Option<u32>,
    /// Most bytes one guest call may emit, e.g. 8MiB (default: the daemon's).
    #[arg(long, value_parser = parse_bytes)]
    pub(crate) max_output_bytes: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PipelineCommand {
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
pub(crate) enum StateCommand {
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
pub(crate) struct BrokerArgs {
    /// Kafka bootstrap servers; without them, the daemon's (asked over gRPC).
    #[arg(long, env = "EDDY_BROKERS")]
    pub(crate) brokers: Option<String>,
    /// A daemon configuration file: its `brokers` (unless --brokers is
    /// given) and its [kafka] table (security protocol, credentials,
    /// certificates) say how to reach Kafka, as they do for `eddy serve`.
    #[arg(long, short = 'c', env = "EDDY_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// The topic.
    pub(crate) topic: String,
    /// Split each line at the first SEP into key and value (no key otherwise).
    #[arg(long, short = 'k', value_name = "SEP")]
    pub(crate) key_separator: Option<String>,
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// The topic.
    pub(crate) topic: String,
    /// Start at the oldest record instead of new ones.
    #[arg(long)]
    pub(crate) from_beginning: bool,
    /// Exit after this many records.
    #[arg(long, short = 'n')]
    pub(crate) count: Option<u64>,
    /// Exit if no record arrives for this long, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) idle_timeout: Option<Duration>,
    /// Print KEY<TAB>VALUE instead of the value.
    #[arg(long)]
    pub(crate) print_key: bool,
    /// text: the value per line; json: one JSON object per record.
    #[arg(long = "format", short = 'o', value_enum, default_value_t)]
    pub(crate) format: Format,
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
}

pub(super) fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Parses sizes like `64MiB`, `512KiB`, `1GB`, `1048576`.
pub(super) fn parse_bytes(s: &str) -> Result<u64, String> {
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

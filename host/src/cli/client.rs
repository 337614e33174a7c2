//! Client verbs: talk to a daemon's control plane.

use super::args::{
    CreateArgs, DaemonCommand, GuaranteeArg, ModuleCommand, OnErrorArg, PipelineCommand,
    ServerArgs, StartArg, StateCommand,
};
use super::output::{
    print_daemon_info, print_entries, print_module, print_modules, print_pipeline, print_pipelines,
};
use anyhow::{Context as _, bail};
use eddy_proto::v1::{
    self, module_service_client::ModuleServiceClient,
    pipeline_service_client::PipelineServiceClient, upload_module_request::Part,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal as _;
use std::path::Path;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Upload chunk size: well under gRPC's default 4 MiB message limit.
const CHUNK: usize = 256 << 10;

/// A connection to the daemon that presents the caller's token, if any.
type Daemon = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

async fn connect(server: &ServerArgs) -> anyhow::Result<Daemon> {
    let bearer = server
        .token
        .as_deref()
        .map(|token| format!("Bearer {}", token.trim()).parse())
        .transpose()
        .context("the token has characters a header cannot carry")?;
    let mut endpoint = tonic::transport::Endpoint::from_shared(server.server.clone())
        .with_context(|| format!("`{}` is not a valid server address", server.server))?;
    let identity = server.tls_cert.as_deref().zip(server.tls_key.as_deref());
    if server.server.starts_with("https://") {
        endpoint = endpoint
            .tls_config(crate::control::client_config(
                server.tls_ca.as_deref(),
                identity,
            )?)
            .context("TLS cannot be set up")?;
    } else if server.tls_ca.is_some() || identity.is_some() {
        bail!(
            "--tls-ca, --tls-cert and --tls-key are for an https:// server, and {} is not one",
            server.server
        );
    }
    let channel = endpoint.connect().await.map_err(|e| {
        // The transport error alone says "transport error"; its causes say
        // which handshake or connection failed.
        let why = format!("{:#}", anyhow::Error::new(e));
        anyhow::anyhow!(
            "could not reach the eddy daemon at {} ({why}). Is `eddy serve` running there? Set \
             --server or EDDY_SERVER; a daemon with [control-tls] is at https://, and its \
             certificate is checked against --tls-ca",
            server.server
        )
    })?;
    Ok(InterceptedService::new(channel, Bearer(bearer)))
}

/// Turns a gRPC status into an error that shows the daemon's message.
fn rpc(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", status.message(), status.code())
}

/// Runs a `module` or `pipeline` verb.
pub(super) async fn run_client(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Module(m) => run_module(m).await,
        ClientCommand::Pipeline(p) => run_pipeline(p).await,
        ClientCommand::State(q) => run_state(q).await,
        ClientCommand::Daemon(DaemonCommand::Info { server, format }) => {
            let info = daemon_info(&server).await?;
            print_daemon_info(&info, format)
        }
    }
}

async fn run_state(command: StateCommand) -> anyhow::Result<()> {
    use v1::query_state_request::Query;
    let (server, format, request) = match command {
        StateCommand::Get {
            pipeline,
            key,
            step,
            server,
            format,
        } => (
            server,
            format,
            v1::QueryStateRequest {
                pipeline,
                step,
                query: Some(Query::Key(key.into_bytes())),
            },
        ),
        StateCommand::Scan {
            pipeline,
            prefix,
            start_after,
            limit,
            step,
            server,
            format,
        } => (
            server,
            format,
            v1::QueryStateRequest {
                pipeline,
                step,
                query: Some(Query::Scan(v1::StateScan {
                    prefix: prefix.into_bytes(),
                    start_after: start_after.into_bytes(),
                    limit,
                })),
            },
        ),
    };
    let is_get = matches!(request.query, Some(Query::Key(_)));
    let response = pipelines(&server)
        .await?
        .query_state(request)
        .await
        .map_err(rpc)?
        .into_inner();
    if is_get && response.entries.is_empty() {
        bail!("no such key");
    }
    print_entries(&response, is_get, format)
}

/// The verbs that need a daemon.
pub(super) enum ClientCommand {
    /// `eddy module ...`
    Module(ModuleCommand),
    /// `eddy pipeline ...`
    Pipeline(PipelineCommand),
    /// `eddy state ...`
    State(StateCommand),
    /// `eddy daemon ...`
    Daemon(DaemonCommand),
}

async fn run_module(command: ModuleCommand) -> anyhow::Result<()> {
    match command {
        ModuleCommand::Push {
            file,
            server,
            format,
        } => {
            let channel = connect(&server).await?;
            let module = push(channel, &file).await?;
            print_module(&module, format)
        }
        ModuleCommand::List { server, format } => {
            let mut client = ModuleServiceClient::new(connect(&server).await?);
            let modules = client
                .list_modules(v1::ListModulesRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .modules;
            print_modules(&modules, format)
        }
        ModuleCommand::Delete { digest, server } => {
            let mut client = ModuleServiceClient::new(connect(&server).await?);
            let deleted = client
                .delete_module(v1::DeleteModuleRequest { digest })
                .await
                .map_err(rpc)?
                .into_inner()
                .digest;
            println!("deleted {deleted}");
            Ok(())
        }
    }
}

/// Uploads a file, with a progress bar when stderr is a terminal.
async fn push(channel: Daemon, file: &Path) -> anyhow::Result<v1::Module> {
    let bytes = tokio::fs::read(file)
        .await
        .with_context(|| format!("could not read {}", file.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(bytes.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(format!("uploading {name}"));
        bar
    } else {
        ProgressBar::hidden()
    };
    let size = bytes.len() as u64;
    let mut messages = vec![v1::UploadModuleRequest {
        part: Some(Part::Metadata(v1::ModuleMetadata { name, size })),
    }];
    messages.extend(bytes.chunks(CHUNK).map(|c| v1::UploadModuleRequest {
        part: Some(Part::Chunk(c.to_vec())),
    }));
    let bar = progress.clone();
    let stream = tokio_stream::iter(messages).map(move |m| {
        if let Some(Part::Chunk(c)) = &m.part {
            bar.inc(c.len() as u64);
        }
        m
    });
    let result = ModuleServiceClient::new(channel)
        .upload_module(stream)
        .await;
    progress.finish_and_clear();
    let response = result.map_err(rpc)?.into_inner();
    response
        .module
        .context("the daemon answered without a module")
}

use tokio_stream::StreamExt as _;

fn spec(args: CreateArgs, modules: Vec<String>) -> v1::PipelineSpec {
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    v1::PipelineSpec {
        name: args.name,
        steps: modules
            .into_iter()
            .map(|module| v1::Step { module })
            .collect(),
        inputs: args.inputs,
        output: args.output,
        named_outputs: args.named_outputs.into_iter().collect(),
        config: args.config.into_iter().collect(),
        start_from: match args.start_from {
            StartArg::Earliest => v1::StartPosition::Earliest,
            StartArg::Latest => v1::StartPosition::Latest,
        } as i32,
        guarantee: match args.guarantee {
            GuaranteeArg::AtLeastOnce => v1::Guarantee::AtLeastOnce,
            GuaranteeArg::ExactlyOnce => v1::Guarantee::ExactlyOnce,
        } as i32,
        commit_interval_ms: args.commit_interval.map_or(0, millis),
        transaction_timeout_ms: args.transaction_timeout.map_or(0, millis),
        standby_replicas: args.standby_replicas,
        dead_letter_topic: args.dead_letter_topic.unwrap_or_default(),
        error_policy: match args.on_error {
            OnErrorArg::Fail => v1::ErrorPolicy::Fail,
            OnErrorArg::Skip => v1::ErrorPolicy::Skip,
            OnErrorArg::DeadLetter => v1::ErrorPolicy::DeadLetter,
        } as i32,
        limits: Some(v1::Limits {
            memory_bytes: args.memory.unwrap_or(0),
            call_timeout_ms: args.call_timeout.map_or(0, millis),
            max_batch_records: args.max_batch.unwrap_or(0),
            batch_linger_ms: args.linger.map_or(0, millis),
            max_output_records: args.max_output_records.unwrap_or(0),
            max_output_bytes: args.max_output_bytes.unwrap_or(0),
        }),
    }
}

async fn run_pipeline(command: PipelineCommand) -> anyhow::Result<()> {
    match command {
        PipelineCommand::Create {
            args,
            server,
            format,
        } => {
            let channel = connect(&server).await?;
            let mut modules = Vec::with_capacity(args.modules.len());
            for module in &args.modules {
                let path = Path::new(module);
                modules.push(if path.is_file() {
                    push(channel.clone(), path).await?.digest
                } else if module.ends_with(".wasm") {
                    bail!("module file {module} does not exist");
                } else {
                    module.clone()
                });
            }
            let mut client = PipelineServiceClient::new(channel);
            let pipeline = client
                .create_pipeline(v1::CreatePipelineRequest {
                    spec: Some(spec(*args, modules)),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            print_pipeline(&pipeline, format)
        }
        PipelineCommand::List { server, format } => {
            let pipelines = pipelines(&server)
                .await?
                .list_pipelines(v1::ListPipelinesRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .pipelines;
            print_pipelines(&pipelines, format)
        }
        PipelineCommand::Get {
            name,
            server,
            format,
        } => {
            let pipeline = pipelines(&server)
                .await?
                .get_pipeline(v1::GetPipelineRequest { name })
                .await
                .map_err(rpc)?
                .into_inner();
            print_pipeline(&pipeline, format)
        }
        PipelineCommand::Pause { name, server } => {
            let request = v1::PausePipelineRequest { name: name.clone() };
            pipelines(&server)
                .await?
                .pause_pipeline(request)
                .await
                .map_err(rpc)?;
            println!("paused {name}");
            Ok(())
        }
        PipelineCommand::Resume { name, server } => {
            let request = v1::ResumePipelineRequest { name: name.clone() };
            pipelines(&server)
                .await?
                .resume_pipeline(request)
                .await
                .map_err(rpc)?;
            println!("resumed {name}");
            Ok(())
        }
        PipelineCommand::Delete { name, server } => {
            let request = v1::DeletePipelineRequest { name: name.clone() };
            pipelines(&server)
                .await?
                .delete_pipeline(request)
                .await
                .map_err(rpc)?;
            println!("deleted {name}");
            Ok(())
        }
    }
}

async fn pipelines(server: &ServerArgs) -> anyhow::Result<PipelineServiceClient<Daemon>> {
    Ok(PipelineServiceClient::new(connect(server).await?))
}

async fn daemon_info(server: &ServerArgs) -> anyhow::Result<v1::DaemonInfo> {
    let mut client = v1::daemon_service_client::DaemonServiceClient::new(connect(server).await?);
    Ok(client
        .get_info(v1::GetInfoRequest {})
        .await
        .map_err(rpc)?
        .into_inner())
}

/// Asks the daemon which Kafka it uses.
pub(super) async fn daemon_brokers(server: &ServerArgs) -> anyhow::Result<String> {
    Ok(daemon_info(server).await?.brokers)
}

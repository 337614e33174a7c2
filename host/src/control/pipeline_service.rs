//! The pipeline service: each request read into the pipeline layer's
//! types, run on a blocking thread, and its answer written back.

use super::auth::{Access, same_secret};
use super::convert;
use super::tls::client_tls;
use crate::pipeline::{InternalNames, ManagerError, PipelineManager, StateRead};
use crate::runtime::ModuleError;
use eddy_proto::v1::pipeline_service_client::PipelineServiceClient;
use eddy_proto::v1::{self, pipeline_service_server::PipelineService};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Pipeline operations, each run on a blocking thread (they talk to Kafka
/// and wait for tasks to commit).
pub struct PipelineServiceImpl {
    /// The manager.
    pub manager: Arc<PipelineManager>,
    /// Who may do what.
    pub access: Arc<Access>,
    /// What a daemon of this cluster sends with a query it forwards
    /// (derived from the cluster secret); `None` without a secret, when a
    /// forwarded query cannot be told from a client's.
    pub peer_proof: Option<String>,
    /// How to reach another daemon's `https://` control plane: its CA, and
    /// this daemon's certificate for those that require one.
    pub peer_tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The gRPC status of a manager error.
pub(super) fn status(error: ManagerError) -> Status {
    let message = error.to_string();
    match error {
        ManagerError::NotFound(_) | ManagerError::ModuleNotFound(_) => Status::not_found(message),
        ManagerError::AlreadyExists(_) => Status::already_exists(message),
        ManagerError::InvalidSpec(_) | ManagerError::Module(ModuleError::Invalid(_)) => {
            Status::invalid_argument(message)
        }
        ManagerError::Unavailable(_) => Status::unavailable(message),
        ManagerError::Quota(_) => Status::resource_exhausted(message),
        ManagerError::Precondition(_) => Status::failed_precondition(message),
        ManagerError::Module(ModuleError::Io(_)) | ManagerError::Internal(_) => {
            Status::internal(message)
        }
    }
}

impl PipelineServiceImpl {
    /// Whether `request` is a query another daemon forwarded (answered
    /// from this daemon's partitions only). With a cluster secret, only a
    /// daemon of this cluster may say so: anyone else would get a partial
    /// answer passed off as whole.
    fn forwarded<T>(&self, request: &Request<T>) -> Result<bool, Status> {
        let metadata = request.metadata();
        if !metadata.contains_key(FORWARDED) {
            return Ok(false);
        }
        let Some(expected) = &self.peer_proof else {
            return Ok(true);
        };
        let proof = metadata
            .get(PEER_PROOF)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if same_secret(proof.as_bytes(), expected.as_bytes()) {
            Ok(true)
        } else {
            Err(Status::permission_denied(
                "a forwarded state query must come from a daemon of this cluster (one with its \
                 cluster secret); query without the eddy-forwarded header",
            ))
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PipelineManager) -> Result<T, ManagerError> + Send + 'static,
    ) -> Result<T, Status> {
        let manager = self.manager.clone();
        tokio::task::spawn_blocking(move || f(&manager))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)
    }
}

#[tonic::async_trait]
impl PipelineService for PipelineServiceImpl {
    async fn create_pipeline(
        &self,
        request: Request<v1::CreatePipelineRequest>,
    ) -> Result<Response<v1::Pipeline>, Status> {
        let caller = self.access.caller(&request)?;
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no spec"))?;
        caller.may_change(&spec.name)?;
        let dead_letter = (spec.error_policy == v1::ErrorPolicy::DeadLetter as i32).then(|| {
            if spec.dead_letter_topic.is_empty() {
                // The group prefix plays no part in this name.
                InternalNames {
                    prefix: "",
                    pipeline: &spec.name,
                }
                .dead_letter()
            } else {
                spec.dead_letter_topic.clone()
            }
        });
        for topic in spec
            .inputs
            .iter()
            .chain(std::iter::once(&spec.output))
            .chain(spec.named_outputs.values())
            .chain(dead_letter.as_ref())
        {
            caller.may_use_topic(topic)?;
        }
        let request = convert::spec_request(spec).map_err(|e| status(e.into()))?;
        let view = self.run(move |m| m.create(request)).await?;
        Ok(Response::new(convert::pipeline(view)))
    }

    async fn get_pipeline(
        &self,
        request: Request<v1::GetPipelineRequest>,
    ) -> Result<Response<v1::Pipeline>, Status> {
        self.access.caller(&request)?.may_read()?;
        let name = request.into_inner().name;
        let view = self.run(move |m| m.get(&name)).await?;
        Ok(Response::new(convert::pipeline(view)))
    }

    async fn list_pipelines(
        &self,
        request: Request<v1::ListPipelinesRequest>,
    ) -> Result<Response<v1::ListPipelinesResponse>, Status> {
        self.access.caller(&request)?.may_read()?;
        let views = self.run(PipelineManager::list).await?;
        Ok(Response::new(v1::ListPipelinesResponse {
            pipelines: views.into_iter().map(convert::pipeline).collect(),
        }))
    }

    async fn pause_pipeline(
        &self,
        request: Request<v1::PausePipelineRequest>,
    ) -> Result<Response<v1::Pipeline>, Status> {
        let caller = self.access.caller(&request)?;
        let name = request.into_inner().name;
        caller.may_change(&name)?;
        let view = self.run(move |m| m.pause(&name)).await?;
        Ok(Response::new(convert::pipeline(view)))
    }

    async fn resume_pipeline(
        &self,
        request: Request<v1::ResumePipelineRequest>,
    ) -> Result<Response<v1::Pipeline>, Status> {
        let caller = self.access.caller(&request)?;
        let name = request.into_inner().name;
        caller.may_change(&name)?;
        let view = self.run(move |m| m.resume(&name)).await?;
        Ok(Response::new(convert::pipeline(view)))
    }

    async fn delete_pipeline(
        &self,
        request: Request<v1::DeletePipelineRequest>,
    ) -> Result<Response<v1::DeletePipelineResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let name = request.into_inner().name;
        caller.may_change(&name)?;
        self.run(move |m| m.delete(&name)).await?;
        Ok(Response::new(v1::DeletePipelineResponse {}))
    }

    /// Answers from the partitions this daemon owns, and asks the other
    /// daemons (forwarded, so they answer from theirs only) for the rest.
    async fn query_state(
        &self,
        request: Request<v1::QueryStateRequest>,
    ) -> Result<Response<v1::QueryStateResponse>, Status> {
        let forwarded = self.forwarded(&request)?;
        // A query forwarded with this cluster's proof comes from a daemon
        // that has checked its caller; any other needs a caller of its own.
        if !(forwarded && self.peer_proof.is_some()) {
            self.access.caller(&request)?.may_read()?;
        }
        let authorization = request.metadata().get("authorization").cloned();
        let request = request.into_inner();
        let query = convert::query(&request).map_err(|e| status(e.into()))?;
        let limit = match &query.read {
            StateRead::Scan(scan) => Some(scan.limit()),
            StateRead::Key(_) => None,
        };
        let local = self.run(move |m| m.query_state(query)).await?;
        let needed: Vec<v1::StatePartition> = local.needed.iter().map(convert::partition).collect();
        let local = convert::answer(local.answer);
        // A lookup found here is complete; anything else needs every
        // partition of the step read, here or by the other daemons.
        let found_key = limit.is_none() && !local.entries.is_empty();
        if forwarded || found_key || missing(&needed, std::slice::from_ref(&local)).is_empty() {
            return Ok(Response::new(merge(limit, vec![local])));
        }
        let peers = self.manager.peers();
        let answers = futures::future::join_all(peers.iter().map(|url| {
            ask_peer(
                url.clone(),
                request.clone(),
                authorization.clone(),
                self.peer_proof.clone(),
                self.peer_tls.clone(),
            )
        }))
        .await;
        let mut responses = vec![local];
        let mut errors = Vec::new();
        for (url, answer) in peers.iter().zip(answers) {
            match answer {
                Ok(response) => responses.push(response),
                Err(e) => errors.push(format!("{url}: {}", e.message())),
            }
        }
        let found_key = limit.is_none() && responses.iter().any(|r| !r.entries.is_empty());
        let missing = missing(&needed, &responses);
        if !found_key && !missing.is_empty() {
            let errors = if errors.is_empty() {
                String::new()
            } else {
                format!(" (errors: {})", errors.join("; "))
            };
            return Err(Status::unavailable(format!(
                "partitions {} of pipeline `{}` are not running on any daemon that answered \
                 (moving in a rebalance, or their daemon is down); try again shortly{errors}",
                missing.join(", "),
                request.pipeline
            )));
        }
        Ok(Response::new(merge(limit, responses)))
    }
}

/// Marks a state query one daemon forwards to another: answer from your
/// own partitions only, never forward again.
const FORWARDED: &str = "eddy-forwarded";

/// Proves a forwarded query comes from a daemon of this cluster.
const PEER_PROOF: &str = "eddy-peer";

/// Asks the daemon at `url` for what its partitions hold, with the
/// caller's token and this daemon's proof of membership.
async fn ask_peer(
    url: String,
    request: v1::QueryStateRequest,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    peer_proof: Option<String>,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<v1::QueryStateResponse, Status> {
    let https = url.starts_with("https://");
    let mut endpoint = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| Status::internal(e.to_string()))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30));
    if https {
        let tls = tls.unwrap_or_else(|| client_tls(None, None));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Status::internal(format!("TLS to a peer: {e}")))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("unreachable: {e}")))?;
    let mut request = Request::new(request);
    let metadata = request.metadata_mut();
    metadata.insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    if let Some(authorization) = authorization {
        metadata.insert("authorization", authorization);
    }
    if let Some(proof) = peer_proof.and_then(|p| p.parse().ok()) {
        metadata.insert(PEER_PROOF, proof);
    }
    PipelineServiceClient::new(channel)
        .query_state(request)
        .await
        .map(Response::into_inner)
}

/// The needed partitions no response read, as `topic/partition`.
fn missing(needed: &[v1::StatePartition], responses: &[v1::QueryStateResponse]) -> Vec<String> {
    needed
        .iter()
        .filter(|p| !responses.iter().any(|r| r.partitions_read.contains(p)))
        .map(|p| format!("{}/{}", p.topic, p.partition))
        .collect()
}

/// One answer from several daemons' answers: entries in key order (a
/// partition read twice while it moved counts once), a scan cut at its
/// limit (`Some`), a lookup's first match (`None`).
fn merge(
    scan_limit: Option<usize>,
    responses: Vec<v1::QueryStateResponse>,
) -> v1::QueryStateResponse {
    let mut more = false;
    let mut entries = Vec::new();
    let mut partitions_read: Vec<v1::StatePartition> = Vec::new();
    for response in responses {
        more |= response.more;
        for p in response.partitions_read {
            if !partitions_read.contains(&p) {
                partitions_read.push(p);
            }
        }
        entries.extend(response.entries);
    }
    entries.sort_by(|a, b| (&a.key, &a.topic, a.partition).cmp(&(&b.key, &b.topic, b.partition)));
    entries.dedup_by(|a, b| a.key == b.key && a.topic == b.topic && a.partition == b.partition);
    let limit = scan_limit.unwrap_or(1);
    more |= entries.len() > limit;
    entries.truncate(limit);
    v1::QueryStateResponse {
        entries,
        more: more && scan_limit.is_some(),
        partitions_read,
    }
}

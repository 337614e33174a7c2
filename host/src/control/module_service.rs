use super::auth::Access;
use crate::modules::{ModuleInfo, ModuleStore, digest_of};
use crate::pipeline::PipelineManager;
use crate::runtime::ModuleError;
use crate::task::TaskRuntime;
use eddy_proto::v1::{self, module_service_server::ModuleService, upload_module_request::Part};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

/// Module upload and listing.
pub struct ModuleServiceImpl {
    /// The engine that validates uploads.
    pub runtime: Arc<TaskRuntime>,
    /// Where modules are stored.
    pub store: Arc<ModuleStore>,
    /// The largest module accepted.
    pub max_bytes: u64,
    /// How long an upload may send nothing before it is cut off, so a
    /// client that opens uploads and stalls cannot hold memory and
    /// connections for ever.
    pub idle_timeout: Duration,
    /// Compiles at once: compiling is the costliest thing a client can
    /// ask for, and takes a core for seconds.
    pub compiles: Arc<Semaphore>,
    /// Who may upload and list.
    pub access: Arc<Access>,
    /// Most modules stored, and most bytes of them (the daemon's quotas).
    pub quota: (u32, u64),
    /// Deletes modules no pipeline runs, everywhere.
    pub manager: Arc<PipelineManager>,
}

fn to_proto(m: ModuleInfo) -> v1::Module {
    v1::Module {
        digest: m.digest,
        size: m.size,
        name: m.name,
        world: m.world,
        uploaded_at_ms: m.uploaded_at_ms,
    }
}

impl ModuleServiceImpl {
    /// The next message of an upload, or DEADLINE_EXCEEDED once it sent
    /// nothing for the idle timeout.
    async fn next_message(
        &self,
        stream: &mut Streaming<v1::UploadModuleRequest>,
    ) -> Result<Option<v1::UploadModuleRequest>, Status> {
        tokio::time::timeout(self.idle_timeout, stream.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the upload sent nothing for {:?} (upload-idle-timeout) and was cut off; \
                     send the module again",
                    self.idle_timeout
                ))
            })?
    }

    /// Refuses a new module (`bytes`, of `digest`) that would take the
    /// store past its quotas.
    fn within_quota(&self, digest: &str, bytes: &[u8]) -> Result<(), Status> {
        if self.store.info(digest).is_ok() {
            return Ok(());
        }
        let (count, total) = self
            .store
            .usage()
            .map_err(|e| Status::internal(e.to_string()))?;
        let (max_modules, max_bytes) = self.quota;
        let advice = "delete modules no pipeline runs with `eddy module delete DIGEST`";
        if count >= max_modules as usize {
            return Err(Status::resource_exhausted(format!(
                "this daemon stores {count} modules, the most quotas.max-modules allows; {advice}"
            )));
        }
        if total + bytes.len() as u64 > max_bytes {
            return Err(Status::resource_exhausted(format!(
                "this module's {} bytes would take the daemon's modules past the {max_bytes} \
                 bytes quotas.max-module-store-bytes allows ({total} stored); {advice}",
                bytes.len()
            )));
        }
        Ok(())
    }

    fn too_large(&self, size: u64) -> Status {
        Status::resource_exhausted(format!(
            "module of {size} bytes exceeds the daemon's limit of {} bytes \
             (limits.max-module-bytes); build it in release mode or raise the limit",
            self.max_bytes
        ))
    }
}

#[tonic::async_trait]
impl ModuleService for ModuleServiceImpl {
    async fn upload_module(
        &self,
        request: Request<Streaming<v1::UploadModuleRequest>>,
    ) -> Result<Response<v1::UploadModuleResponse>, Status> {
        self.access.caller(&request)?.may_upload()?;
        let mut stream = request.into_inner();
        let metadata = match self.next_message(&mut stream).await? {
            Some(v1::UploadModuleRequest {
                part: Some(Part::Metadata(m)),
            }) => m,
            _ => {
                return Err(Status::invalid_argument(
                    "the first upload message must carry the module's metadata",
                ));
            }
        };
        if metadata.size > self.max_bytes {
            return Err(self.too_large(metadata.size));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(metadata.size).unwrap_or(0));
        while let Some(message) = self.next_message(&mut stream).await? {
            match message.part {
                Some(Part::Chunk(chunk)) => {
                    let size = (bytes.len() + chunk.len()) as u64;
                    if size > self.max_bytes {
                        return Err(self.too_large(size));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                _ => {
                    return Err(Status::invalid_argument(
                        "after the metadata, upload messages must carry chunks",
                    ));
                }
            }
        }
        if bytes.is_empty() {
            return Err(Status::invalid_argument("the module is empty"));
        }
        let digest = digest_of(&bytes);
        self.within_quota(&digest, &bytes)?;
        let runtime = self.runtime.clone();
        let store = self.store.clone();
        let name = metadata.name;
        let compiling = self
            .compiles
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the daemon is stopping"))?;
        let (module, already_present) = tokio::task::spawn_blocking(move || {
            let _compiling = compiling;
            // Validate (compile and link against the world) before storing.
            let compiled = runtime
                .module(&digest, || Ok(bytes.clone()))
                .map_err(|e| match e {
                    ModuleError::Invalid(m) => Status::invalid_argument(m),
                    ModuleError::Io(m) => Status::internal(m),
                })?;
            let world = compiled.world();
            drop(compiled);
            let info = ModuleInfo {
                digest,
                size: bytes.len() as u64,
                name,
                world,
                uploaded_at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            };
            store
                .put(&bytes, info)
                .map_err(|e| Status::internal(format!("could not store the module: {e}")))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        tracing::info!(digest = %module.digest, size = module.size, already_present, "module uploaded");
        Ok(Response::new(v1::UploadModuleResponse {
            module: Some(to_proto(module)),
            already_present,
        }))
    }

    async fn list_modules(
        &self,
        request: Request<v1::ListModulesRequest>,
    ) -> Result<Response<v1::ListModulesResponse>, Status> {
        self.access.caller(&request)?.may_read()?;
        let modules = self
            .store
            .list()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(v1::ListModulesResponse {
            modules: modules.into_iter().map(to_proto).collect(),
        }))
    }

    async fn delete_module(
        &self,
        request: Request<v1::DeleteModuleRequest>,
    ) -> Result<Response<v1::DeleteModuleResponse>, Status> {
        self.access.caller(&request)?.may_delete_modules()?;
        let reference = request.into_inner().digest;
        let manager = self.manager.clone();
        let digest = tokio::task::spawn_blocking(move || manager.delete_module(&reference))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(super::pipeline_service::status)?;
        Ok(Response::new(v1::DeleteModuleResponse { digest }))
    }
}

use crate::pipeline::{ManagerError, PipelineManager};
use crate::runtime::ModuleError;
use eddy_proto::v1::{self, pipeline_service_server::PipelineService};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Pipeline operations, each run on a blocking thread (they talk to Kafka
/// and wait for tasks to commit).
pub struct PipelineServiceImpl {
    /// The manager.
    pub manager: Arc<PipelineManager>,
}

fn status(error: ManagerError) -> Status {
    let message = error.to_string();
    match error {
        ManagerError::NotFound(_) => Status::not_found(message),
        ManagerError::AlreadyExists(_) => Status::already_exists(message),
        ManagerError::InvalidSpec(_) | ManagerError::Module(ModuleError::Invalid(_)) => {
            Status::invalid_argument(message)
        }
        ManagerError::Unavailable(_) => Status::unavailable(message),
        ManagerError::Module(ModuleError::Io(_)) | ManagerError::Internal(_) => {
            Status::internal(message)
        }
    }
}

impl PipelineServiceImpl {
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
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no spec"))?;
        let view = self.run(move |m| m.create(spec)).await?;
        Ok(Response::new(view.pipeline))
    }

    async fn get_pipeline(
        &self,
        request: Request<v1::GetPipelineRequest>,
    ) -> Result<Response<v1::Pipeline>, Status> {
        let name = request.into_inner().name;
        let view = self.run(move |m| m.get(&name)).await?;
        Ok(Response::new(view.pipeline))
    }

    async fn list_pipelines(
        &self,
        _request: Request<v1::ListPipelinesRequest>,
    ) -> Result<Response<v1::ListPipelinesResponse>, Status> {
        let views = self.run(|m| Ok(m.list())).await?;
        Ok(Response::new(v1::ListPipelinesResponse {
            pipelines: views.into_iter().map(|v| v.pipeline).collect(),
        }))
    }

    async fn pause_pipeline(
        &self,
        request: Request<v1::PausePipelineRequest>,
    ) -> Result<Response<v1::Pipeline>, Status> {
        let name = request.into_inner().name;
        let view = self.run(move |m| m.pause(&name)).await?;
        Ok(Response::new(view.pipeline))
    }

    async fn resume_pipeline(
        &self,
        request: Request<v1::ResumePipelineRequest>,
    ) -> Result<Response<v1::Pipeline>, Status> {
        let name = request.into_inner().name;
        let view = self.run(move |m| m.resume(&name)).await?;
        Ok(Response::new(view.pipeline))
    }

    async fn delete_pipeline(
        &self,
        request: Request<v1::DeletePipelineRequest>,
    ) -> Result<Response<v1::DeletePipelineResponse>, Status> {
        let name = request.into_inner().name;
        self.run(move |m| m.delete(&name)).await?;
        Ok(Response::new(v1::DeletePipelineResponse {}))
    }

    async fn query_state(
        &self,
        request: Request<v1::QueryStateRequest>,
    ) -> Result<Response<v1::QueryStateResponse>, Status> {
        let request = request.into_inner();
        let response = self.run(move |m| m.query_state(request)).await?;
        Ok(Response::new(response))
    }
}

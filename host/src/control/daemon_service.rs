use eddy_proto::v1::{self, daemon_service_server::DaemonService};
use tonic::{Request, Response, Status};

/// Answers `GetInfo`.
pub struct DaemonInfoService {
    /// What to answer.
    pub info: v1::DaemonInfo,
}

#[tonic::async_trait]
impl DaemonService for DaemonInfoService {
    async fn get_info(
        &self,
        _request: Request<v1::GetInfoRequest>,
    ) -> Result<Response<v1::DaemonInfo>, Status> {
        Ok(Response::new(self.info.clone()))
    }
}

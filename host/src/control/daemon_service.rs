use super::auth::Access;
use crate::config::QuotasConfig;
use crate::modules::ModuleStore;
use crate::native_heap;
use crate::pipeline::PipelineManager;
use crate::state::StateMemory;
use crate::task::TaskRuntime;
use eddy_proto::v1::{self, daemon_service_server::DaemonService};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Answers `GetInfo`.
pub struct DaemonInfoService {
    /// What to answer, but for the memory figures.
    pub info: v1::DaemonInfo,
    /// The state stores' shared memory, read at each request.
    pub state_memory: StateMemory,
    /// Who may ask.
    pub access: Arc<Access>,
    /// The daemon's quotas.
    pub quotas: QuotasConfig,
    /// Its pipelines and their tasks, counted against the quotas.
    pub manager: Arc<PipelineManager>,
    /// Its modules, counted against the quotas.
    pub modules: Arc<ModuleStore>,
    /// Its runtime, whose guest worker's memory is reported too.
    pub runtime: Arc<TaskRuntime>,
}

#[tonic::async_trait]
impl DaemonService for DaemonInfoService {
    async fn get_info(
        &self,
        request: Request<v1::GetInfoRequest>,
    ) -> Result<Response<v1::DaemonInfo>, Status> {
        self.access.caller(&request)?.may_read()?;
        let state = self.state_memory.usage();
        let heap = native_heap::usage();
        let memory = v1::DaemonMemory {
            resident_bytes: resident_bytes("self").unwrap_or(0),
            state_budget_bytes: state.budget,
            state_cache_bytes: state.cache,
            state_write_buffer_bytes: state.write_buffers,
            state_table_reader_bytes: state.table_readers,
            state_stores: state.stores,
            native_heap_used_bytes: heap.used,
            native_heap_free_bytes: heap.free,
            guest_worker_resident_bytes: self
                .runtime
                .guest_worker_pid()
                .and_then(|pid| resident_bytes(&pid.to_string()))
                .unwrap_or(0),
        };
        let (modules_stored, module_store_bytes) = self
            .modules
            .usage()
            .map_err(|e| Status::internal(e.to_string()))?;
        let q = &self.quotas;
        let quotas = v1::DaemonQuotas {
            tasks_running: self.manager.tasks_running(),
            max_tasks: q.max_tasks,
            max_pipeline_tasks: q.max_pipeline_tasks,
            modules_stored: u32::try_from(modules_stored).unwrap_or(u32::MAX),
            max_modules: q.max_modules,
            module_store_bytes,
            max_module_store_bytes: q.max_module_store_bytes,
            pipelines: self.manager.pipeline_count(),
            max_pipelines: q.max_pipelines,
        };
        Ok(Response::new(v1::DaemonInfo {
            memory: Some(memory),
            quotas: Some(quotas),
            ..self.info.clone()
        }))
    }
}

/// A process's resident set size, from `/proc/PROCESS/statm` (its second
/// field, in pages); `process` is a pid or `self`.
#[cfg(target_os = "linux")]
fn resident_bytes(process: &str) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{process}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some(pages * page_size)
}

#[cfg(not(target_os = "linux"))]
fn resident_bytes(_process: &str) -> Option<u64> {
    None
}

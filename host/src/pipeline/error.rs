//! Why a pipeline operation failed.

use super::registry::RegistryError;
use crate::kafka::TopicError;
use crate::runtime::ModuleError;
use eddy_spec::SpecError;

/// Why a pipeline operation failed; each maps to one gRPC status code.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No pipeline by that name.
    #[error("pipeline `{0}` does not exist (see `eddy pipeline list`)")]
    NotFound(String),
    /// No module by that reference.
    #[error("{0} (see `eddy module list`)")]
    ModuleNotFound(String),
    /// A pipeline by that name exists.
    #[error("pipeline `{0}` already exists: delete it first, or choose another name")]
    AlreadyExists(String),
    /// The spec is invalid.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// The module cannot be used.
    #[error("module: {0}")]
    Module(#[from] ModuleError),
    /// Kafka could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A quota of the daemon's is full.
    #[error("{0}")]
    Quota(String),
    /// The request cannot be carried out in the current state (a module
    /// that pipelines still use).
    #[error("{0}")]
    Precondition(String),
    /// Anything else.
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

/// An unreachable broker is worth retrying; anything else about a topic
/// (missing, wrong partition count, refused) is the spec's to fix.
impl From<TopicError> for ManagerError {
    fn from(e: TopicError) -> Self {
        match e {
            TopicError::Unreachable(_) => Self::Unavailable(e.to_string()),
            _ => Self::InvalidSpec(SpecError(e.to_string())),
        }
    }
}

impl From<RegistryError> for ManagerError {
    fn from(e: RegistryError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

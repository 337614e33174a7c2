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

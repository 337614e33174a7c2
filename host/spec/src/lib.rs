//! A pipeline's specification and the checks it passes.
//!
//! A spec arrives two ways: as a request on the control plane, and as a
//! record in the registry topic (or a daemon's data directory) that anyone
//! with write access to the topic could have written. Both pass the same
//! checks ([`PipelineSpec::check`], [`PipelineSpec::revalidate`]): names
//! that become files and topics, topics a pipeline may not touch, module
//! digests, limits within the daemon's ceilings. The crate depends on
//! nothing heavy so that those checks can be fuzzed cheaply
//! (`tests/fuzz`).

mod builtin;
mod check;
mod limits;
mod names;
mod spec;

pub use builtin::Builtin;
pub use check::{LimitsRequest, Rules, SpecRequest, check_name};
pub use limits::{GuestBudgets, LimitsConfig};
pub use names::InternalNames;
pub use spec::{ErrorPolicy, Guarantee, Limits, PipelineSpec, SpecError, StartFrom};

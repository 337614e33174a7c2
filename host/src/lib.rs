//! eddy's host: the daemon that consumes Kafka partitions, runs WebAssembly
//! processors on them and produces their output, and the CLI around it.
//!
//! The modules follow a record's path: [`control`] (gRPC) ->
//! [`pipeline`] (manager and runner) -> [`task`] (one per partition) ->
//! {[`kafka`], [`runtime`] (wasmtime), [`state`]}. `docs/architecture.md`
//! draws the data path and says which module owns each step.

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod kafka;
pub mod modules;
pub mod native_heap;
pub mod pipeline;
mod priority;
pub mod runtime;
pub mod state;
pub mod task;

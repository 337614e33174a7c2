//! Write eddy stream processors in Rust.
//!
//! A processor is a WebAssembly component that eddy calls with batches of
//! Kafka records. This crate hides the component plumbing: implement
//! [`Processor`] for a type, export it with [`export!`], and build for
//! `wasm32-wasip2`.
//!
//! ```
//! use eddy_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct Uppercase;
//!
//! impl Processor for Uppercase {
//!     fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
//!         out.emit(record.map_value(|v| v.to_ascii_uppercase()));
//!         Ok(())
//!     }
//! }
//!
//! eddy_sdk::export!(Uppercase);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and upload
//! the `.wasm` with `eddy module push`. `lto = true` and `codegen-units = 1`
//! in the release profile inline this crate's per-record glue into the
//! plugin, which makes a guest call about 15 % faster.
//!
//! The same code compiles for the machine you develop on, where the host's
//! services (state, configuration, timers, logging) are served in memory, so
//! plugin logic is unit-tested with plain `cargo test` through
//! [`testing::TestHarness`].

#![warn(missing_docs)]

// Lets generated code name this crate `::eddy_sdk` from inside it, as it does
// from plugin crates.
#[cfg(target_arch = "wasm32")]
extern crate self as eddy_sdk;

mod bytes;
mod error;
mod host;
mod processor;
mod record;

pub mod config;
pub mod log;
pub mod metrics;
pub mod state;
pub mod timers;
#[cfg(feature = "serde")]
pub mod windows;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[doc(hidden)]
pub mod __private;

pub use error::{Error, Result};
pub use processor::{Processor, Task};
pub use record::{Emitter, Header, OutputRecord, Record};
pub use timers::{TimeDomain, Timer};

/// Everything a plugin usually needs, in one import.
pub mod prelude {
    pub use crate::{
        Emitter, Error, Header, OutputRecord, Processor, Record, Result, Task, TimeDomain, Timer,
        config, log, metrics, state, timers,
    };
}

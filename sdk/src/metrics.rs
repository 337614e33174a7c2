//! Counters shown in the pipeline's status, per partition: what a plugin
//! wants an operator to see without reading its logs.
//!
//! ```
//! use eddy_sdk::{metrics, testing::TestHarness};
//! # #[derive(Default)] struct P;
//! # impl eddy_sdk::Processor for P {
//! #   fn process(&mut self, _: eddy_sdk::Record, _: &mut eddy_sdk::Emitter) -> eddy_sdk::Result { Ok(()) }
//! # }
//! let host = TestHarness::<P>::new();
//! metrics::increment("malformed-records", 1);
//! assert_eq!(host.counter("malformed-records"), 1);
//! ```

/// Adds `delta` to the counter `name`.
pub fn increment(name: &str, delta: u64) {
    crate::host::metrics_increment(name, delta);
}

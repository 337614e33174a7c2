//! Operators compiled into the host, in place of a WebAssembly step.
//!
//! They exist to measure what WebAssembly costs: a builtin step runs in the
//! same task, with the same batches, state, limits and commits as a module,
//! and takes the same records and gives back the same outputs; only the
//! guest call is a plain function call. `just bench` runs `uppercase` both
//! ways side by side. A step names one as `builtin:<name>` where it would
//! name a module digest.

use super::inputs::InputBatch;
use super::outputs::{Outputs, PackedWriter};
use eddy_abi::Malformed;

pub use eddy_spec::Builtin;

/// Processes one batch with `builtin`, as a guest's `process` would.
pub(super) fn process(builtin: Builtin, batch: &InputBatch) -> Result<Outputs, Malformed> {
    match builtin {
        Builtin::Uppercase => {
            let mut outputs = PackedWriter::default();
            let mut upper = Vec::new();
            for record in batch.records() {
                let record = record?;
                let value = record.value.map(|v| {
                    upper.clear();
                    match std::str::from_utf8(v) {
                        Ok(text) => upper.extend(text.to_uppercase().into_bytes()),
                        Err(_) => upper.extend(v.iter().map(u8::to_ascii_uppercase)),
                    }
                    upper.as_slice()
                });
                outputs.push(
                    record.key,
                    value,
                    record.headers.iter().copied(),
                    Some(record.timestamp),
                    None,
                );
            }
            outputs.finish()
        }
    }
}

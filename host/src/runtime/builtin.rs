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

/// How a step names a builtin operator.
const PREFIX: &str = "builtin:";

/// A builtin operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// The `uppercase` plugin's logic: values upper-cased (Unicode text as
    /// text, other bytes in their ASCII letters); keys, headers and
    /// timestamps pass through.
    Uppercase,
}

impl Builtin {
    /// Every builtin, for listing in errors.
    const ALL: [Self; 1] = [Self::Uppercase];

    fn name(self) -> &'static str {
        match self {
            Self::Uppercase => "uppercase",
        }
    }

    /// How a step names it: `builtin:<name>`.
    pub fn reference(self) -> String {
        format!("{PREFIX}{}", self.name())
    }

    /// The builtin a step reference names: `None` when it names no builtin
    /// (a module digest), an error listing the builtins when it has the
    /// prefix but an unknown name.
    pub fn parse(reference: &str) -> Result<Option<Self>, String> {
        let Some(name) = reference.trim().strip_prefix(PREFIX) else {
            return Ok(None);
        };
        Self::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .map(Some)
            .ok_or_else(|| {
                let known: Vec<String> = Self::ALL.iter().map(|b| b.reference()).collect();
                format!(
                    "there is no builtin operator `{name}`; the builtins are {}",
                    known.join(", ")
                )
            })
    }

    /// Processes one batch, as a guest's `process` would.
    pub(super) fn process(self, batch: &InputBatch) -> Result<Outputs, Malformed> {
        match self {
            Self::Uppercase => {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_unknown_names_list_the_builtins() {
        assert_eq!(
            Builtin::parse(&Builtin::Uppercase.reference()),
            Ok(Some(Builtin::Uppercase))
        );
        assert_eq!(Builtin::parse("sha256:abcdef"), Ok(None));
        let error = Builtin::parse("builtin:shout").expect_err("unknown builtin");
        assert!(error.contains("builtin:uppercase"), "{error}");
    }
}

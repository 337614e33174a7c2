//! Keeps the records whose value matches a regular expression.
//!
//! Configuration:
//! - `pattern` (required): a regular expression (Rust `regex` syntax),
//!   searched anywhere in the value;
//! - `invert` (optional, `true`/`false`): keep the records that do *not* match.
//!
//! Tombstones and values that are not UTF-8 never match.

use eddy_sdk::prelude::*;
use regex::Regex;

/// See the crate docs.
#[derive(Default)]
pub struct Filter {
    pattern: Option<Regex>,
    invert: bool,
}

impl Processor for Filter {
    fn init(&mut self, _task: &Task) -> Result<()> {
        let pattern = config::require("pattern")?;
        let regex = Regex::new(&pattern)
            .map_err(|e| Error::new(format!("config `pattern` is not a valid regex: {e}")))?;
        self.pattern = Some(regex);
        self.invert = config::parse::<bool>("invert")?.unwrap_or(false);
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        let matches = match (&self.pattern, record.value_str()) {
            (Some(pattern), Some(value)) => pattern.is_match(value),
            _ => false,
        };
        if matches != self.invert {
            out.emit(record);
        }
        Ok(())
    }
}

eddy_sdk::export!(Filter);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::testing::TestHarness;

    fn values(out: &[OutputRecord]) -> Vec<&str> {
        out.iter().filter_map(OutputRecord::value_str).collect()
    }

    #[test]
    fn keeps_matching_records() {
        let mut harness = TestHarness::<Filter>::new().config("pattern", "^err");
        let out = harness
            .process(["error: disk", "info: ok", "err: net"].map(Record::new))
            .expect("valid config");
        assert_eq!(values(&out), ["error: disk", "err: net"]);
    }

    #[test]
    fn invert_keeps_the_rest() {
        let mut harness = TestHarness::<Filter>::new()
            .config("pattern", "^err")
            .config("invert", "true");
        let out = harness
            .process(["error: disk", "info: ok"].map(Record::new))
            .expect("valid config");
        assert_eq!(values(&out), ["info: ok"]);
    }

    #[test]
    fn missing_or_bad_pattern_is_a_clear_error() {
        let err = TestHarness::<Filter>::new()
            .process([Record::new("x")])
            .expect_err("pattern is required");
        assert!(err.message().contains("pattern"), "{err}");
        let err = TestHarness::<Filter>::new()
            .config("pattern", "(")
            .process([Record::new("x")])
            .expect_err("bad regex");
        assert!(err.message().contains("not a valid regex"), "{err}");
    }
}

//! A hostile fixture: panics (a trap, to the host) on records whose value
//! contains the configured `trigger` (default `boom`), and passes every other
//! record through. The host must fail only this pipeline, visibly.

use eddy_sdk::prelude::*;

/// See the crate docs.
#[derive(Default)]
pub struct Trap {
    trigger: String,
}

impl Processor for Trap {
    fn init(&mut self, _task: &Task) -> Result<()> {
        self.trigger = config::get("trigger").unwrap_or_else(|| "boom".into());
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        if record
            .value_str()
            .is_some_and(|v| v.contains(&self.trigger))
        {
            panic!("poisoned record at offset {}", record.offset());
        }
        out.emit(record);
        Ok(())
    }
}

eddy_sdk::export!(Trap);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::testing::TestHarness;

    #[test]
    fn passes_clean_records() {
        let out = TestHarness::<Trap>::new()
            .process([Record::new("fine")])
            .expect("no trigger");
        assert_eq!(out.len(), 1);
    }

    #[test]
    #[should_panic(expected = "poisoned record")]
    fn panics_on_the_trigger() {
        let _ = TestHarness::<Trap>::new().process([Record::new("boom")]);
    }
}

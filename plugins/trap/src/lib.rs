//! A hostile fixture: fails on records whose value contains the configured
//! `trigger` (default `boom`), and passes every other record through. With
//! `how=panic` (the default) it panics, a trap to the host; with `how=error`
//! it returns an error. The host must fail only this pipeline, visibly, and
//! never move past the failing record. With `count=true` it also counts
//! records per key in state *before* failing, so a host that does not roll
//! back a failed call's writes shows wrong counts. With `fail-until=MS` it
//! fails only while the wall clock is before MS (Unix milliseconds): a
//! transient fault, for testing that a task heals after restarting.

use eddy_sdk::prelude::*;

/// See the crate docs.
#[derive(Default)]
pub struct Trap {
    trigger: String,
    return_error: bool,
    count: bool,
    fail_until_ms: Option<u128>,
}

impl Processor for Trap {
    fn init(&mut self, _task: &Task) -> Result<()> {
        self.trigger = config::get("trigger").unwrap_or_else(|| "boom".into());
        self.count = config::parse("count")?.unwrap_or(false);
        self.fail_until_ms = config::parse("fail-until")?;
        self.return_error = match config::get("how").as_deref() {
            None | Some("panic") => false,
            Some("error") => true,
            Some(other) => {
                return Err(Error::new(format!(
                    "config `how` must be `panic` or `error`, not `{other}`"
                )));
            }
        };
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        if self.count
            && let Some(key) = record.key()
        {
            state::put_u64(key, state::get_u64(key)? + 1)?;
        }
        if record
            .value_str()
            .is_some_and(|v| v.contains(&self.trigger))
            && self.fault_persists()
        {
            let message = format!("poisoned record at offset {}", record.offset());
            if self.return_error {
                return Err(Error::new(message));
            }
            panic!("{message}");
        }
        out.emit(record);
        Ok(())
    }
}

impl Trap {
    fn fault_persists(&self) -> bool {
        self.fail_until_ms.is_none_or(|until| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .is_ok_and(|now| now.as_millis() < until)
        })
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
    fn returns_an_error_when_asked_to() {
        let err = TestHarness::<Trap>::new()
            .config("how", "error")
            .process([Record::new("boom")])
            .expect_err("the trigger fails");
        assert!(err.message().contains("poisoned record"), "{err}");
    }

    #[test]
    #[should_panic(expected = "poisoned record")]
    fn panics_on_the_trigger() {
        let _ = TestHarness::<Trap>::new().process([Record::new("boom")]);
    }
}

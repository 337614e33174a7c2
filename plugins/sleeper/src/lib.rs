//! A hostile fixture: on a record whose value contains `trigger` (default:
//! the empty string, so every record) it sleeps for `sleep` (default an
//! hour) in `std::thread::sleep`, a blocking WASI call (`wasi:io/poll` on
//! a monotonic-clock pollable) where epoch interruption cannot reach it,
//! then passes the record on. Every other record passes through. The host
//! must end the call at the pipeline's call deadline all the same.

use eddy_sdk::prelude::*;
use std::time::Duration;

/// See the crate docs.
#[derive(Default)]
pub struct Sleeper {
    trigger: String,
    sleep: Duration,
}

impl Processor for Sleeper {
    fn init(&mut self, _task: &Task) -> Result<()> {
        self.trigger = config::get("trigger").unwrap_or_default();
        self.sleep = config::duration("sleep")?.unwrap_or(Duration::from_secs(3600));
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        if record
            .value_str()
            .is_some_and(|v| v.contains(&self.trigger))
        {
            std::thread::sleep(self.sleep);
        }
        out.emit(record);
        Ok(())
    }
}

eddy_sdk::export!(Sleeper);

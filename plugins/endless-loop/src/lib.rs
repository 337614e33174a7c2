//! A hostile fixture: never returns from a batch containing a record whose
//! value contains `trigger` (default: the empty string, so every batch).
//! The host must interrupt it at the pipeline's call deadline.

use eddy_sdk::prelude::*;

/// See the crate docs.
#[derive(Default)]
pub struct EndlessLoop {
    trigger: String,
}

impl Processor for EndlessLoop {
    fn init(&mut self, _task: &Task) -> Result<()> {
        self.trigger = config::get("trigger").unwrap_or_default();
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        if record
            .value_str()
            .is_some_and(|v| v.contains(&self.trigger))
        {
            let mut spins = 0u64;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        out.emit(record);
        Ok(())
    }
}

eddy_sdk::export!(EndlessLoop);

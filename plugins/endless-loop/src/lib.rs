//! A hostile fixture: on a record whose value contains `trigger` (default:
//! the empty string, so every record) it spins without end, or, with
//! `spin=3s`, busy-waits that long and then passes the record on: a guest
//! that runs past its deadline now and then. Every other record passes
//! through. The host must interrupt it at the pipeline's call deadline.

use eddy_sdk::prelude::*;
use std::time::{Duration, Instant};

/// See the crate docs.
#[derive(Default)]
pub struct EndlessLoop {
    trigger: String,
    spin: Option<Duration>,
}

impl Processor for EndlessLoop {
    fn init(&mut self, _task: &Task) -> Result<()> {
        self.trigger = config::get("trigger").unwrap_or_default();
        self.spin = config::duration("spin")?;
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        if record
            .value_str()
            .is_some_and(|v| v.contains(&self.trigger))
        {
            let started = Instant::now();
            let mut spins = 0u64;
            while self.spin.is_none_or(|spin| started.elapsed() < spin) {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        out.emit(record);
        Ok(())
    }
}

eddy_sdk::export!(EndlessLoop);

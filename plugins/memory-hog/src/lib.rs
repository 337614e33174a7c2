//! A hostile fixture: on a record whose value contains `trigger` (default:
//! the empty string, so every record) it allocates 1 MiB after 1 MiB,
//! touching every page, until the host's memory cap stops it. Every other
//! record passes through.

use eddy_sdk::prelude::*;

/// See the crate docs.
#[derive(Default)]
pub struct MemoryHog {
    trigger: String,
    hoard: Vec<Vec<u8>>,
}

impl Processor for MemoryHog {
    fn init(&mut self, _task: &Task) -> Result<()> {
        self.trigger = config::get("trigger").unwrap_or_default();
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        if record
            .value_str()
            .is_some_and(|v| v.contains(&self.trigger))
        {
            loop {
                self.hoard.push(vec![0xA5; 1 << 20]);
                std::hint::black_box(&self.hoard);
            }
        }
        out.emit(record);
        Ok(())
    }
}

eddy_sdk::export!(MemoryHog);

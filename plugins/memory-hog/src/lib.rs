//! A hostile fixture: allocates 1 MiB after 1 MiB, touching every page,
//! until the host's memory cap stops it.

use eddy_sdk::prelude::*;

/// See the crate docs.
#[derive(Default)]
pub struct MemoryHog {
    hoard: Vec<Vec<u8>>,
}

impl Processor for MemoryHog {
    fn process(&mut self, _record: Record, _out: &mut Emitter) -> Result<()> {
        loop {
            self.hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&self.hoard);
        }
    }
}

eddy_sdk::export!(MemoryHog);

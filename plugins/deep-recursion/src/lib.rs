//! A hostile fixture: recurses without bound on a record whose value
//! contains `trigger` (default: the empty string, so every record), and
//! passes every other record through. The engine's stack limit turns the
//! recursion into a trap; the host must fail only that call.

use eddy_sdk::prelude::*;

/// See the crate docs.
#[derive(Default)]
pub struct DeepRecursion {
    trigger: String,
}

/// Recurses until the stack runs out (the bound is never reached); the
/// frame's array keeps the optimiser from turning the recursion into a loop.
fn descend(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let frame = std::hint::black_box([depth; 16]);
    descend(depth + 1).wrapping_add(frame[(depth % 16) as usize])
}

impl Processor for DeepRecursion {
    fn init(&mut self, _task: &Task) -> Result<()> {
        self.trigger = config::get("trigger").unwrap_or_default();
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        if record
            .value_str()
            .is_some_and(|v| v.contains(&self.trigger))
        {
            std::hint::black_box(descend(0));
        }
        out.emit(record);
        Ok(())
    }
}

eddy_sdk::export!(DeepRecursion);

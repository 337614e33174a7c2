//! A hostile fixture that spends the host's memory instead of its own: on
//! a record whose value contains `trigger` (default `boom`) it floods the
//! host through one of its imports, by `what`:
//! - `state`: writes `count` (default 1000) values of 1 MiB under distinct keys;
//! - `timers`: sets `count` (default 10,000,000) timers;
//! - `counters`: increments `count` (default 100,000) counters of distinct names;
//! - `log`: logs `count` (default 100,000) messages of 1 KiB.
//!
//! A guest that swallows the state calls' errors gains nothing: the host
//! stops the call at the budget whatever the guest does. Every record
//! (the trigger too, once the flood is over) passes through.

use eddy_sdk::prelude::*;

/// See the crate docs.
#[derive(Default)]
pub struct HostFlood {
    trigger: String,
    what: String,
    count: Option<u64>,
}

impl Processor for HostFlood {
    fn init(&mut self, _task: &Task) -> Result<()> {
        self.trigger = config::get("trigger").unwrap_or_else(|| "boom".into());
        self.what = config::get("what").unwrap_or_default();
        self.count = config::parse("count")?;
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        if record
            .value_str()
            .is_some_and(|v| v.contains(&self.trigger))
        {
            self.flood()?;
        }
        out.emit(record);
        Ok(())
    }
}

impl HostFlood {
    fn flood(&self) -> Result<()> {
        match self.what.as_str() {
            "state" => {
                let value = vec![b'v'; 1 << 20];
                for i in 0..self.count.unwrap_or(1000) {
                    // Errors ignored on purpose: the host must not rely on them.
                    let _ = state::put(format!("flood-{i}"), &value);
                }
            }
            "timers" => {
                for i in 0..self.count.unwrap_or(10_000_000) {
                    let at = i64::try_from(i).unwrap_or(i64::MAX);
                    timers::set(TimeDomain::EventTime, at, b"flood");
                }
            }
            "counters" => {
                for i in 0..self.count.unwrap_or(100_000) {
                    metrics::increment(&format!("flood-{i}"), 1);
                }
            }
            "log" => {
                let line = "l".repeat(1024);
                for _ in 0..self.count.unwrap_or(100_000) {
                    log::info(&line);
                }
            }
            other => {
                return Err(Error::new(format!(
                    "what={other}: expected state, timers, counters or log"
                )));
            }
        }
        Ok(())
    }
}

eddy_sdk::export!(HostFlood);

//! A hostile fixture: for a record whose value contains `trigger` (default
//! `boom`) it emits a huge output, and passes every other record through.
//! With `records=N` it emits N copies of the record; otherwise one record of
//! `bytes` bytes (default 4 MiB, over Kafka's 1 MB record limit). The host
//! must refuse the output before it reaches Kafka, as a failure of the call
//! that made it.

use eddy_sdk::prelude::*;

/// See the crate docs.
#[derive(Default)]
pub struct Flood {
    trigger: String,
    records: Option<u64>,
    bytes: usize,
}

impl Processor for Flood {
    fn init(&mut self, _task: &Task) -> Result<()> {
        self.trigger = config::get("trigger").unwrap_or_else(|| "boom".into());
        self.records = config::parse("records")?;
        self.bytes = config::parse("bytes")?.unwrap_or(4 << 20);
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        if !record
            .value_str()
            .is_some_and(|v| v.contains(&self.trigger))
        {
            out.emit(record);
            return Ok(());
        }
        match self.records {
            Some(n) => {
                for _ in 0..n {
                    out.emit(record.clone());
                }
            }
            None => {
                let mut huge = OutputRecord::new(vec![b'x'; self.bytes]);
                if let Some(key) = record.key() {
                    huge = huge.with_key(key);
                }
                out.emit(huge);
            }
        }
        Ok(())
    }
}

eddy_sdk::export!(Flood);

//! Counts records per key: Kafka Streams' `groupByKey().count()`, and the
//! second half of word count (`split-words` -> `count`).
//!
//! The count lives in state as decimal text, so `eddy state get PIPELINE
//! KEY` prints it as is. After each batch the latest count of every key the
//! batch touched is emitted (key, count), as Kafka Streams' record cache
//! does on commit: the output is a changelog whose last value per key is
//! the count. Records without a key are skipped and counted as
//! `records-without-key`. The batch's counts are kept in memory and
//! written to state once per key at the end of the batch (the batch's
//! writes commit together anyway), not once per record.

use eddy_sdk::prelude::*;
use std::collections::HashMap;

/// See the crate docs.
#[derive(Default)]
pub struct Count {
    /// Keys this batch touched, with their new counts. A hash map: a
    /// batch looks a key up once per record, and byte-wise comparisons (a
    /// B-tree's) are slow in WebAssembly.
    touched: HashMap<Vec<u8>, u64>,
}

fn stored_count(key: &[u8]) -> Result<u64> {
    match state::get(key)? {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::new("a stored count is not a decimal number")),
    }
}

impl Processor for Count {
    fn process(&mut self, record: Record, _out: &mut Emitter) -> Result<()> {
        let Some(key) = record.key() else {
            metrics::increment("records-without-key", 1);
            return Ok(());
        };
        match self.touched.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                let n = stored_count(key)? + 1;
                self.touched.insert(key.to_vec(), n);
            }
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Emitter) -> Result<()> {
        // In key order, so the output does not depend on hashing.
        let mut touched: Vec<_> = self.touched.drain().collect();
        touched.sort_unstable();
        for (key, count) in touched {
            let count = count.to_string();
            state::put(&key, &count)?;
            out.emit(OutputRecord::new(count).with_key(key));
        }
        Ok(())
    }
}

eddy_sdk::export!(Count);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::testing::TestHarness;

    #[test]
    fn counts_per_key_across_batches_and_emits_the_latest_count_once_per_batch() {
        let mut harness = TestHarness::<Count>::new();
        let out = harness
            .process([
                Record::new("x").with_key("a"),
                Record::new("x").with_key("b"),
                Record::new("x").with_key("a"),
            ])
            .expect("count");
        let pairs: Vec<_> = out
            .iter()
            .map(|o| (o.key_str().unwrap_or(""), o.value_str().unwrap_or("")))
            .collect();
        assert_eq!(pairs, [("a", "2"), ("b", "1")]);
        let out = harness
            .process([Record::new("x").with_key("a"), Record::new("no key")])
            .expect("count");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value_str(), Some("3"));
        assert_eq!(harness.state_value("a"), Some(b"3".to_vec()));
        assert_eq!(harness.counter("records-without-key"), 1);
    }
}

//! Splits each line into lower-cased words, one output record per word,
//! keyed by the word: the first half of Kafka Streams' WordCountDemo
//! (`flatMapValues(value -> Arrays.asList(value.toLowerCase().split("\\W+")))`
//! followed by `groupBy((key, word) -> word)`).
//!
//! Words are runs of letters, digits and `_` (Java's `\w`, widened to Unicode
//! letters and digits); everything else separates them. Each output's value
//! is the word too, so a downstream counter can key or read either.

use eddy_sdk::prelude::*;

/// See the crate docs.
#[derive(Default)]
pub struct SplitWords;

/// The lower-cased words of `line`, in order.
pub fn words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

impl Processor for SplitWords {
    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        let Some(line) = record.value_str() else {
            return Ok(());
        };
        for word in words(line) {
            out.emit(OutputRecord::new(word.clone()).with_key(word));
        }
        Ok(())
    }
}

eddy_sdk::export!(SplitWords);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::testing::TestHarness;

    #[test]
    fn one_record_per_lower_cased_word_keyed_by_word() {
        let mut harness = TestHarness::<SplitWords>::new();
        let out = harness
            .process([Record::new("Hello, hello  World!-ok")])
            .expect("never fails");
        let keys: Vec<_> = out.iter().filter_map(OutputRecord::key_str).collect();
        assert_eq!(keys, ["hello", "hello", "world", "ok"]);
        assert!(out.iter().all(|o| o.key() == o.value()));
    }

    #[test]
    fn tombstones_and_separators_only_emit_nothing() {
        let mut harness = TestHarness::<SplitWords>::new();
        let out = harness
            .process([Record::tombstone("k"), Record::new(" ,.;! ")])
            .expect("never fails");
        assert!(out.is_empty());
    }
}

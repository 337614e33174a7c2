//! Upper-cases every record's value: the classic first Kafka Streams example
//! (`mapValues(v -> v.toUpperCase())`). UTF-8 values are upper-cased as
//! Unicode text (`ü` becomes `Ü`); other bytes only in their ASCII letters.
//! Keys, headers and timestamps pass through; tombstones stay tombstones.
//!
//! Build with `just plugins`, then deploy:
//! `eddy pipeline create shout --module target/plugins/wasm32-wasip2/release/uppercase.wasm --input in --output out`

use eddy_sdk::prelude::*;

/// See the crate docs.
#[derive(Default)]
pub struct Uppercase;

impl Processor for Uppercase {
    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        out.emit(record.map_value(|v| {
            ascii_uppercase(v).unwrap_or_else(|| match std::str::from_utf8(v) {
                Ok(text) => text.to_uppercase().into_bytes(),
                Err(_) => v.to_ascii_uppercase(),
            })
        }));
        Ok(())
    }
}

/// `bytes` upper-cased, if they are all ASCII (most values are). ASCII
/// needs no Unicode tables, and this one pass compiles to WebAssembly SIMD
/// (std's `to_uppercase` is prebuilt without it, at a quarter of the speed;
/// `is_ascii` then `to_ascii_uppercase` is two passes, the first a word at a
/// time).
fn ascii_uppercase(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut seen = 0u8;
    let upper = bytes
        .iter()
        .map(|&b| {
            seen |= b;
            b.to_ascii_uppercase()
        })
        .collect();
    seen.is_ascii().then_some(upper)
}

eddy_sdk::export!(Uppercase);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::testing::TestHarness;

    #[test]
    fn upper_cases_values_and_keeps_keys_and_tombstones() {
        let mut harness = TestHarness::<Uppercase>::new();
        let out = harness
            .process([
                Record::new("hello world").with_key("k"),
                Record::tombstone("gone"),
                Record::new("straße ünï"),
                Record::new(b"\xffabc".to_vec()),
            ])
            .expect("uppercase never fails");
        assert_eq!(out[0].value_str(), Some("HELLO WORLD"));
        assert_eq!(out[0].key_str(), Some("k"));
        assert_eq!(out[1].key_str(), Some("gone"));
        assert_eq!(out[1].value(), None);
        assert_eq!(out[2].value_str(), Some("STRASSE ÜNÏ"));
        assert_eq!(out[3].value(), Some(&b"\xffABC"[..]));
    }
}

//! What guest calls emitted, on its way to Kafka, in one shape: the packed
//! lists of the `packed-processor` world. A packed guest's lists are kept
//! as they came out of its memory, checked once when the call returns and
//! then read in place, so an output costs no allocation of its own between
//! the guest and the producer (which copies it into its own buffer). What
//! arrives otherwise (a typed guest's records, a builtin's, dead letters)
//! is packed on arrival by a [`PackedWriter`].

use super::bindings::eddy::processor::types::{OutputRecord, PackedOutputs};
use eddy_abi::{Malformed, NO_TIMESTAMP, Reader, Writer};
use std::ops::Range;

/// The outputs of one or more calls, in the order they were emitted.
#[derive(Default)]
pub struct Outputs {
    chunks: Vec<Packed>,
    len: usize,
    /// Bytes in all records, as [`OutputView::bytes`] counts them.
    bytes: u64,
    /// Bytes in the largest record.
    largest: u64,
}

/// The outputs of one call, and where each field lies in their data.
struct Packed {
    lists: PackedOutputs,
    records: Vec<RecordSpans>,
    headers: Vec<HeaderSpans>,
}

struct RecordSpans {
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    /// This record's entries in [`Packed::headers`].
    headers: Range<usize>,
    /// 0 for the default output, `n` for `lists.outputs[n - 1]`.
    output: usize,
    timestamp: i64,
}

struct HeaderSpans {
    key: Range<usize>,
    value: Option<Range<usize>>,
}

impl Outputs {
    /// A packed guest's outputs, or what is wrong with them: every field
    /// within the data, header names UTF-8, output indexes among the
    /// outputs listed, nothing left over.
    pub(super) fn packed(lists: PackedOutputs) -> Result<Self, Malformed> {
        let mut records = Vec::with_capacity(lists.timestamps.len());
        let mut headers = Vec::new();
        let data = lists.data.as_slice();
        let span = |field: &[u8]| {
            // Fields are slices of `data`, which the reader hands out.
            let start = field.as_ptr() as usize - data.as_ptr() as usize;
            start..start + field.len()
        };
        let mut reader = Reader::new(&lists.lengths, data);
        let mut largest = 0;
        for &timestamp in &lists.timestamps {
            let first_header = headers.len();
            let data_before = reader.data_left();
            let (fields, output) = reader.output(|key: &str, value| {
                headers.push(HeaderSpans {
                    key: span(key.as_bytes()),
                    value: value.map(span),
                });
                Ok(())
            })?;
            // A record's fields are contiguous in the data.
            largest = largest.max((data_before - reader.data_left()) as u64);
            if output > lists.outputs.len() {
                return Err(Malformed("an output index is beyond the outputs listed"));
            }
            records.push(RecordSpans {
                key: fields.key.map(span),
                value: fields.value.map(span),
                headers: first_header..headers.len(),
                output,
                timestamp,
            });
        }
        reader.finish()?;
        let len = records.len();
        let data_len = lists.data.len() as u64;
        let packed = Packed {
            lists,
            records,
            headers,
        };
        Ok(Self {
            chunks: vec![packed],
            len,
            // Every byte of the data is a key, value or header of a record.
            bytes: data_len,
            largest,
        })
    }

    /// A typed guest's records, packed.
    pub(super) fn typed(records: Vec<OutputRecord>) -> Result<Self, Malformed> {
        let mut writer = PackedWriter::default();
        for record in &records {
            writer.push(
                record.key.as_deref(),
                record.value.as_deref(),
                record
                    .headers
                    .iter()
                    .map(|h| (h.key.as_str(), h.value.as_deref())),
                record.timestamp,
                record.output.as_deref(),
            );
        }
        writer.finish()
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes in all records (keys, values and headers).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The first record over `limit` bytes, and its size.
    pub fn first_larger_than(&self, limit: u64) -> Option<(usize, u64)> {
        if self.largest <= limit {
            return None;
        }
        self.iter()
            .map(|o| o.bytes())
            .enumerate()
            .find(|(_, size)| *size > limit)
    }

    /// Appends `other`'s records after these.
    pub fn append(&mut self, other: Outputs) {
        self.len += other.len;
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.largest = self.largest.max(other.largest);
        self.chunks.extend(other.chunks);
    }

    /// The records as one set of packed lists: what the guest worker sends
    /// a call's outputs back as (one call's outputs are one set already).
    pub(super) fn into_lists(mut self) -> PackedOutputs {
        if self.chunks.len() == 1
            && let Some(packed) = self.chunks.pop()
        {
            return packed.lists;
        }
        let mut writer = PackedWriter::default();
        for record in self.iter() {
            writer.push(
                record.key,
                record.value,
                record.headers.iter().collect::<Vec<_>>().into_iter(),
                record.timestamp,
                record.output,
            );
        }
        writer.lists
    }

    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = OutputView<'_>> {
        self.chunks
            .iter()
            .flat_map(|p| p.records.iter().map(move |r| p.view(r)))
    }
}

/// Packs records the host makes or receives typed into [`Outputs`].
pub struct PackedWriter {
    lists: PackedOutputs,
}

impl Default for PackedWriter {
    fn default() -> Self {
        Self {
            lists: PackedOutputs {
                lengths: Vec::new(),
                data: Vec::new(),
                timestamps: Vec::new(),
                outputs: Vec::new(),
            },
        }
    }
}

impl PackedWriter {
    /// Appends a record to `output` (`None` for the default output).
    pub fn push<'h>(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl ExactSizeIterator<Item = (&'h str, Option<&'h [u8]>)>,
        timestamp: Option<i64>,
        output: Option<&str>,
    ) {
        let lists = &mut self.lists;
        let output = match output {
            None => 0,
            Some(name) => match lists.outputs.iter().position(|known| known == name) {
                Some(index) => index + 1,
                None => {
                    lists.outputs.push(name.to_owned());
                    lists.outputs.len()
                }
            },
        };
        Writer::new(&mut lists.lengths, &mut lists.data).output(
            key,
            value,
            output,
            headers.map(|(name, value)| (name.as_bytes(), value)),
        );
        lists.timestamps.push(timestamp.unwrap_or(NO_TIMESTAMP));
    }

    /// The records pushed. Only [`push`](Self::push) wrote them, so reading
    /// them back fails only on a bug, which is reported rather than a
    /// record dropped.
    pub fn finish(self) -> Result<Outputs, Malformed> {
        Outputs::packed(self.lists)
    }
}

impl Packed {
    fn view<'a>(&'a self, record: &RecordSpans) -> OutputView<'a> {
        let data = self.lists.data.as_slice();
        OutputView {
            key: record.key.clone().map(|r| &data[r]),
            value: record.value.clone().map(|r| &data[r]),
            headers: Headers {
                spans: &self.headers[record.headers.clone()],
                data,
            },
            timestamp: (record.timestamp != NO_TIMESTAMP).then_some(record.timestamp),
            output: record
                .output
                .checked_sub(1)
                .and_then(|i| self.lists.outputs.get(i))
                .map(String::as_str),
        }
    }
}

/// One output record, borrowed from the call's outputs.
#[derive(Clone, Copy)]
pub struct OutputView<'a> {
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The headers, in order.
    pub headers: Headers<'a>,
    /// The timestamp, if the guest set one.
    pub timestamp: Option<i64>,
    /// The named output, or `None` for the step's default output.
    pub output: Option<&'a str>,
}

impl OutputView<'_> {
    /// The record's size as Kafka counts it, near enough: key, value and
    /// headers.
    pub fn bytes(&self) -> u64 {
        let len = |v: Option<&[u8]>| v.map_or(0, <[u8]>::len);
        let headers: usize = self
            .headers
            .iter()
            .map(|(key, value)| key.len() + len(value))
            .sum();
        (len(self.key) + len(self.value) + headers) as u64
    }
}

/// An output record's headers.
#[derive(Clone, Copy)]
pub struct Headers<'a> {
    spans: &'a [HeaderSpans],
    data: &'a [u8],
}

impl<'a> Headers<'a> {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Each header's name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + use<'a> {
        let data = self.data;
        // Names were checked to be UTF-8 when the outputs were read.
        self.spans.iter().map(move |h| {
            let name = std::str::from_utf8(&data[h.key.clone()]).unwrap_or_default();
            (name, h.value.clone().map(|r| &data[r]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::bindings::eddy::processor::types::Header;
    use super::*;
    use eddy_abi::NONE;

    fn lists(lengths: Vec<u32>, timestamps: Vec<i64>) -> PackedOutputs {
        PackedOutputs {
            lengths,
            data: b"keyvaluetraceabc".to_vec(),
            timestamps,
            outputs: vec!["side".into()],
        }
    }

    /// A view as owned parts, to compare.
    type Parts = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
        Option<i64>,
        Option<String>,
    );

    fn parts(outputs: &Outputs) -> Vec<Parts> {
        outputs
            .iter()
            .map(|o| {
                (
                    o.key.map(<[u8]>::to_vec),
                    o.value.map(<[u8]>::to_vec),
                    o.headers
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec)))
                        .collect(),
                    o.timestamp,
                    o.output.map(str::to_owned),
                )
            })
            .collect()
    }

    #[test]
    fn packed_outputs_read_in_place_and_follow_records_appended_before() {
        let packed = Outputs::packed(lists(
            vec![3, 5, 1, 1, 5, 3, NONE, 0, 0, 0],
            vec![5, NO_TIMESTAMP],
        ))
        .expect("well formed");
        let mut outputs = Outputs::typed(vec![OutputRecord {
            key: None,
            value: Some(b"first".to_vec()),
            headers: vec![Header {
                key: "h".into(),
                value: None,
            }],
            timestamp: Some(1),
            output: None,
        }])
        .expect("typed records pack");
        outputs.append(packed);
        assert_eq!(outputs.len(), 3);
        assert_eq!(
            parts(&outputs),
            vec![
                (
                    None,
                    Some(b"first".to_vec()),
                    vec![("h".into(), None)],
                    Some(1),
                    None
                ),
                (
                    Some(b"key".to_vec()),
                    Some(b"value".to_vec()),
                    vec![("trace".into(), Some(b"abc".to_vec()))],
                    Some(5),
                    Some("side".into()),
                ),
                (None, Some(Vec::new()), Vec::new(), None, None),
            ]
        );
        let sizes: Vec<u64> = outputs.iter().map(|o| o.bytes()).collect();
        assert_eq!(sizes, [6, 16, 0]);
        assert_eq!(outputs.bytes(), 22);
        assert_eq!(outputs.first_larger_than(16), None);
        assert_eq!(outputs.first_larger_than(5), Some((0, 6)));
        assert_eq!(outputs.first_larger_than(6), Some((1, 16)));
    }

    #[test]
    fn outputs_that_do_not_add_up_are_named() {
        let cases = [
            (vec![3, 5, 1, 2, 5, 3], vec![1], "beyond the outputs"),
            (vec![3, 50, 0, 0], vec![1], "past the end"),
            (vec![3, 5, 1, 0, 5, 3], vec![1, 2], "lengths end"),
            (vec![3, 5, 0, 0], vec![1], "left over"),
            (vec![3, 5, 1, 0, NONE, 3], vec![1], "name is missing"),
        ];
        for (lengths, timestamps, expected) in cases {
            let error = Outputs::packed(lists(lengths, timestamps))
                .err()
                .expect("malformed");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}

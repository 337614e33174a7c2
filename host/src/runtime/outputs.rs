//! What guest calls emitted, on its way to Kafka: a typed guest's records,
//! or a packed guest's lists kept as they came out of its memory. Packed
//! outputs are checked once when the call returns and then read in place,
//! so an output costs no allocation of its own between the guest and the
//! producer (which copies it into its own buffer).

use super::bindings::eddy::processor::types::{Header, OutputRecord, PackedOutputs};
use eddy_sdk::packed::{Malformed, NO_TIMESTAMP, Reader};
use std::ops::Range;

/// The outputs of one or more calls, in the order they were emitted.
#[derive(Default)]
pub struct Outputs {
    chunks: Vec<Chunk>,
    len: usize,
    /// Bytes in all records, as [`OutputView::bytes`] counts them.
    bytes: u64,
    /// Bytes in the largest record.
    largest: u64,
}

/// The outputs of one call.
enum Chunk {
    Records(Vec<OutputRecord>),
    Packed(Packed),
}

/// A packed guest's outputs and where each field lies in their data.
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
            chunks: vec![Chunk::Packed(packed)],
            len,
            // Every byte of the data is a key, value or header of a record.
            bytes: data_len,
            largest,
        })
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

    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = OutputView<'_>> {
        self.chunks.iter().flat_map(|chunk| {
            let (records, packed) = match chunk {
                Chunk::Records(records) => (records.as_slice(), None),
                Chunk::Packed(packed) => (&[][..], Some(packed)),
            };
            let packed_views = packed
                .into_iter()
                .flat_map(|p| p.records.iter().map(move |r| p.view(r)));
            records.iter().map(OutputView::from).chain(packed_views)
        })
    }
}

impl From<Vec<OutputRecord>> for Outputs {
    fn from(records: Vec<OutputRecord>) -> Self {
        let sizes = records.iter().map(|r| OutputView::from(r).bytes());
        let (bytes, largest) = sizes.fold((0u64, 0), |(total, largest), size| {
            (total.saturating_add(size), largest.max(size))
        });
        Self {
            len: records.len(),
            chunks: vec![Chunk::Records(records)],
            bytes,
            largest,
        }
    }
}

impl Packed {
    fn view<'a>(&'a self, record: &RecordSpans) -> OutputView<'a> {
        let data = self.lists.data.as_slice();
        OutputView {
            key: record.key.clone().map(|r| &data[r]),
            value: record.value.clone().map(|r| &data[r]),
            headers: Headers(HeadersRepr::Packed {
                spans: &self.headers[record.headers.clone()],
                data,
            }),
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

impl<'a> From<&'a OutputRecord> for OutputView<'a> {
    fn from(record: &'a OutputRecord) -> Self {
        Self {
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: Headers(HeadersRepr::Records(&record.headers)),
            timestamp: record.timestamp,
            output: record.output.as_deref(),
        }
    }
}

/// An output record's headers.
#[derive(Clone, Copy)]
pub struct Headers<'a>(HeadersRepr<'a>);

#[derive(Clone, Copy)]
enum HeadersRepr<'a> {
    Records(&'a [Header]),
    Packed {
        spans: &'a [HeaderSpans],
        data: &'a [u8],
    },
}

impl<'a> Headers<'a> {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        match self.0 {
            HeadersRepr::Records(headers) => headers.is_empty(),
            HeadersRepr::Packed { spans, .. } => spans.is_empty(),
        }
    }

    /// Each header's name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + use<'a> {
        let (records, spans, data) = match self.0 {
            HeadersRepr::Records(headers) => (headers, &[][..], &[][..]),
            HeadersRepr::Packed { spans, data } => (&[][..], spans, data),
        };
        let records = records.iter().map(|h| (h.key.as_str(), h.value.as_deref()));
        // Names were checked to be UTF-8 when the outputs were read.
        let packed = spans.iter().map(move |h| {
            let name = std::str::from_utf8(&data[h.key.clone()]).unwrap_or_default();
            (name, h.value.clone().map(|r| &data[r]))
        });
        records.chain(packed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::packed::NONE;

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
        let mut outputs = Outputs::from(vec![OutputRecord {
            key: None,
            value: Some(b"first".to_vec()),
            headers: vec![Header {
                key: "h".into(),
                value: None,
            }],
            timestamp: Some(1),
            output: None,
        }]);
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

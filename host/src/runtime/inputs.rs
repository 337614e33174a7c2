//! A batch of consumed records on its way into a guest, packed as it is
//! polled: each record's fields are copied once out of the consumer's
//! buffer into lists laid out as the `packed-processor` world takes them
//! (`eddy_abi`'s layout), which a packed guest is handed as they
//! are. A record costs no allocation of its own between Kafka and the
//! guest; the lists are reused from batch to batch. Typed guests, builtins
//! and dead letters read the same records back ([`InputView`]).

use super::bindings::eddy::processor::types::{Batch, Header, InputRecord, PackedBatch};
use eddy_abi::{Malformed, Reader, Writer};
use std::ops::Range;

/// Records of one partition, in offset order.
pub struct InputBatch {
    lists: PackedBatch,
    /// Where each record starts in `lists.lengths` and `lists.data`, so a
    /// record can be read without reading the ones before it.
    starts: Vec<(usize, usize)>,
}

/// One record of a batch, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputView<'a> {
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Each header's name and value, in order (no allocation without any).
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    /// Kafka's timestamp, milliseconds since the epoch; -1 if it has none.
    pub timestamp: i64,
    /// The record's offset in its partition.
    pub offset: i64,
}

impl InputBatch {
    /// An empty batch of `topic`'s `partition`.
    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            lists: PackedBatch {
                topic: topic.to_owned(),
                partition,
                lengths: Vec::new(),
                data: Vec::new(),
                timestamps: Vec::new(),
                offsets: Vec::new(),
            },
            starts: Vec::new(),
        }
    }

    /// Empties the batch, keeping its buffers for the next one.
    pub fn clear(&mut self) {
        let lists = &mut self.lists;
        lists.lengths.clear();
        lists.data.clear();
        lists.timestamps.clear();
        lists.offsets.clear();
        self.starts.clear();
    }

    /// Appends a record. Header names are text, as Kafka clients give them.
    pub fn push<'h>(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl ExactSizeIterator<Item = (&'h str, Option<&'h [u8]>)>,
        timestamp: i64,
        offset: i64,
    ) {
        let lists = &mut self.lists;
        self.starts.push((lists.lengths.len(), lists.data.len()));
        Writer::new(&mut lists.lengths, &mut lists.data).input(
            key,
            value,
            headers.map(|(name, value)| (name.as_bytes(), value)),
        );
        lists.timestamps.push(timestamp);
        lists.offsets.push(offset);
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Each record's offset, in order.
    pub fn offsets(&self) -> &[i64] {
        &self.lists.offsets
    }

    /// Each record's timestamp, in order.
    pub fn timestamps(&self) -> &[i64] {
        &self.lists.timestamps
    }

    /// The record at `index`. Only `push` writes the lists, in the layout
    /// they are read with, so reading fails only for an index beyond the
    /// batch; the error is there so that a bug could never drop a record
    /// silently.
    pub fn record(&self, index: usize) -> Result<InputView<'_>, Malformed> {
        const MISSING: Malformed = Malformed("a record is beyond the batch");
        let &(length, data) = self.starts.get(index).ok_or(MISSING)?;
        let lists = &self.lists;
        let mut headers = Vec::new();
        let mut reader = Reader::new(
            lists.lengths.get(length..).ok_or(MISSING)?,
            lists.data.get(data..).ok_or(MISSING)?,
        );
        let fields = reader.input(|name, value| {
            headers.push((name, value));
            Ok(())
        })?;
        Ok(InputView {
            key: fields.key,
            value: fields.value,
            headers,
            timestamp: *lists.timestamps.get(index).ok_or(MISSING)?,
            offset: *lists.offsets.get(index).ok_or(MISSING)?,
        })
    }

    /// The records, in order.
    pub fn records(&self) -> impl Iterator<Item = Result<InputView<'_>, Malformed>> {
        (0..self.len()).map(|i| self.record(i))
    }

    /// A batch of the records in `range` (clamped to the batch), to call a
    /// guest with part of a batch it failed on.
    pub fn slice(&self, range: Range<usize>) -> InputBatch {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        let lists = &self.lists;
        let at = |i: usize| {
            self.starts
                .get(i)
                .copied()
                .unwrap_or((lists.lengths.len(), lists.data.len()))
        };
        let (first, last) = (at(start), at(end));
        Self {
            lists: PackedBatch {
                topic: lists.topic.clone(),
                partition: lists.partition,
                lengths: lists.lengths[first.0..last.0].to_vec(),
                data: lists.data[first.1..last.1].to_vec(),
                timestamps: lists.timestamps[start..end].to_vec(),
                offsets: lists.offsets[start..end].to_vec(),
            },
            starts: self.starts[start..end]
                .iter()
                .map(|(length, data)| (length - first.0, data - first.1))
                .collect(),
        }
    }

    /// The lists, and where each record starts in them: what a batch is
    /// sent to the guest worker as.
    pub(super) fn parts(&self) -> (&PackedBatch, &[(usize, usize)]) {
        (&self.lists, &self.starts)
    }

    /// A batch from what [`Self::parts`] gave, as the guest worker receives
    /// it from the daemon (which it trusts): a start beyond the lists only
    /// makes that record unreadable.
    pub(super) fn from_parts(lists: PackedBatch, starts: Vec<(usize, usize)>) -> Self {
        Self { lists, starts }
    }

    /// The lists as a packed guest takes them.
    pub(super) fn packed(&self) -> &PackedBatch {
        &self.lists
    }

    /// The records as a typed guest takes them, each in its own buffers.
    pub(super) fn typed(&self) -> Result<Batch, Malformed> {
        Ok(Batch {
            topic: self.lists.topic.clone(),
            partition: self.lists.partition,
            records: self
                .records()
                .map(|r| r.map(InputView::into_record))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl InputView<'_> {
    /// The record in buffers of its own.
    pub fn into_record(self) -> InputRecord {
        InputRecord {
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self.owned_headers(),
            timestamp: self.timestamp,
            offset: self.offset,
        }
    }

    /// The headers in buffers of their own.
    pub fn owned_headers(&self) -> Vec<Header> {
        self.headers
            .iter()
            .map(|(name, value)| Header {
                key: (*name).to_owned(),
                value: value.map(<[u8]>::to_vec),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_abi::NONE;

    fn batch() -> InputBatch {
        let mut batch = InputBatch::new("in", 3);
        batch.push(Some(b"k"), Some(b"hello"), [("h", None)].into_iter(), 7, 11);
        batch.push(None, Some(b""), [].into_iter(), 8, 12);
        batch.push(
            Some(b"k3"),
            None,
            [("a", Some(&b"1"[..])), ("b", Some(&b"22"[..]))].into_iter(),
            9,
            13,
        );
        batch
    }

    #[test]
    fn a_batch_is_packed_as_the_packed_world_takes_it_and_reads_back() {
        let mut batch = InputBatch::new("in", 3);
        batch.push(Some(b"left"), Some(b"over"), [].into_iter(), 1, 1);
        batch.clear();
        batch.push(Some(b"k"), Some(b"hello"), [("h", None)].into_iter(), 7, 11);
        batch.push(None, Some(b""), [].into_iter(), 8, 12);
        let lists = batch.packed();
        assert_eq!((lists.topic.as_str(), lists.partition), ("in", 3));
        assert_eq!(lists.lengths, [1, 5, 1, 1, NONE, NONE, 0, 0]);
        assert_eq!(lists.data, b"khelloh");
        assert_eq!(lists.timestamps, [7, 8]);
        assert_eq!(lists.offsets, [11, 12]);
        let second = batch.record(1).expect("two records");
        assert_eq!((second.key, second.value), (None, Some(&b""[..])));
        assert_eq!((second.timestamp, second.offset), (8, 12));
        assert!(batch.record(2).is_err());
    }

    #[test]
    fn a_slice_holds_exactly_its_records() {
        let batch = batch();
        let whole: Vec<InputView<'_>> = batch.records().collect::<Result<_, _>>().expect("reads");
        assert_eq!(whole.len(), 3);
        assert_eq!(
            whole[2].headers,
            [("a", Some(&b"1"[..])), ("b", Some(&b"22"[..]))]
        );
        for (start, end) in [(0, 3), (0, 1), (1, 3), (2, 3), (1, 1), (2, 9)] {
            let part = batch.slice(start..end);
            let records: Vec<InputView<'_>> =
                part.records().collect::<Result<_, _>>().expect("reads");
            assert_eq!(records, whole[start..end.min(3)], "{start}..{end}");
            let lists = part.packed();
            eddy_abi::Reader::check_inputs(&lists.lengths, &lists.data, part.len())
                .expect("a slice is a well-formed packed batch");
        }
    }

    #[test]
    fn typed_records_own_every_field() {
        let typed = batch().typed().expect("reads");
        assert_eq!((typed.topic.as_str(), typed.partition), ("in", 3));
        let third = &typed.records[2];
        assert_eq!(third.key.as_deref(), Some(&b"k3"[..]));
        assert_eq!(third.value, None);
        assert_eq!(third.headers[1].key, "b");
        assert_eq!((third.timestamp, third.offset), (9, 13));
    }
}

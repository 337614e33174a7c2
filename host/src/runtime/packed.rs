//! Batches into a `packed-processor` guest: the records' fields in columns
//! (the layout is `eddy_sdk::packed`'s), so lowering a batch into a guest
//! costs a few copies rather than several allocations in its memory per
//! record. Its outputs come back the same way ([`super::Outputs`]).

use super::bindings::eddy::processor::types::{Batch, PackedBatch};
use eddy_sdk::packed::Writer;

/// An empty packed batch, whose buffers [`pack`] fills and reuses.
pub(super) fn empty() -> PackedBatch {
    PackedBatch {
        topic: String::new(),
        partition: 0,
        lengths: Vec::new(),
        data: Vec::new(),
        timestamps: Vec::new(),
        offsets: Vec::new(),
    }
}

/// Packs `batch` into `packed`, reusing its buffers from the previous call.
pub(super) fn pack(batch: &Batch, packed: &mut PackedBatch) {
    packed.topic.clone_from(&batch.topic);
    packed.partition = batch.partition;
    packed.lengths.clear();
    packed.data.clear();
    packed.timestamps.clear();
    packed.offsets.clear();
    let mut writer = Writer::new(&mut packed.lengths, &mut packed.data);
    for record in &batch.records {
        let headers = record.headers.iter();
        writer.input(
            record.key.as_deref(),
            record.value.as_deref(),
            headers.map(|h| (h.key.as_bytes(), h.value.as_deref())),
        );
        packed.timestamps.push(record.timestamp);
        packed.offsets.push(record.offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::eddy::processor::types::{Header, InputRecord};
    use eddy_sdk::packed::NONE;

    #[test]
    fn a_packed_batch_holds_every_field_of_every_record() {
        let batch = Batch {
            topic: "in".into(),
            partition: 3,
            records: vec![
                InputRecord {
                    key: Some(b"k".to_vec()),
                    value: Some(b"hello".to_vec()),
                    headers: vec![Header {
                        key: "h".into(),
                        value: None,
                    }],
                    timestamp: 7,
                    offset: 11,
                },
                InputRecord {
                    key: None,
                    value: Some(Vec::new()),
                    headers: Vec::new(),
                    timestamp: 8,
                    offset: 12,
                },
            ],
        };
        let mut packed = empty();
        packed.data = b"left from the last call".to_vec();
        pack(&batch, &mut packed);
        assert_eq!((packed.topic.as_str(), packed.partition), ("in", 3));
        assert_eq!(packed.lengths, [1, 5, 1, 1, NONE, NONE, 0, 0]);
        assert_eq!(packed.data, b"khelloh");
        assert_eq!(packed.timestamps, [7, 8]);
        assert_eq!(packed.offsets, [11, 12]);
    }
}

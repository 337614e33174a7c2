//! Batches in and outputs out of a `packed-processor` guest: the records'
//! fields in columns (the layout is `eddy_sdk::packed`'s), so lowering a
//! batch into a guest costs a few copies rather than several allocations in
//! its memory per record.

use super::bindings::eddy::processor::types::{
    Batch, Header, OutputRecord, PackedBatch, PackedOutputs,
};
use eddy_sdk::packed::{Malformed, NO_TIMESTAMP, Reader, Writer};

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
            headers.map(|h| (h.key.as_str(), h.value.as_deref())),
        );
        packed.timestamps.push(record.timestamp);
        packed.offsets.push(record.offset);
    }
}

/// The outputs a guest packed, or what is wrong with them.
pub(super) fn unpack(outputs: &PackedOutputs) -> Result<Vec<OutputRecord>, Malformed> {
    let mut reader = Reader::new(&outputs.lengths, &outputs.data);
    let records = outputs
        .timestamps
        .iter()
        .map(|&timestamp| {
            let (fields, output) = reader.output()?;
            let output = match output {
                0 => None,
                n => Some(
                    outputs
                        .outputs
                        .get(n - 1)
                        .ok_or(Malformed("an output index is beyond the outputs listed"))?
                        .clone(),
                ),
            };
            Ok(OutputRecord {
                key: fields.key.map(<[u8]>::to_vec),
                value: fields.value.map(<[u8]>::to_vec),
                headers: fields
                    .headers
                    .into_iter()
                    .map(|(key, value)| Header { key, value })
                    .collect(),
                timestamp: (timestamp != NO_TIMESTAMP).then_some(timestamp),
                output,
            })
        })
        .collect::<Result<_, Malformed>>()?;
    reader.finish()?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::eddy::processor::types::InputRecord;
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

    fn outputs(lengths: Vec<u32>, timestamps: Vec<i64>) -> PackedOutputs {
        PackedOutputs {
            lengths,
            data: b"keyvaluetraceabc".to_vec(),
            timestamps,
            outputs: vec!["side".into()],
        }
    }

    #[test]
    fn packed_outputs_unpack_into_records() {
        let records = unpack(&outputs(
            vec![3, 5, 1, 1, 5, 3, NONE, 0, 0, 0],
            vec![5, NO_TIMESTAMP],
        ))
        .expect("well formed");
        assert_eq!(
            records,
            vec![
                OutputRecord {
                    key: Some(b"key".to_vec()),
                    value: Some(b"value".to_vec()),
                    headers: vec![Header {
                        key: "trace".into(),
                        value: Some(b"abc".to_vec()),
                    }],
                    timestamp: Some(5),
                    output: Some("side".into()),
                },
                OutputRecord {
                    key: None,
                    value: Some(Vec::new()),
                    headers: Vec::new(),
                    timestamp: None,
                    output: None,
                }
            ]
        );
    }

    #[test]
    fn outputs_that_do_not_add_up_are_named() {
        let cases = [
            (vec![3, 5, 1, 2, 5, 3], vec![1], "beyond the outputs"),
            (vec![3, 50, 0, 0], vec![1], "past the end"),
            (vec![3, 5, 1, 0, 5, 3], vec![1, 2], "lengths end"),
            (vec![3, 5, 0, 0], vec![1], "left over"),
        ];
        for (lengths, timestamps, expected) in cases {
            let error = unpack(&outputs(lengths, timestamps)).expect_err("malformed");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}

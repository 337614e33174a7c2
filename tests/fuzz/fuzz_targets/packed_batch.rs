//! The packed batch codec (`eddy-abi`), fed columns a guest could hand the
//! host: reading never panics, and whatever reads as a whole batch writes
//! back to exactly the same columns, so reader and writer agree on the
//! layout for every input, not only for the ones the writer makes.

#![no_main]

use eddy_abi::{Malformed, Reader, Writer};
use libfuzzer_sys::fuzz_target;

/// A record as read, owned.
struct Record<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    output: usize,
    headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

fn read<'a>(
    lengths: &'a [u32],
    data: &'a [u8],
    records: usize,
    outputs: bool,
) -> Result<Vec<Record<'a>>, Malformed> {
    let mut reader = Reader::new(lengths, data);
    let mut read = Vec::new();
    for _ in 0..records {
        let mut headers = Vec::new();
        let collect = |name: &'a str, value: Option<&'a [u8]>| {
            headers.push((name.as_bytes(), value));
            Ok(())
        };
        let (fields, output) = if outputs {
            reader.output(collect)?
        } else {
            (reader.input(collect)?, 0)
        };
        read.push(Record {
            key: fields.key,
            value: fields.value,
            output,
            headers,
        });
    }
    reader.finish()?;
    Ok(read)
}

fuzz_target!(|input: (Vec<u32>, Vec<u8>, u8, bool)| {
    let (lengths, data, records, outputs) = input;
    let records = usize::from(records % 16);
    let Ok(read) = read(&lengths, &data, records, outputs) else {
        return;
    };
    if !outputs {
        assert!(Reader::check_inputs(&lengths, &data, records).is_ok());
    }
    let (mut lengths_out, mut data_out) = (Vec::new(), Vec::new());
    let mut writer = Writer::new(&mut lengths_out, &mut data_out);
    for r in &read {
        let headers = r.headers.iter().copied();
        if outputs {
            writer.output(r.key, r.value, r.output, headers);
        } else {
            writer.input(r.key, r.value, headers);
        }
    }
    assert_eq!(lengths_out, lengths, "lengths written back differ");
    assert_eq!(data_out, data, "data written back differs");
});

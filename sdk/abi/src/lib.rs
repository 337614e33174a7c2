//! The column layout of the `packed-processor` world (`sdk/wit`): a batch's
//! fields as a list of lengths and a list of bytes. The host and the guest
//! SDK both read and write it through this crate, so the two sides cannot
//! disagree on it, and the host does not depend on the SDK for it.
//!
//! Fields are written in order, each as its length in `lengths` and its
//! bytes appended to `data`; numbers (header counts, output indexes) take a
//! slot in `lengths` and no bytes. A record is its key, its value, its
//! header count, its output index (outputs only), then each header's name
//! and value: [`Writer::record`] and [`Reader::record`] are the one place
//! that order is written down. Reading allocates nothing: fields are
//! borrowed from the data and headers handed to a callback (which may
//! refuse one, failing the read), so a guest
//! (which pays for every allocation) and the host can each keep what they
//! need in their own form.
//!
//! ```
//! use eddy_abi::{Reader, Writer};
//!
//! // A batch of two records: one keyed with a header, one tombstone.
//! let (mut lengths, mut data) = (Vec::new(), Vec::new());
//! let mut writer = Writer::new(&mut lengths, &mut data);
//! writer.input(Some(b"k"), Some(b"hello"), [(&b"trace"[..], Some(&b"abc"[..]))].into_iter());
//! writer.input(Some(b"gone"), None, std::iter::empty());
//!
//! Reader::check_inputs(&lengths, &data, 2)?;
//! let mut reader = Reader::new(&lengths, &data);
//! let mut headers = Vec::new();
//! let first = reader.input(|name, value| {
//!     headers.push((name, value));
//!     Ok(())
//! })?;
//! assert_eq!((first.key, first.value), (Some(&b"k"[..]), Some(&b"hello"[..])));
//! assert_eq!(headers, [("trace", Some(&b"abc"[..]))]);
//! let second = reader.input(|_, _| Ok(()))?;
//! assert_eq!(second.value, None);
//! reader.finish()?;
//! # Ok::<(), eddy_abi::Malformed>(())
//! ```

#![warn(missing_docs)]

/// The length that stands for an absent key, value or header value.
pub const NONE: u32 = u32::MAX;

/// The timestamp that stands for `none` in packed outputs.
pub const NO_TIMESTAMP: i64 = i64::MIN;

/// A record's key and value as read back, borrowed from the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
}

/// Appends fields to a packed batch's lists.
#[derive(Debug)]
pub struct Writer<'a> {
    lengths: &'a mut Vec<u32>,
    data: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// Writes after what `lengths` and `data` already hold.
    pub fn new(lengths: &'a mut Vec<u32>, data: &'a mut Vec<u8>) -> Self {
        Self { lengths, data }
    }

    /// Appends a record of a batch. Header names are UTF-8 text (a reader
    /// refuses others).
    pub fn input<'h>(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl ExactSizeIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    ) {
        self.record(key, value, None, headers);
    }

    /// Appends an output record going to output `output` (0 for the
    /// default output, `n` for the call's `n`th named output).
    pub fn output<'h>(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        output: usize,
        headers: impl ExactSizeIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    ) {
        self.record(key, value, Some(output), headers);
    }

    /// Writes a record: the one place the field order is written down.
    fn record<'h>(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        output: Option<usize>,
        headers: impl ExactSizeIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    ) {
        self.field(key);
        self.field(value);
        self.number(headers.len());
        if let Some(output) = output {
            self.number(output);
        }
        for (name, value) in headers {
            self.field(Some(name));
            self.field(value);
        }
    }

    /// Appends a field; `None` is written as [`NONE`]. A field is far
    /// smaller than 4 GiB: a guest's whole memory is.
    #[inline]
    fn field(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(bytes) => {
                self.lengths
                    .push(u32::try_from(bytes.len()).unwrap_or(NONE - 1));
                self.data.extend_from_slice(bytes);
            }
            None => self.lengths.push(NONE),
        }
    }

    /// Appends a number.
    #[inline]
    fn number(&mut self, n: usize) {
        self.lengths.push(u32::try_from(n).unwrap_or(NONE));
    }
}

/// Reads fields back in the order they were written.
#[derive(Debug)]
pub struct Reader<'a> {
    lengths: std::slice::Iter<'a, u32>,
    data: &'a [u8],
}

/// Packed lists that do not add up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Malformed {}

impl<'a> Reader<'a> {
    /// Reads `lengths` and `data` from their start.
    pub fn new(lengths: &'a [u32], data: &'a [u8]) -> Self {
        Self {
            lengths: lengths.iter(),
            data,
        }
    }

    /// Checks that `lengths` and `data` hold exactly `records` records of a
    /// batch, so that reading them one by one afterwards cannot fail
    /// halfway, with some already processed.
    pub fn check_inputs(lengths: &[u32], data: &[u8], records: usize) -> Result<(), Malformed> {
        let mut reader = Reader::new(lengths, data);
        for _ in 0..records {
            reader.input(|_, _| Ok(()))?;
        }
        reader.finish()
    }

    /// The next record of a batch; its headers go to `header` in order.
    pub fn input(
        &mut self,
        header: impl FnMut(&'a str, Option<&'a [u8]>) -> Result<(), Malformed>,
    ) -> Result<Fields<'a>, Malformed> {
        self.record(false, header).map(|(fields, _)| fields)
    }

    /// The next output record, and its output (0 for the default output,
    /// `n` for the call's `n`th named output); its headers go to `header`
    /// in order.
    pub fn output(
        &mut self,
        header: impl FnMut(&'a str, Option<&'a [u8]>) -> Result<(), Malformed>,
    ) -> Result<(Fields<'a>, usize), Malformed> {
        self.record(true, header)
    }

    /// Reads a record in the order [`Writer::record`] wrote it.
    fn record(
        &mut self,
        output: bool,
        mut header: impl FnMut(&'a str, Option<&'a [u8]>) -> Result<(), Malformed>,
    ) -> Result<(Fields<'a>, usize), Malformed> {
        let key = self.field()?;
        let value = self.field()?;
        let headers = self.number()?;
        let output = if output { self.number()? } else { 0 };
        for _ in 0..headers {
            header(self.name()?, self.field()?)?;
        }
        Ok((Fields { key, value }, output))
    }

    /// The next field.
    #[inline]
    fn field(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        match self.next()? {
            NONE => Ok(None),
            len => {
                let len = usize::try_from(len).map_err(|_| Malformed("a length overflows"))?;
                if len > self.data.len() {
                    return Err(Malformed("a length runs past the end of the data"));
                }
                let (field, rest) = self.data.split_at(len);
                self.data = rest;
                Ok(Some(field))
            }
        }
    }

    /// The next field as a header name: present, and UTF-8.
    #[inline]
    fn name(&mut self) -> Result<&'a str, Malformed> {
        let bytes = self.field()?.ok_or(Malformed("a header name is missing"))?;
        std::str::from_utf8(bytes).map_err(|_| Malformed("a header name is not UTF-8"))
    }

    /// The next number.
    #[inline]
    fn number(&mut self) -> Result<usize, Malformed> {
        usize::try_from(self.next()?).map_err(|_| Malformed("a number overflows"))
    }

    /// How many bytes of the data are still to be read: a record's size
    /// (its keys, values and headers) is the difference across reading it.
    pub fn data_left(&self) -> usize {
        self.data.len()
    }

    /// Checks that every length and byte was read.
    pub fn finish(self) -> Result<(), Malformed> {
        if self.lengths.len() > 0 || !self.data.is_empty() {
            return Err(Malformed(
                "lengths or data are left over after the last record",
            ));
        }
        Ok(())
    }

    #[inline]
    fn next(&mut self) -> Result<u32, Malformed> {
        self.lengths
            .next()
            .copied()
            .ok_or(Malformed("the lengths end before the last record"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One record as the tests generate it: key, value, headers, and the
    /// output it goes to (`None`: a record of a batch).
    type Record = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
        Option<usize>,
    );

    proptest! {
        #[test]
        fn any_records_read_back_as_written(records in proptest::collection::vec(
            (
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
                proptest::collection::vec(
                    (".{0,8}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))),
                    0..3,
                ),
                proptest::option::of(0..4usize),
            ),
            0..50,
        )) {
            let (mut lengths, mut data) = (Vec::new(), Vec::new());
            let mut writer = Writer::new(&mut lengths, &mut data);
            for (key, value, headers, output) in &records {
                let headers = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_deref()));
                match output {
                    None => writer.input(key.as_deref(), value.as_deref(), headers),
                    Some(o) => writer.output(key.as_deref(), value.as_deref(), *o, headers),
                }
            }
            let mut reader = Reader::new(&lengths, &data);
            let read: Vec<Record> = records
                .iter()
                .map(|(_, _, _, output)| {
                    let mut headers = Vec::new();
                    let header = |name: &str, value: Option<&[u8]>| {
                        headers.push((name.to_owned(), value.map(<[u8]>::to_vec)));
                        Ok(())
                    };
                    let (fields, read_output) = match output {
                        None => (reader.input(header)?, None),
                        Some(_) => reader.output(header).map(|(f, o)| (f, Some(o)))?,
                    };
                    Ok((
                        fields.key.map(<[u8]>::to_vec),
                        fields.value.map(<[u8]>::to_vec),
                        headers,
                        read_output,
                    ))
                })
                .collect::<Result<_, Malformed>>()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(reader.finish(), Ok(()));
            prop_assert_eq!(read, records);
        }
    }

    #[test]
    fn fields_and_numbers_read_back_in_order() {
        let (mut lengths, mut data) = (Vec::new(), Vec::new());
        let mut writer = Writer::new(&mut lengths, &mut data);
        writer.field(Some(b"key"));
        writer.field(None);
        writer.number(2);
        writer.field(Some(b""));
        writer.field(Some("name".as_bytes()));
        assert_eq!(lengths, [3, NONE, 2, 0, 4]);
        assert_eq!(data, b"keyname");
        let mut reader = Reader::new(&lengths, &data);
        assert_eq!(reader.field(), Ok(Some(&b"key"[..])));
        assert_eq!(reader.field(), Ok(None));
        assert_eq!(reader.number(), Ok(2));
        assert_eq!(reader.field(), Ok(Some(&b""[..])));
        assert_eq!(reader.name(), Ok("name"));
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn lists_that_do_not_add_up_are_malformed() {
        assert!(Reader::new(&[4], b"abc").field().is_err());
        assert!(Reader::new(&[], b"").number().is_err());
        assert!(Reader::new(&[NONE], b"").name().is_err());
        assert!(Reader::new(&[1], &[0xff]).name().is_err());
        let mut left_over = Reader::new(&[1], b"ab");
        assert_eq!(left_over.field(), Ok(Some(&b"a"[..])));
        assert!(left_over.finish().is_err());
        assert!(Reader::new(&[0], b"").finish().is_err());
    }

    #[test]
    fn a_batch_is_checked_whole_before_it_is_read() {
        let (mut lengths, mut data) = (Vec::new(), Vec::new());
        let mut writer = Writer::new(&mut lengths, &mut data);
        writer.input(Some(b"k"), Some(b"v"), std::iter::empty());
        writer.input(None, Some(b"w"), [(&b"h"[..], None)].into_iter());
        assert_eq!(Reader::check_inputs(&lengths, &data, 2), Ok(()));
        assert!(Reader::check_inputs(&lengths, &data, 1).is_err());
        assert!(Reader::check_inputs(&lengths, &data, 3).is_err());
        assert!(Reader::check_inputs(&lengths, &data[1..], 2).is_err());
    }
}

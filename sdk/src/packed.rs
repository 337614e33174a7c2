//! The column layout of the `packed-processor` world (`sdk/wit`): a batch's
//! fields as a list of lengths and a list of bytes. The host and the SDK
//! both read and write it through this module, so the two sides cannot
//! disagree on it.
//!
//! Fields are written in order, each as its length in `lengths` and its
//! bytes appended to `data`; numbers (header counts, output indexes) take a
//! slot in `lengths` and no bytes.

/// The length that stands for an absent key, value or header value.
pub const NONE: u32 = u32::MAX;

/// The timestamp that stands for `none` in packed outputs.
pub const NO_TIMESTAMP: i64 = i64::MIN;

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

    /// Appends a field; `None` is written as [`NONE`]. A field is far
    /// smaller than 4 GiB: a guest's whole memory is.
    pub fn field(&mut self, bytes: Option<&[u8]>) {
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
    pub fn number(&mut self, n: usize) {
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

    /// The next field.
    pub fn field(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
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

    /// The next field as owned bytes.
    pub fn owned(&mut self) -> Result<Option<Vec<u8>>, Malformed> {
        self.field().map(|f| f.map(<[u8]>::to_vec))
    }

    /// The next field, which must be present UTF-8 text.
    pub fn text(&mut self) -> Result<String, Malformed> {
        let bytes = self.field()?.ok_or(Malformed("a header name is missing"))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Malformed("a header name is not UTF-8"))
    }

    /// The next number.
    pub fn number(&mut self) -> Result<usize, Malformed> {
        usize::try_from(self.next()?).map_err(|_| Malformed("a number overflows"))
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

    /// One record's fields as the packed worlds write them: key, value,
    /// then headers (name, value).
    type Fields = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
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
            ),
            0..50,
        )) {
            let (mut lengths, mut data) = (Vec::new(), Vec::new());
            let mut writer = Writer::new(&mut lengths, &mut data);
            for (key, value, headers) in &records {
                writer.field(key.as_deref());
                writer.field(value.as_deref());
                writer.number(headers.len());
                for (name, value) in headers {
                    writer.field(Some(name.as_bytes()));
                    writer.field(value.as_deref());
                }
            }
            let mut reader = Reader::new(&lengths, &data);
            let read: Vec<Fields> = records
                .iter()
                .map(|_| {
                    let key = reader.owned()?;
                    let value = reader.owned()?;
                    let headers = (0..reader.number()?)
                        .map(|_| Ok((reader.text()?, reader.owned()?)))
                        .collect::<Result<_, Malformed>>()?;
                    Ok((key, value, headers))
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
        assert_eq!(reader.owned(), Ok(None));
        assert_eq!(reader.number(), Ok(2));
        assert_eq!(reader.field(), Ok(Some(&b""[..])));
        assert_eq!(reader.text(), Ok("name".to_owned()));
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn lists_that_do_not_add_up_are_malformed() {
        assert!(Reader::new(&[4], b"abc").field().is_err());
        assert!(Reader::new(&[], b"").number().is_err());
        assert!(Reader::new(&[NONE], b"").text().is_err());
        assert!(Reader::new(&[1], &[0xff]).text().is_err());
        let mut left_over = Reader::new(&[1], b"ab");
        assert_eq!(left_over.field(), Ok(Some(&b"a"[..])));
        assert!(left_over.finish().is_err());
        assert!(Reader::new(&[0], b"").finish().is_err());
    }
}

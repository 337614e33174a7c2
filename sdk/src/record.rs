use crate::bytes::Bytes;

/// Bytes as text, if they are valid UTF-8.
fn utf8(bytes: Option<&[u8]>) -> Option<&str> {
    bytes.and_then(|b| std::str::from_utf8(b).ok())
}

/// A Kafka record header: a name and a value, which may be null, as in
/// Kafka. A header of a consumed record points into its batch's buffer,
/// like its key and value.
///
/// ```
/// use eddy_sdk::Header;
///
/// let header = Header::new("trace", Some("abc"));
/// assert_eq!(header.key(), "trace");
/// assert_eq!(header.value(), Some(&b"abc"[..]));
/// assert_eq!(Header::new("flag", None::<Vec<u8>>).value(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// UTF-8: made from a `String`, or checked when read from a batch.
    key: Bytes,
    value: Option<Bytes>,
}

impl Header {
    /// A header with this name and value (`None`: a null value).
    pub fn new(key: impl Into<String>, value: Option<impl Into<Vec<u8>>>) -> Self {
        Self {
            key: key.into().into_bytes().into(),
            value: value.map(|v| v.into().into()),
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn from_parts(key: Bytes, value: Option<Bytes>) -> Self {
        Self { key, value }
    }

    /// The header's name.
    pub fn key(&self) -> &str {
        // Always UTF-8 (see the field); never empty for a bad one.
        std::str::from_utf8(&self.key).unwrap_or_default()
    }

    /// The name's bytes, which need no check to be compared or written
    /// out again.
    pub(crate) fn key_bytes(&self) -> &[u8] {
        &self.key
    }

    /// The header's value; `None` is a null value.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}

/// A record consumed from the pipeline's input.
///
/// Kafka distinguishes a missing key or value from an empty one, and so does
/// eddy: a record with no value is a tombstone.
///
/// In a guest, a record's key, value and headers are not copies: they point
/// into the buffer its batch arrived in, so a record costs no allocation
/// but its header list. A record
/// (or an output made from it) kept past the call that received it keeps
/// that buffer alive, up to a batch's size; a processor that holds many
/// records across calls should keep the bytes it needs
/// (`record.value().map(<[u8]>::to_vec)`) or put them in [`state`](crate::state).
///
/// ```
/// use eddy_sdk::Record;
///
/// let record = Record::new("hello").with_key("greeting");
/// assert_eq!(record.value_str(), Some("hello"));
/// assert_eq!(record.key(), Some(&b"greeting"[..]));
/// assert!(!Record::tombstone("gone").value().is_some());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<Header>,
    timestamp: i64,
    offset: i64,
}

impl Record {
    /// A record with this value and no key, for tests.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self {
            value: Some(value.into().into()),
            ..Self::default()
        }
    }

    /// A tombstone (a record with a key and no value), for tests.
    pub fn tombstone(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: Some(key.into().into()),
            ..Self::default()
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn from_parts(
        key: Option<Bytes>,
        value: Option<Bytes>,
        headers: Vec<Header>,
        timestamp: i64,
        offset: i64,
    ) -> Self {
        Self {
            key,
            value,
            headers,
            timestamp,
            offset,
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into().into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(key, Some(value)));
        self
    }

    /// Sets the timestamp (milliseconds since the Unix epoch).
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Sets the offset.
    pub fn with_offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }

    /// The key, if the record has one.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The key as UTF-8 text, if it has a key and the key is valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        utf8(self.key())
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// The value as UTF-8 text, if there is a value and it is valid UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        utf8(self.value())
    }

    /// Whether this record is a tombstone (it has no value).
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The headers, in order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key_bytes() == name.as_bytes())
            .and_then(Header::value)
    }

    /// The record's timestamp, in milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The record's offset in its partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// An output record with this record's key, headers and timestamp and
    /// its value transformed by `f`. A tombstone stays a tombstone.
    ///
    /// ```
    /// use eddy_sdk::Record;
    /// let out = Record::new("abc").map_value(|v| v.to_ascii_uppercase());
    /// assert_eq!(out.value(), Some(&b"ABC"[..]));
    /// ```
    pub fn map_value(self, f: impl FnOnce(&[u8]) -> Vec<u8>) -> OutputRecord {
        let value = self.value.as_deref().map(|v| f(v).into());
        OutputRecord {
            value,
            ..OutputRecord::from(self)
        }
    }

    /// Takes the value out of the record, leaving it a tombstone.
    pub fn take_value(&mut self) -> Option<Vec<u8>> {
        self.value.take().map(Bytes::into_vec)
    }
}

/// A record to produce.
///
/// ```
/// use eddy_sdk::OutputRecord;
///
/// let alert = OutputRecord::new("card 42 over limit")
///     .with_key("42")
///     .with_header("severity", "high")
///     .to("alerts");
/// assert_eq!(alert.output(), Some("alerts"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputRecord {
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<Header>,
    pub(crate) timestamp: Option<i64>,
    pub(crate) output: Option<String>,
}

impl OutputRecord {
    /// A record with this value and no key.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self {
            value: Some(value.into().into()),
            ..Self::default()
        }
    }

    /// A tombstone for this key: deletes the key from a compacted topic.
    pub fn tombstone(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: Some(key.into().into()),
            ..Self::default()
        }
    }

    /// Sets the key. Keyed records are partitioned by murmur2 of the key, as
    /// Java Kafka clients do, so equal keys land in the same partition.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into().into());
        self
    }

    /// Replaces the value.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into().into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(key, Some(value)));
        self
    }

    /// Sets the timestamp; without one, the record takes the timestamp of
    /// the input record (or timer) that produced it.
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sends the record to the pipeline's output with this name instead of
    /// the default output.
    pub fn to(mut self, output: impl Into<String>) -> Self {
        self.output = Some(output.into());
        self
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The key as UTF-8 text, if there is one and it is valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        utf8(self.key())
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// The value as UTF-8 text, if there is one and it is valid UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        utf8(self.value())
    }

    /// The headers, in order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The explicit timestamp, if one was set.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The named output, or `None` for the default output.
    pub fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }
}

impl From<Record> for OutputRecord {
    /// Forwards a record unchanged: same key, value, headers and timestamp.
    fn from(record: Record) -> Self {
        Self {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp: Some(record.timestamp),
            output: None,
        }
    }
}

/// Collects the records a processor emits while handling one input.
///
/// ```
/// use eddy_sdk::{Emitter, OutputRecord};
///
/// let mut out = Emitter::default();
/// out.emit(OutputRecord::new("one"));
/// out.emit(OutputRecord::new("two"));
/// assert_eq!(out.len(), 2);
/// ```
#[derive(Debug, Default)]
pub struct Emitter {
    records: Vec<OutputRecord>,
}

impl Emitter {
    /// Emits a record. Anything convertible works, including an input
    /// [`Record`] to forward it unchanged.
    pub fn emit(&mut self, record: impl Into<OutputRecord>) {
        self.records.push(record.into());
    }

    /// How many records have been emitted.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing has been emitted.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records emitted so far.
    pub fn records(&self) -> &[OutputRecord] {
        &self.records
    }

    /// Takes the records emitted so far.
    pub fn take(&mut self) -> Vec<OutputRecord> {
        std::mem::take(&mut self.records)
    }

    /// Removes the records emitted so far and keeps the buffer, so a batch
    /// reuses one allocation instead of making one per record.
    #[inline]
    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, OutputRecord> {
        self.records.drain(..)
    }
}

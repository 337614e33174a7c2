//! The bytes of a record's key, value or header: its own, or a span of the
//! buffer its whole batch arrived in.
//!
//! The host sends a batch's fields as one buffer. Records that point into
//! it cost no allocation or copy per field (in a guest's allocator, keys and
//! values were a fifth of a call to `uppercase`, and one header per record
//! added half again to the call); records a
//! processor builds own their bytes. A record kept past its call keeps the
//! buffer alive, which [`Record`](crate::Record)'s docs tell authors.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Bytes owned, or shared with the other records of a batch.
#[derive(Clone)]
pub(crate) enum Bytes {
    /// Bytes of their own.
    Owned(Vec<u8>),
    /// `buffer[start..end]`, where `buffer` is a batch's data.
    Shared {
        buffer: Arc<Vec<u8>>,
        start: usize,
        end: usize,
    },
}

impl Bytes {
    /// The bytes of `field`, a slice of `buffer`, sharing the buffer.
    /// `None` if `field` does not lie within it.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn within(buffer: &Arc<Vec<u8>>, field: &[u8]) -> Option<Self> {
        let base = buffer.as_ptr() as usize;
        let start = (field.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(field.len())?;
        (end <= buffer.len()).then(|| Self::Shared {
            buffer: Arc::clone(buffer),
            start,
            end,
        })
    }

    /// The bytes as a vector of their own: free for owned bytes, a copy
    /// for shared ones.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Self::Owned(bytes) => bytes,
            Self::Shared { .. } => self.to_vec(),
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(bytes) => bytes,
            // `within` and nothing else makes a span, always inside the buffer.
            Self::Shared { buffer, start, end } => &buffer[*start..*end],
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Owned(bytes)
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Bytes {}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_of_the_buffer_shares_it_and_reads_the_same() {
        let buffer = Arc::new(b"keyvalue".to_vec());
        let value = Bytes::within(&buffer, &buffer[3..]).expect("inside");
        assert!(matches!(
            value,
            Bytes::Shared {
                start: 3,
                end: 8,
                ..
            }
        ));
        assert_eq!(&*value, b"value");
        assert_eq!(value, Bytes::from(b"value".to_vec()));
        assert_eq!(Arc::strong_count(&buffer), 2);
        assert_eq!(value.into_vec(), b"value");
        assert_eq!(Arc::strong_count(&buffer), 1);
    }

    #[test]
    fn bytes_outside_the_buffer_are_refused() {
        let buffer = Arc::new(b"key".to_vec());
        let elsewhere = b"value".to_vec();
        assert!(Bytes::within(&buffer, &elsewhere).is_none());
        let empty_at_end = &buffer[3..];
        assert_eq!(
            Bytes::within(&buffer, empty_at_end).as_deref(),
            Some(&b""[..])
        );
    }
}

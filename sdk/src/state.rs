//! Key-value state, private to the task (pipeline step and input partition).
//!
//! Writes are visible to reads in the same batch and are committed together
//! with the batch's outputs and input offsets; a failed batch's writes are
//! discarded. Keys are bytes and sort bytewise, so scans over a shared
//! prefix or a range come back in key order.
//!
//! ```
//! use eddy_sdk::{state, testing::TestHarness};
//! # #[derive(Default)] struct P;
//! # impl eddy_sdk::Processor for P {
//! #   fn process(&mut self, _: eddy_sdk::Record, _: &mut eddy_sdk::Emitter) -> eddy_sdk::Result { Ok(()) }
//! # }
//! let _host = TestHarness::<P>::new();
//! state::put("user/1", "ada")?;
//! state::put("user/2", "grace")?;
//! assert_eq!(state::get("user/1")?.as_deref(), Some(&b"ada"[..]));
//! let users: Vec<_> = state::prefix("user/").collect::<Result<_, _>>()?;
//! assert_eq!(users.len(), 2);
//! state::delete("user/1")?;
//! assert_eq!(state::get("user/1")?, None);
//! # Ok::<(), eddy_sdk::Error>(())
//! ```

use crate::Error;
use crate::host::{self, StateFailure};

/// How many entries one scan call to the host fetches.
const PAGE: u32 = 256;

impl From<StateFailure> for Error {
    fn from(failure: StateFailure) -> Self {
        match failure {
            StateFailure::TooLarge(m) => Error::new(format!("state entry too large: {m}")),
            StateFailure::Unavailable(m) => Error::new(format!("state unavailable: {m}")),
        }
    }
}

/// The value stored under `key`.
pub fn get(key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
    Ok(host::state_get(key.as_ref())?)
}

/// Stores `value` under `key`.
pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), Error> {
    Ok(host::state_put(key.as_ref(), value.as_ref())?)
}

/// Removes `key`. Removing a missing key is not an error.
pub fn delete(key: impl AsRef<[u8]>) -> Result<(), Error> {
    Ok(host::state_delete(key.as_ref())?)
}

/// The `u64` stored under `key` (8 bytes, big-endian), or 0.
///
/// ```
/// # use eddy_sdk::{state, testing::TestHarness};
/// # #[derive(Default)] struct P;
/// # impl eddy_sdk::Processor for P {
/// #   fn process(&mut self, _: eddy_sdk::Record, _: &mut eddy_sdk::Emitter) -> eddy_sdk::Result { Ok(()) }
/// # }
/// # let _host = TestHarness::<P>::new();
/// state::put_u64("count", 41)?;
/// assert_eq!(state::get_u64("count")? + 1, 42);
/// assert_eq!(state::get_u64("nothing")?, 0);
/// # Ok::<(), eddy_sdk::Error>(())
/// ```
pub fn get_u64(key: impl AsRef<[u8]>) -> Result<u64, Error> {
    let key = key.as_ref();
    match get(key)? {
        None => Ok(0),
        Some(bytes) => {
            let array: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                Error::new(format!(
                    "state value under {:?} is {} bytes, not a u64",
                    String::from_utf8_lossy(key),
                    bytes.len()
                ))
            })?;
            Ok(u64::from_be_bytes(array))
        }
    }
}

/// Stores a `u64` under `key` (8 bytes, big-endian).
pub fn put_u64(key: impl AsRef<[u8]>, value: u64) -> Result<(), Error> {
    put(key, value.to_be_bytes())
}

/// The value stored under `key`, in the compact encoding of [`put_typed`].
///
/// ```
/// # use eddy_sdk::{state, testing::TestHarness};
/// # #[derive(Default)] struct P;
/// # impl eddy_sdk::Processor for P {
/// #   fn process(&mut self, _: eddy_sdk::Record, _: &mut eddy_sdk::Emitter) -> eddy_sdk::Result { Ok(()) }
/// # }
/// # let _host = TestHarness::<P>::new();
/// state::put_typed("card/42", &(3u32, 99.5f64))?;
/// assert_eq!(state::get_typed::<(u32, f64)>("card/42")?, Some((3, 99.5)));
/// # Ok::<(), eddy_sdk::Error>(())
/// ```
#[cfg(feature = "serde")]
pub fn get_typed<T: serde::de::DeserializeOwned>(
    key: impl AsRef<[u8]>,
) -> Result<Option<T>, Error> {
    get(key)?
        .map(|bytes| postcard::from_bytes(&bytes).map_err(Error::from))
        .transpose()
}

/// Stores `value` under `key` in postcard, a compact binary encoding
/// (varints, no field names): state stays small on disk and in the changelog.
#[cfg(feature = "serde")]
pub fn put_typed<T: serde::Serialize>(key: impl AsRef<[u8]>, value: &T) -> Result<(), Error> {
    put(key, postcard::to_stdvec(value)?)
}

/// The JSON value stored under `key`.
#[cfg(feature = "json")]
pub fn get_json<T: serde::de::DeserializeOwned>(key: impl AsRef<[u8]>) -> Result<Option<T>, Error> {
    get(key)?
        .map(|bytes| serde_json::from_slice(&bytes).map_err(Error::from))
        .transpose()
}

/// Stores `value` as JSON under `key`.
#[cfg(feature = "json")]
pub fn put_json<T: serde::Serialize>(key: impl AsRef<[u8]>, value: &T) -> Result<(), Error> {
    put(key, serde_json::to_vec(value)?)
}

/// Entries with `start <= key < end`, in key order; `None` leaves that end
/// open. Fetched from the host a page at a time.
pub fn range(start: Option<&[u8]>, end: Option<&[u8]>) -> Scan {
    Scan {
        kind: ScanKind::Range {
            end: end.map(<[u8]>::to_vec),
        },
        next_start: start.map(<[u8]>::to_vec),
        first: true,
        page: Vec::new().into_iter(),
        done: false,
    }
}

/// Entries whose key starts with `prefix`, in key order.
pub fn prefix(prefix: impl AsRef<[u8]>) -> Scan {
    Scan {
        kind: ScanKind::Prefix {
            prefix: prefix.as_ref().to_vec(),
        },
        next_start: None,
        first: true,
        page: Vec::new().into_iter(),
        done: false,
    }
}

enum ScanKind {
    Range { end: Option<Vec<u8>> },
    Prefix { prefix: Vec<u8> },
}

/// An iterator over state entries, from [`range`] or [`prefix`].
pub struct Scan {
    kind: ScanKind,
    /// Range: the inclusive start of the next page. Prefix: the last key seen.
    next_start: Option<Vec<u8>>,
    first: bool,
    page: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl Scan {
    fn fetch(&mut self) -> Result<(), Error> {
        let entries = match &self.kind {
            ScanKind::Range { end } => {
                let entries = host::state_scan(self.next_start.as_deref(), end.as_deref(), PAGE)?;
                if let Some((last, _)) = entries.last() {
                    // The smallest key greater than `last`.
                    let mut next = last.clone();
                    next.push(0);
                    self.next_start = Some(next);
                }
                entries
            }
            ScanKind::Prefix { prefix } => {
                let entries = host::state_scan_prefix(prefix, self.next_start.as_deref(), PAGE)?;
                if let Some((last, _)) = entries.last() {
                    self.next_start = Some(last.clone());
                }
                entries
            }
        };
        self.done = entries.len() < PAGE as usize;
        self.page = entries.into_iter();
        Ok(())
    }
}

impl Iterator for Scan {
    type Item = Result<(Vec<u8>, Vec<u8>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(entry) = self.page.next() {
            return Some(Ok(entry));
        }
        if self.done && !self.first {
            return None;
        }
        self.first = false;
        if let Err(e) = self.fetch() {
            self.done = true;
            return Some(Err(e));
        }
        self.page.next().map(Ok)
    }
}

//! Registry records signed with a secret the daemons of a cluster share,
//! so a record no daemon wrote is ignored: the registry is a Kafka topic,
//! and write access to it should not mean control of every daemon.
//!
//! Each record a daemon writes carries the HMAC-SHA256 of its key and value
//! in the header [`MAC_HEADER`]; a daemon with the secret applies only
//! records whose MAC checks out. Without a secret records are neither
//! signed nor checked, and the daemon says so when it starts.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

/// The header that carries a registry record's MAC.
pub(super) const MAC_HEADER: &str = "eddy-mac";

/// The environment variable that may hold the secret itself.
pub const SECRET_ENV: &str = "EDDY_CLUSTER_SECRET";

/// The shortest secret accepted, in bytes: a MAC is as strong as its key.
const MIN_SECRET_BYTES: usize = 16;

/// The secret the daemons of a cluster share. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// Why the secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("could not read the cluster secret from {path}: {error}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The secret is too short to sign with.
    #[error(
        "the cluster secret from {from} is {bytes} bytes; it needs at least {MIN_SECRET_BYTES} \
         (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// Where it came from.
        from: String,
        /// Its length.
        bytes: usize,
    },
}

impl ClusterSecret {
    /// The secret from `file` (surrounding whitespace dropped) or, without
    /// one, from [`SECRET_ENV`]; `None` if neither is set.
    pub fn load(file: Option<&Path>) -> Result<Option<Self>, SecretError> {
        let (from, bytes) = match file {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|error| SecretError::Unreadable {
                    path: path.display().to_string(),
                    error,
                })?;
                (path.display().to_string(), bytes)
            }
            None => match std::env::var_os(SECRET_ENV) {
                Some(value) => (SECRET_ENV.to_owned(), value.into_encoded_bytes()),
                None => return Ok(None),
            },
        };
        let secret = bytes.trim_ascii().to_vec();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort {
                from,
                bytes: secret.len(),
            });
        }
        Ok(Some(Self(secret)))
    }

    /// An HMAC keyed with the secret.
    fn keyed(&self) -> Hmac<Sha256> {
        // Any key length is a valid HMAC key.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }

    fn mac(&self, key: &[u8], value: Option<&[u8]>) -> Hmac<Sha256> {
        let mut mac = self.keyed();
        // Lengths and a tombstone marker keep (key, value) pairs apart.
        mac.update(b"eddy-registry-v1\0");
        mac.update(&(key.len() as u64).to_be_bytes());
        mac.update(key);
        match value {
            None => mac.update(&[0]),
            Some(value) => {
                mac.update(&[1]);
                mac.update(value);
            }
        }
        mac
    }

    /// The MAC of a record with `key` and `value` (`None`: a tombstone).
    pub(super) fn sign(&self, key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
        self.mac(key, value).finalize().into_bytes().to_vec()
    }

    /// What a daemon of this cluster sends with a state query it forwards
    /// to another, so the other can tell it from a client's.
    pub fn peer_proof(&self) -> String {
        let mut mac = self.keyed();
        mac.update(b"eddy-peer-v1");
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `mac` is the MAC of `key` and `value`, compared in constant
    /// time.
    pub(super) fn verify(&self, key: &[u8], value: Option<&[u8]>, mac: &[u8]) -> bool {
        self.mac(key, value).verify_slice(mac).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret(s.as_bytes().to_vec())
    }

    #[test]
    fn only_the_same_secret_and_record_verify() {
        let ours = secret("0123456789abcdef-ours");
        let mac = ours.sign(b"pipeline/wc", Some(b"{}"));
        assert!(ours.verify(b"pipeline/wc", Some(b"{}"), &mac));
        assert!(
            !ours.verify(b"pipeline/wc", None, &mac),
            "a tombstone is another record"
        );
        assert!(!ours.verify(b"pipeline/wd", Some(b"{}"), &mac));
        assert!(!ours.verify(b"pipeline/w", Some(b"c{}"), &mac));
        assert!(!secret("0123456789abcdef-theirs").verify(b"pipeline/wc", Some(b"{}"), &mac));
        assert!(!ours.verify(b"pipeline/wc", Some(b"{}"), &mac[..31]));
    }

    #[test]
    fn a_short_or_missing_secret_is_an_error_that_says_so() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let short = dir.path().join("short");
        std::fs::write(&short, "tiny\n").expect("written");
        let err = ClusterSecret::load(Some(&short)).expect_err("too short");
        assert!(err.to_string().contains("at least 16"), "{err}");
        let missing = dir.path().join("missing");
        assert!(ClusterSecret::load(Some(&missing)).is_err());
        let good = dir.path().join("good");
        std::fs::write(&good, "  0123456789abcdef0123\n").expect("written");
        let loaded = ClusterSecret::load(Some(&good))
            .expect("read")
            .expect("set");
        assert_eq!(format!("{loaded:?}"), "ClusterSecret(..)");
    }
}

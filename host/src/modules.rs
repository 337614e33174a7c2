//! Uploaded modules, stored content-addressed by the sha256 of their bytes:
//! `modules/<hex>.wasm` with a `<hex>.json` beside it for the metadata.
//!
//! Only bytes that passed validation are stored, and a file only appears
//! under its final name once fully written, so a crash mid-upload never
//! leaves a half module behind. Modules that arrive through the pipeline
//! registry, in chunks, are put back together and checked against their
//! digest first ([`IncomingModules`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What eddy remembers about a module.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModuleInfo {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The name given at upload (usually the file name).
    pub name: String,
    /// The world the component implements.
    pub world: String,
    /// Upload time, milliseconds since the Unix epoch.
    pub uploaded_at_ms: i64,
}

/// Why a module lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No stored module matches.
    #[error("module `{0}` is not uploaded: push it with `eddy module push FILE`")]
    NotFound(String),
    /// More than one stored module matches a digest prefix.
    #[error("module `{0}` is ambiguous: it matches {1}; give more of the digest")]
    Ambiguous(String, String),
    /// The reference is not a digest.
    #[error("`{0}` is not a module digest (expected sha256:<hex> or a prefix of the hex)")]
    Malformed(String),
    /// Reading the store failed.
    #[error("module store: {0}")]
    Io(#[from] std::io::Error),
}

/// The content-addressed module store.
pub struct ModuleStore {
    dir: PathBuf,
}

/// The digest of `bytes`, as `sha256:<hex>`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex of a `sha256:<hex>` digest, which names its files.
pub(crate) fn hex_part(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

impl ModuleStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn wasm_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{}.wasm", hex_part(digest)))
    }

    fn info_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{}.json", hex_part(digest)))
    }

    /// Stores validated bytes. Returns the info and whether it was already there.
    pub fn put(&self, bytes: &[u8], info: ModuleInfo) -> std::io::Result<(ModuleInfo, bool)> {
        if let Ok(existing) = self.info(&info.digest) {
            return Ok((existing, true));
        }
        write_file_atomically(&self.wasm_path(&info.digest), bytes)?;
        let json = serde_json::to_vec_pretty(&info).map_err(std::io::Error::other)?;
        write_file_atomically(&self.info_path(&info.digest), &json)?;
        Ok((info, false))
    }

    /// Removes a stored module, by full digest: its metadata first, so
    /// that a listing never shows a module without bytes. Whether it was
    /// there.
    pub fn remove(&self, digest: &str) -> std::io::Result<bool> {
        let existed = match std::fs::remove_file(self.info_path(digest)) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        match std::fs::remove_file(self.wasm_path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(existed),
            Err(e) => Err(e),
        }
    }

    /// The stored modules' count and total bytes.
    pub fn usage(&self) -> Result<(usize, u64), LookupError> {
        let modules = self.list()?;
        Ok((modules.len(), modules.iter().map(|m| m.size).sum()))
    }

    /// The info of a stored module, by full digest.
    pub fn info(&self, digest: &str) -> Result<ModuleInfo, LookupError> {
        let bytes = match std::fs::read(self.info_path(digest)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LookupError::NotFound(digest.to_owned()));
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes).map_err(|e| LookupError::Io(std::io::Error::other(e)))
    }

    /// The bytes of a stored module, by full digest.
    pub fn bytes(&self, digest: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.wasm_path(digest))
    }

    /// Every stored module, oldest first.
    pub fn list(&self) -> Result<Vec<ModuleInfo>, LookupError> {
        let mut modules = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                modules.push(self.info(stem)?);
            }
        }
        modules.sort_by(|a, b| (a.uploaded_at_ms, &a.digest).cmp(&(b.uploaded_at_ms, &b.digest)));
        Ok(modules)
    }

    /// The full digest for a reference: `sha256:<hex>`, or a unique prefix
    /// of the hex (at least 6 characters).
    pub fn resolve(&self, reference: &str) -> Result<String, LookupError> {
        let hex = hex_part(reference.trim());
        if hex.len() < 6 || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LookupError::Malformed(reference.to_owned()));
        }
        let hex = hex.to_ascii_lowercase();
        let matches: Vec<String> = self
            .list()?
            .into_iter()
            .map(|m| m.digest)
            .filter(|d| hex_part(d).starts_with(&hex))
            .collect();
        match matches.as_slice() {
            [] => Err(LookupError::NotFound(reference.to_owned())),
            [one] => Ok(one.clone()),
            many => Err(LookupError::Ambiguous(
                reference.to_owned(),
                many.join(", "),
            )),
        }
    }
}

/// Modules arriving through the registry: their chunks as they come, put
/// together once their metadata (which follows the last chunk) arrives.
///
/// Bounded, since anyone who can write to the registry topic can send
/// chunks that no metadata ever closes: at most [`MAX_PENDING_BYTES`] are
/// held, the module whose first chunk came first let go to make room.
pub struct IncomingModules {
    pending: Mutex<Pending>,
    /// Most bytes held at once.
    cap: usize,
}

impl Default for IncomingModules {
    fn default() -> Self {
        Self::holding_at_most(MAX_PENDING_BYTES)
    }
}

/// Most bytes of incoming modules held at once: four times the default
/// ceiling on uploads.
pub const MAX_PENDING_BYTES: usize = 256 << 20;

#[derive(Default)]
struct Pending {
    /// Chunks of modules still arriving, by digest hex: the order its first
    /// chunk came in, and its chunks by position.
    modules: BTreeMap<String, (u64, BTreeMap<u32, Vec<u8>>)>,
    /// Bytes held in all of them.
    bytes: usize,
    /// Counts first chunks, to order them.
    started: u64,
}

impl Pending {
    fn remove(&mut self, hex: &str) -> BTreeMap<u32, Vec<u8>> {
        let chunks = self.modules.remove(hex).map(|(_, c)| c).unwrap_or_default();
        self.bytes -= chunks.values().map(Vec::len).sum::<usize>();
        chunks
    }
}

/// Why a module from the registry cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    /// A chunk the metadata counts never arrived.
    #[error("chunk {index} of {chunks} is missing")]
    MissingChunk {
        /// Its position.
        index: u32,
        /// How many the metadata counts.
        chunks: u32,
    },
    /// The bytes hash to another digest.
    #[error("its bytes do not match its digest")]
    DigestMismatch,
    /// The metadata cannot be read or names another module.
    #[error("its metadata {0}")]
    Metadata(String),
}

impl IncomingModules {
    /// Holds at most `cap` bytes of chunks at once.
    pub fn holding_at_most(cap: usize) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            cap,
        }
    }

    /// Keeps chunk `index` of module `hex`.
    pub fn chunk(&self, hex: String, index: u32, bytes: Vec<u8>) {
        let mut pending = self.lock();
        while pending.bytes + bytes.len() > self.cap {
            let Some(oldest) = pending
                .modules
                .iter()
                .min_by_key(|(_, (started, _))| *started)
                .map(|(hex, _)| hex.clone())
            else {
                return;
            };
            tracing::warn!(module = %oldest, "letting go of an incoming module's chunks: more module bytes arriving at once than are held");
            pending.remove(&oldest);
        }
        let order = pending.started;
        pending.started += 1;
        pending.bytes += bytes.len();
        let (_, chunks) = pending
            .modules
            .entry(hex)
            .or_insert_with(|| (order, BTreeMap::new()));
        if let Some(replaced) = chunks.insert(index, bytes) {
            pending.bytes -= replaced.len();
        }
    }

    /// Module `hex`, from its `chunks` chunks and its metadata, once its
    /// bytes are checked against its digest (the chunks are let go either
    /// way).
    pub fn assemble(
        &self,
        hex: &str,
        chunks: u32,
        info: &[u8],
    ) -> Result<(Vec<u8>, ModuleInfo), AssemblyError> {
        let parts = self.lock().remove(hex);
        let digest = format!("sha256:{hex}");
        let info: ModuleInfo = serde_json::from_slice(info)
            .map_err(|e| AssemblyError::Metadata(format!("is unreadable: {e}")))?;
        let mut bytes = Vec::new();
        for index in 0..chunks {
            let part = parts
                .get(&index)
                .ok_or(AssemblyError::MissingChunk { index, chunks })?;
            bytes.extend_from_slice(part);
        }
        if digest_of(&bytes) != digest {
            return Err(AssemblyError::DigestMismatch);
        }
        if info.digest != digest {
            return Err(AssemblyError::Metadata("names another digest".into()));
        }
        Ok((bytes, info))
    }

    /// Forgets the chunks of module `hex` (it is stored already).
    pub fn forget(&self, hex: &str) {
        self.lock().remove(hex);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave the counts inconsistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes to a temporary file in the same directory, syncs, then renames.
pub(crate) fn write_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path has no parent"))?;
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path)
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = format!(
        ".tmp-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let path = dir.join(name);
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(bytes: &[u8], at: i64) -> ModuleInfo {
        ModuleInfo {
            digest: digest_of(bytes),
            size: bytes.len() as u64,
            name: "m.wasm".into(),
            world: "eddy:processor@0.1.0".into(),
            uploaded_at_ms: at,
        }
    }

    #[test]
    fn content_addressed_put_list_and_resolve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ModuleStore::open(dir.path()).expect("open");
        let (first, existed) = store.put(b"one", info(b"one", 1)).expect("put");
        assert!(!existed);
        let (_, existed) = store.put(b"one", info(b"one", 2)).expect("put again");
        assert!(existed, "same bytes, same module");
        store.put(b"two", info(b"two", 3)).expect("put");
        assert_eq!(store.list().expect("list").len(), 2);
        assert_eq!(store.bytes(&first.digest).expect("bytes"), b"one");
        let short = &first.digest["sha256:".len().."sha256:".len() + 8];
        assert_eq!(store.resolve(short).expect("prefix"), first.digest);
        assert!(matches!(
            store.resolve("abcdef"),
            Err(LookupError::NotFound(_))
        ));
        assert!(matches!(
            store.resolve("xyz"),
            Err(LookupError::Malformed(_))
        ));
    }

    #[test]
    fn chunks_no_metadata_closes_are_let_go_oldest_first() {
        let incoming = IncomingModules::holding_at_most(10);
        incoming.chunk("a".into(), 0, vec![0; 4]);
        incoming.chunk("b".into(), 0, vec![0; 4]);
        incoming.chunk("c".into(), 0, vec![0; 4]);
        let held = |hex: &str| incoming.lock().modules.contains_key(hex);
        assert_eq!((held("a"), held("b"), held("c")), (false, true, true));
        assert_eq!(incoming.lock().bytes, 8);
        incoming.forget("b");
        assert_eq!(incoming.lock().bytes, 4);
        incoming.chunk("d".into(), 0, vec![0; 11]);
        assert!(!held("d"), "a chunk larger than the cap is not held");
        assert_eq!(incoming.lock().bytes, 0);
    }

    #[test]
    fn registry_chunks_are_put_together_and_checked_against_their_digest() {
        let bytes = b"a module in three chunks".to_vec();
        let meta = serde_json::to_vec(&info(&bytes, 1)).expect("encodes");
        let hex = hex_part(&digest_of(&bytes)).to_owned();
        let incoming = IncomingModules::default();
        for (index, chunk) in (0u32..).zip(bytes.chunks(9)) {
            incoming.chunk(hex.clone(), index, chunk.to_vec());
        }
        let (assembled, got) = incoming.assemble(&hex, 3, &meta).expect("whole");
        assert_eq!((assembled, got.digest), (bytes.clone(), digest_of(&bytes)));
        assert!(matches!(
            incoming.assemble(&hex, 3, &meta),
            Err(AssemblyError::MissingChunk {
                index: 0,
                chunks: 3
            })
        ));
        for (index, chunk) in (0u32..).zip(bytes.chunks(9)) {
            let mut chunk = chunk.to_vec();
            chunk[0] ^= u8::from(index == 1);
            incoming.chunk(hex.clone(), index, chunk);
        }
        assert!(matches!(
            incoming.assemble(&hex, 3, &meta),
            Err(AssemblyError::DigestMismatch)
        ));
    }
}

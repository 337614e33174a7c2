//! The pipeline registry's records as a daemon reads them back, and the
//! names they carry. The registry is a Kafka topic anyone with write access
//! can write to, and its keys become file names and URLs, so each record is
//! checked here as a request naming the same thing would be. A crate of its
//! own, without the daemon's dependencies, so that it can be fuzzed cheaply
//! (`tests/fuzz`).

/// The largest module the registry carries to the other daemons, and so
/// the highest `limits.max-module-bytes`.
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// Module bytes per registry record: well under any broker's record limit.
pub const MODULE_CHUNK_BYTES: usize = 256 << 10;

/// One registry record, as the daemon applies it.
#[derive(Debug)]
pub enum Event {
    /// A pipeline's stored spec (JSON), or `None`: it was deleted.
    Pipeline {
        /// The pipeline's name.
        name: String,
        /// Its record.
        stored: Option<Vec<u8>>,
    },
    /// Part `index` of a module's bytes.
    ModuleChunk {
        /// The module's digest without `sha256:`.
        hex: String,
        /// The chunk's position.
        index: u32,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// A daemon's control-plane URL, or `None`: it stopped.
    Daemon {
        /// The daemon's id.
        id: String,
        /// Where its control plane listens.
        url: Option<String>,
    },
    /// A dead-letter topic eddy created, and the pipeline it made it for.
    DeadLetter {
        /// The topic.
        topic: String,
        /// The pipeline.
        pipeline: String,
    },
    /// Part `index` of a deleted module's bytes is gone (a tombstone, so
    /// that compaction drops the chunk).
    ModuleChunkDeleted {
        /// The module's digest without `sha256:`.
        hex: String,
        /// The chunk's position.
        index: u32,
    },
    /// A module was deleted: no pipeline used it.
    ModuleDeleted {
        /// The module's digest without `sha256:`.
        hex: String,
    },
    /// A module's metadata (JSON), after all its chunks.
    Module {
        /// The module's digest without `sha256:`.
        hex: String,
        /// How many chunks its bytes were cut into.
        chunks: u32,
        /// Its metadata.
        info: Vec<u8>,
    },
}

/// Most chunks a module's record may count: the largest module a daemon
/// may accept ([`MAX_MODULE_BYTES`]), cut into chunks.
pub const MAX_MODULE_CHUNKS: u32 = (MAX_MODULE_BYTES as usize).div_ceil(MODULE_CHUNK_BYTES) as u32;

impl Event {
    /// The event a record stands for, once its key names something that
    /// may exist: the registry is a topic anyone with write access can
    /// write to, and its keys become file names and URLs, so each is
    /// checked as a request naming it would be. The error says what is
    /// wrong with the record.
    pub fn parse(key: &str, value: Option<&[u8]>) -> Result<Self, String> {
        let mut parts = key.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("pipeline"), Some(name), None, None) => {
                check_pipeline_name(name)?;
                Ok(Self::Pipeline {
                    name: name.to_owned(),
                    stored: value.map(<[u8]>::to_vec),
                })
            }
            (Some("dead-letter"), Some(topic), None, None) => {
                if !is_topic_name(topic) {
                    return Err("a topic name Kafka would not accept".into());
                }
                let pipeline = value
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .ok_or("a dead-letter record without its pipeline")?;
                check_pipeline_name(pipeline)?;
                Ok(Self::DeadLetter {
                    topic: topic.to_owned(),
                    pipeline: pipeline.to_owned(),
                })
            }
            (Some("daemon"), Some(id), None, None) => {
                check_daemon_id(id)?;
                let url = value
                    .map(|v| {
                        std::str::from_utf8(v)
                            .map_err(|_| "its URL is not UTF-8".to_owned())
                            .and_then(check_daemon_url)
                    })
                    .transpose()?;
                Ok(Self::Daemon {
                    id: id.to_owned(),
                    url,
                })
            }
            (Some("module"), Some(hex), Some(index), None) => {
                check_module_hex(hex)?;
                let index = index
                    .parse()
                    .ok()
                    .filter(|i| *i < MAX_MODULE_CHUNKS)
                    .ok_or_else(|| {
                        format!("chunk `{index}` is not a number below {MAX_MODULE_CHUNKS}")
                    })?;
                let Some(bytes) = value else {
                    return Ok(Self::ModuleChunkDeleted {
                        hex: hex.to_owned(),
                        index,
                    });
                };
                if bytes.len() > MODULE_CHUNK_BYTES {
                    return Err(format!("a module chunk over {MODULE_CHUNK_BYTES} bytes"));
                }
                Ok(Self::ModuleChunk {
                    hex: hex.to_owned(),
                    index,
                    bytes: bytes.to_vec(),
                })
            }
            (Some("module"), Some(hex), None, None) => {
                check_module_hex(hex)?;
                let Some(value) = value else {
                    return Ok(Self::ModuleDeleted {
                        hex: hex.to_owned(),
                    });
                };
                // The chunk count leads the metadata: `<chunks>\n<json>`.
                let split = value
                    .iter()
                    .position(|b| *b == b'\n')
                    .ok_or("module metadata without its chunk count")?;
                let chunks = std::str::from_utf8(&value[..split])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=MAX_MODULE_CHUNKS).contains(n))
                    .ok_or("module metadata with an unreadable chunk count")?;
                Ok(Self::Module {
                    hex: hex.to_owned(),
                    chunks,
                    info: value[split + 1..].to_vec(),
                })
            }
            _ => Err("a key this version does not understand".into()),
        }
    }
}

/// Whether `id` is a daemon id as a daemon makes them: 1-64 letters,
/// digits or `-`. It keys peers and placement, and names a registry record.
pub fn is_daemon_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn check_daemon_id(id: &str) -> Result<(), String> {
    if is_daemon_id(id) {
        Ok(())
    } else {
        Err("a daemon id that is not 1-64 letters, digits or '-'".into())
    }
}

/// A control-plane URL: `http(s)://host:port`, nothing more, or the
/// `unix:/PATH` of a daemon's Unix socket on the same machine.
fn check_daemon_url(url: &str) -> Result<String, String> {
    if let Some(path) = url.strip_prefix("unix:") {
        return if path.starts_with('/') && path.len() < 4096 && !path.contains('\0') {
            Ok(url.to_owned())
        } else {
            Err(format!("its URL `{url}` is not unix:/ABSOLUTE-PATH"))
        };
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("its URL `{url}` is not a URL: {e}"))?;
    // Rebuilt from its parts, the URL must read as written: no fragment,
    // query or path the parser let through, and the scheme in lower case
    // (a daemon picks TLS by the URL's first letters).
    let plain = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme @ ("http" | "https")), Some(authority)) if authority.port().is_some() => {
            let root = format!("{scheme}://{authority}");
            url == root || url.strip_suffix('/') == Some(root.as_str())
        }
        _ => false,
    };
    if plain {
        Ok(url.to_owned())
    } else {
        Err(format!("its URL `{url}` is not http(s)://host:port"))
    }
}

/// A module digest's hex: 64 lower-case hex digits, as it names files.
fn check_module_hex(hex: &str) -> Result<(), String> {
    if is_full_digest(&format!("sha256:{hex}")) {
        Ok(())
    } else {
        Err("a module digest that is not 64 lower-case hex digits".into())
    }
}

/// Checks a pipeline name: 1-100 of lower-case letters, digits, `-`, `_`
/// and `.`, not starting with `.` (so never `.` or `..`), and not ending in
/// `.step-N`, which names the groups of a pipeline's later steps. The error
/// says which rule the name breaks.
pub fn check_pipeline_name(name: &str) -> Result<(), String> {
    if let Some((_, n)) = name.rsplit_once(".step-")
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "name `{name}` may not end in `.step-N`: eddy names the groups of later steps that way"
        ));
    }
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name `{name}` must be 1-100 characters of lower-case letters, digits, '-', '_' \
             or '.', not starting with '.'"
        ))
    }
}

/// Whether `reference` is a full module digest: `sha256:` and 64
/// lower-case hex digits.
pub fn is_full_digest(reference: &str) -> bool {
    reference.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether Kafka would accept `topic` as a name: 1-249 of
/// `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn is_topic_name(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn registry_keys_parse_into_events() {
        assert!(matches!(
            Event::parse("pipeline/wc", None),
            Ok(Event::Pipeline { name, stored: None }) if name == "wc"
        ));
        assert!(matches!(
            Event::parse(&format!("module/{HEX}/3"), Some(b"xyz")),
            Ok(Event::ModuleChunk { hex, index: 3, bytes }) if hex == HEX && bytes == b"xyz"
        ));
        assert!(matches!(
            Event::parse(&format!("module/{HEX}"), Some(b"2\n{}")),
            Ok(Event::Module { hex, chunks: 2, info }) if hex == HEX && info == b"{}"
        ));
        assert!(matches!(
            Event::parse(&format!("module/{HEX}"), None),
            Ok(Event::ModuleDeleted { hex }) if hex == HEX
        ));
        assert!(matches!(
            Event::parse(&format!("module/{HEX}/7"), None),
            Ok(Event::ModuleChunkDeleted { hex, index: 7 }) if hex == HEX
        ));
        assert!(matches!(
            Event::parse("daemon/ab12-cd", Some(b"http://10.0.0.7:50051")),
            Ok(Event::Daemon { id, url: Some(url) }) if id == "ab12-cd" && url == "http://10.0.0.7:50051"
        ));
        assert!(matches!(
            Event::parse("daemon/ab12-cd", Some(b"unix:/run/eddy/eddy.sock")),
            Ok(Event::Daemon { url: Some(url), .. }) if url == "unix:/run/eddy/eddy.sock"
        ));
        assert!(matches!(
            Event::parse("dead-letter/wc.dlq", Some(b"wc")),
            Ok(Event::DeadLetter { topic, pipeline }) if topic == "wc.dlq" && pipeline == "wc"
        ));
        for bad in ["", "pipeline", "module/ab/x", "other/x", "pipeline/a/b"] {
            assert!(Event::parse(bad, Some(b"1\n{}")).is_err(), "{bad:?}");
        }
    }

    /// Keys that name files or places outside what they stand for, as a
    /// forged record would: each is refused, saying why.
    #[test]
    fn forged_keys_are_refused() {
        let refused = [
            ("pipeline/..", None),
            ("pipeline/.", None),
            ("pipeline/Upper", None),
            ("pipeline/wc.step-1", None),
            ("module/../../etc/passwd", Some(&b"1\n{}"[..])),
            ("module/ab12", Some(&b"1\n{}"[..])),
            ("module/ab12", None),
            (&format!("module/{HEX}/99999"), None),
            (&format!("module/{HEX}/99999"), Some(&b"x"[..])),
            (&format!("module/{HEX}"), Some(&b"0\n{}"[..])),
            (&format!("module/{HEX}"), Some(&b"100000\n{}"[..])),
            ("daemon/../x", Some(&b"http://a:1"[..])),
            ("daemon/ab12", Some(&b"http://evil.example/steal?x=1"[..])),
            ("daemon/ab12", Some(&b"file:///etc/passwd"[..])),
            ("daemon/ab12", Some(&b"http://no-port.example"[..])),
            ("daemon/ab12", Some(&b"unix:relative/eddy.sock"[..])),
            // Found by `just fuzz registry_record`: a scheme in another case.
            ("daemon/ab12", Some(&b"httPs://h:5005"[..])),
            ("daemon/ab12", Some(&b"http://500h:5#"[..])),
            ("dead-letter/../x", Some(&b"wc"[..])),
            ("dead-letter/wc.dlq", Some(&b"../wc"[..])),
            ("dead-letter/wc.dlq", None),
        ];
        for (key, value) in refused {
            let why = Event::parse(key, value).err();
            assert!(why.is_some_and(|w| !w.is_empty()), "{key:?} was accepted");
        }
    }
}

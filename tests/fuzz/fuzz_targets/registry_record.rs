//! Registry records as anyone with write access to the topic could write
//! them: decoding never panics, and what it accepts names only what a
//! request could name (file names without a path, digests, topics,
//! control-plane URLs), within the limits on modules.

#![no_main]

use eddy_registry::{
    Event, MAX_MODULE_CHUNKS, MODULE_CHUNK_BYTES, check_pipeline_name, is_full_digest,
    is_topic_name,
};
use libfuzzer_sys::fuzz_target;

/// Whether `name` can only name a file inside the folder it is joined to.
fn stays_in_its_folder(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fuzz_target!(|record: (&str, Option<&[u8]>)| {
    let (key, value) = record;
    let Ok(event) = Event::parse(key, value) else {
        return;
    };
    match event {
        Event::Pipeline { name, .. } => {
            assert!(check_pipeline_name(&name).is_ok() && stays_in_its_folder(&name));
        }
        Event::ModuleChunk { hex, index, bytes } => {
            assert!(is_full_digest(&format!("sha256:{hex}")));
            assert!(index < MAX_MODULE_CHUNKS && bytes.len() <= MODULE_CHUNK_BYTES);
        }
        Event::ModuleChunkDeleted { hex, index } => {
            assert!(is_full_digest(&format!("sha256:{hex}")));
            assert!(index < MAX_MODULE_CHUNKS);
        }
        Event::ModuleDeleted { hex } => {
            assert!(is_full_digest(&format!("sha256:{hex}")));
        }
        Event::Module { hex, chunks, .. } => {
            assert!(is_full_digest(&format!("sha256:{hex}")));
            assert!((1..=MAX_MODULE_CHUNKS).contains(&chunks));
        }
        Event::Daemon { id, url } => {
            assert!(stays_in_its_folder(&id) && id.len() <= 64);
            if let Some(url) = url {
                // A control plane's root, or a socket's absolute path.
                let plain = url.starts_with("http://") || url.starts_with("https://");
                let local = url.starts_with("unix:/") && !url.contains('\0');
                assert!(local || (plain && !url.contains(['?', '#'])), "{url}");
            }
        }
        Event::DeadLetter { topic, pipeline } => {
            assert!(is_topic_name(&topic) && stays_in_its_folder(&topic));
            assert!(check_pipeline_name(&pipeline).is_ok());
        }
    }
});

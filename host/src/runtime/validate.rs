//! Turning "this is not a plugin" into a message that says what to do.

use super::WORLD;

/// Why a module cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The bytes are not a component implementing eddy's world.
    #[error("{0}")]
    Invalid(String),
    /// The module could not be read from the data directory.
    #[error("{0}")]
    Io(String),
}

const MAGIC: &[u8; 4] = b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];

/// Tells apart garbage, core modules and components before compiling.
pub(super) fn check_format(bytes: &[u8]) -> Result<(), ModuleError> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(ModuleError::Invalid(
            "not a WebAssembly binary (it does not start with the \\0asm magic bytes): \
             upload the .wasm file produced by `cargo build --release --target wasm32-wasip2`"
                .into(),
        ));
    }
    match <[u8; 4]>::try_from(&bytes[4..8]) {
        Ok(CORE_VERSION) => Err(ModuleError::Invalid(format!(
            "this is a core WebAssembly module, not a component: eddy runs components \
             implementing {WORLD}. Build the plugin with eddy-sdk for `--target wasm32-wasip2` \
             (not wasm32-unknown-unknown or wasm32-wasip1)"
        ))),
        Ok(COMPONENT_VERSION) => Ok(()),
        _ => Err(ModuleError::Invalid(
            "unsupported WebAssembly binary version: expected a component-model component \
             (wasm32-wasip2)"
                .into(),
        )),
    }
}

pub(super) fn import_error(e: wasmtime::Error) -> ModuleError {
    ModuleError::Invalid(format!(
        "the component needs imports eddy does not provide (eddy provides {WORLD} and WASI 0.2, \
         without filesystem or network): {e:#}. Rebuild the plugin against an eddy-sdk for this \
         version"
    ))
}

pub(super) fn export_error(e: wasmtime::Error) -> ModuleError {
    ModuleError::Invalid(format!(
        "the component implements neither world of {WORLD} (`processor` or \
         `packed-processor`): {e:#}. Export a processor with `eddy_sdk::export!`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_core_modules_are_named_as_such() {
        let garbage = check_format(b"hello world").expect_err("garbage");
        assert!(garbage.to_string().contains("not a WebAssembly binary"));
        let core = check_format(b"\0asm\x01\0\0\0").expect_err("core module");
        assert!(
            core.to_string()
                .contains("core WebAssembly module, not a component")
        );
        assert!(check_format(b"\0asm\x0d\0\x01\0").is_ok());
    }
}

//! `uppercase` written against the `processor` world directly, with
//! wit-bindgen and no SDK: what a guest in a language without an eddy SDK
//! implements (every record as its own typed lists), and the fixture that
//! keeps the host's support for that world tested. The SDK's plugins
//! implement `packed-processor` instead; the outputs must be the same.
//!
//! Build with `just plugins`, then deploy:
//! `eddy pipeline create shout --module target/plugins/wasm32-wasip2/release/typed_uppercase.wasm --input in --output out`

wit_bindgen::generate!({
    world: "processor",
    path: "../../sdk/wit",
});

struct TypedUppercase;

impl Guest for TypedUppercase {
    fn init(_task: TaskInfo) -> Result<(), ProcessError> {
        Ok(())
    }

    fn process(batch: Batch) -> Result<Vec<OutputRecord>, ProcessError> {
        Ok(batch
            .records
            .into_iter()
            .map(|record| OutputRecord {
                key: record.key,
                value: record.value.map(|mut v| {
                    // ASCII needs no Unicode tables (see `uppercase`).
                    match std::str::from_utf8(&v) {
                        Ok(text) if !v.is_ascii() => v = text.to_uppercase().into_bytes(),
                        _ => v.make_ascii_uppercase(),
                    }
                    v
                }),
                headers: record.headers,
                timestamp: Some(record.timestamp),
                output: None,
            })
            .collect())
    }

    fn on_timers(_timers: Vec<FiredTimer>) -> Result<Vec<OutputRecord>, ProcessError> {
        Ok(Vec::new())
    }
}

export!(TypedUppercase);

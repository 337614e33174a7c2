//! A plugin with the shape plugins built with eddy-sdk before 0.1.2 have:
//! `packed-processor` as 0.1.1 shipped it, answering timers in typed
//! records (`on-timers`) rather than packed. The host must keep running
//! such plugins; this fixture keeps that tested. For each keyed record it
//! sets a wall-clock timer that is due at once, and answers each timer
//! with a record of its key and the value `timer`.
//!
//! Build with `just plugins`, then deploy:
//! `eddy pipeline create legacy --module target/plugins/wasm32-wasip2/release/packed_0_1_1.wasm --input in --output out`

// A packed batch's columns are flattened into the export's parameters.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        world: "packed-processor-0-1-1",
        path: "../../sdk/wit",
    });
}

use bindings::Guest;
use bindings::eddy::processor::timers;
use bindings::eddy::processor::types::{
    FiredTimer, OutputRecord, PackedBatch, PackedOutputs, ProcessError, TaskInfo, TimeDomain,
};

struct Legacy;

impl Guest for Legacy {
    fn init(_task: TaskInfo) -> Result<(), ProcessError> {
        Ok(())
    }

    fn process_packed(batch: PackedBatch) -> Result<PackedOutputs, ProcessError> {
        let mut reader = eddy_abi::Reader::new(&batch.lengths, &batch.data);
        for _ in &batch.timestamps {
            let fields = reader.input(|_, _| Ok(())).map_err(|e| ProcessError {
                message: e.to_string(),
                record_index: None,
            })?;
            if let Some(key) = fields.key {
                timers::set(TimeDomain::WallClock, 0, key);
            }
        }
        Ok(PackedOutputs {
            lengths: Vec::new(),
            data: Vec::new(),
            timestamps: Vec::new(),
            outputs: Vec::new(),
        })
    }

    fn on_timers(timers: Vec<FiredTimer>) -> Result<Vec<OutputRecord>, ProcessError> {
        Ok(timers
            .into_iter()
            .map(|timer| OutputRecord {
                key: Some(timer.key),
                value: Some(b"timer".to_vec()),
                headers: Vec::new(),
                timestamp: None,
                output: None,
            })
            .collect())
    }
}

bindings::export!(Legacy with_types_in bindings);

//! Glue used by [`export!`](crate::export); not part of the public API.

use crate::{Emitter, Error, OutputRecord, Processor, Record, Timer};

/// Runs `records` through `processor` one by one, handing each output to
/// `emit` as soon as its input is done (a guest packs it at once instead of
/// collecting the batch's outputs first). Outputs without a timestamp take
/// their input's. On failure, reports the failing index.
pub fn run_batch<P: Processor>(
    processor: &mut P,
    records: impl IntoIterator<Item = Record>,
    mut emit: impl FnMut(OutputRecord),
) -> Result<(), (Error, Option<u32>)> {
    let mut out = Emitter::default();
    let mut last = None;
    for (index, record) in records.into_iter().enumerate() {
        let timestamp = record.timestamp();
        last = Some(timestamp);
        processor
            .process(record, &mut out)
            .map_err(|e| (e, u32::try_from(index).ok()))?;
        for o in out.drain() {
            emit(match o.timestamp() {
                Some(_) => o,
                None => o.with_timestamp(timestamp),
            });
        }
    }
    processor.flush(&mut out).map_err(|e| (e, None))?;
    for o in out.drain() {
        emit(match (o.timestamp(), last) {
            (None, Some(t)) => o.with_timestamp(t),
            _ => o,
        });
    }
    Ok(())
}

/// Runs fired timers through `processor`, handing each output to `emit`;
/// outputs default to the timer's time.
pub fn run_timers<P: Processor>(
    processor: &mut P,
    timers: impl IntoIterator<Item = Timer>,
    mut emit: impl FnMut(OutputRecord),
) -> Result<(), Error> {
    let mut out = Emitter::default();
    for timer in timers {
        let at = timer.at;
        processor.on_timer(timer, &mut out)?;
        for o in out.drain() {
            emit(match o.timestamp() {
                Some(_) => o,
                None => o.with_timestamp(at),
            });
        }
    }
    Ok(())
}

#[cfg(target_arch = "wasm32")]
pub use guest::*;

#[cfg(target_arch = "wasm32")]
mod guest {
    use super::{run_batch, run_timers};
    use crate::bytes::Bytes;
    use crate::{Header, OutputRecord, Processor, Record, Task, TimeDomain, Timer};
    use eddy_abi::{Malformed, NO_TIMESTAMP, Reader, Writer};
    use std::any::Any;
    use std::cell::RefCell;
    use std::sync::Arc;

    pub use wit_bindgen;

    /// The generated bindings for `eddy:processor`.
    // A packed batch's columns are flattened into the export's parameters.
    #[allow(clippy::too_many_arguments)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "packed-processor",
            path: "wit",
            pub_export_macro: true,
            export_macro_name: "export_processor",
            default_bindings_module: "::eddy_sdk::__private::bindings",
            runtime_path: "::eddy_sdk::__private::wit_bindgen::rt",
        });
    }

    use bindings::eddy::processor::types as wit;

    thread_local! {
        /// The one processor instance of this component instance.
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    fn with_instance<P: Processor, R>(f: impl FnOnce(&mut P) -> R) -> R {
        INSTANCE.with(|cell| {
            let mut slot = cell.borrow_mut();
            let instance = slot.get_or_insert_with(|| Box::new(P::default()));
            match instance.downcast_mut::<P>() {
                Some(p) => f(p),
                None => unreachable!("one processor type per component"),
            }
        })
    }

    fn error(message: String, record_index: Option<u32>) -> wit::ProcessError {
        wit::ProcessError {
            message,
            record_index,
        }
    }

    /// Outputs packed as they are emitted.
    struct Packer {
        packed: wit::PackedOutputs,
    }

    impl Packer {
        fn with_capacity(lengths: usize, data: usize, records: usize) -> Self {
            Self {
                packed: wit::PackedOutputs {
                    lengths: Vec::with_capacity(lengths),
                    data: Vec::with_capacity(data),
                    timestamps: Vec::with_capacity(records),
                    outputs: Vec::new(),
                },
            }
        }

        fn push(&mut self, o: OutputRecord) {
            let packed = &mut self.packed;
            let output = match o.output {
                None => 0,
                Some(name) => match packed.outputs.iter().position(|known| *known == name) {
                    Some(index) => index + 1,
                    None => {
                        packed.outputs.push(name);
                        packed.outputs.len()
                    }
                },
            };
            let headers = o.headers.iter();
            Writer::new(&mut packed.lengths, &mut packed.data).output(
                o.key.as_deref(),
                o.value.as_deref(),
                output,
                headers.map(|h| (h.key_bytes(), h.value())),
            );
            packed.timestamps.push(o.timestamp.unwrap_or(NO_TIMESTAMP));
        }
    }

    pub fn init<P: Processor>(task: wit::TaskInfo) -> Result<(), wit::ProcessError> {
        let task = Task {
            pipeline: task.pipeline,
            step: task.step,
            partition: task.partition,
        };
        with_instance::<P, _>(|p| p.init(&task)).map_err(|e| error(e.to_string(), None))
    }

    /// Runs the batch's records (whose keys and values point into the
    /// batch's data) as it reads them, and packs each output as it comes.
    /// A malformed batch is refused before the processor sees any of it.
    pub fn process_packed<P: Processor>(
        batch: wit::PackedBatch,
    ) -> Result<wit::PackedOutputs, wit::ProcessError> {
        let malformed = |e: Malformed| error(format!("the host sent a malformed batch: {e}"), None);
        let records = batch.timestamps.len();
        if batch.offsets.len() != records {
            return Err(malformed(Malformed(
                "the offsets and timestamps differ in number",
            )));
        }
        Reader::check_inputs(&batch.lengths, &batch.data, records).map_err(malformed)?;
        let data = Arc::new(batch.data);
        let mut reader = Reader::new(&batch.lengths, &data);
        let mut packer =
            Packer::with_capacity(batch.lengths.len(), data.len(), batch.timestamps.len());
        let mut unread = None;
        let records =
            batch
                .timestamps
                .iter()
                .zip(&batch.offsets)
                .map_while(|(&timestamp, &offset)| {
                    match record(&mut reader, &data, timestamp, offset) {
                        Ok(record) => Some(record),
                        Err(e) => {
                            unread = Some(e);
                            None
                        }
                    }
                });
        let emit = |o: OutputRecord| packer.push(o);
        with_instance::<P, _>(|p| run_batch(p, records, emit))
            .map_err(|(e, index)| error(e.to_string(), index))?;
        // Checked above; a field outside the data is the one thing left.
        if let Some(e) = unread {
            return Err(malformed(e));
        }
        Ok(packer.packed)
    }

    /// The next record of a batch, its key and value pointing into `data`.
    fn record(
        reader: &mut Reader<'_>,
        data: &Arc<Vec<u8>>,
        timestamp: i64,
        offset: i64,
    ) -> Result<Record, Malformed> {
        let shared = |field: &[u8]| {
            Bytes::within(data, field).ok_or(Malformed("a field lies outside the batch's data"))
        };
        let mut headers = Vec::new();
        let fields = reader.input(|key, value| {
            let key = shared(key.as_bytes())?;
            headers.push(Header::from_parts(key, value.map(shared).transpose()?));
            Ok(())
        })?;
        Ok(Record::from_parts(
            fields.key.map(shared).transpose()?,
            fields.value.map(shared).transpose()?,
            headers,
            timestamp,
            offset,
        ))
    }

    pub fn on_timers_packed<P: Processor>(
        timers: Vec<wit::FiredTimer>,
    ) -> Result<wit::PackedOutputs, wit::ProcessError> {
        let timers = timers.into_iter().map(|t| Timer {
            domain: match t.domain {
                wit::TimeDomain::EventTime => TimeDomain::EventTime,
                wit::TimeDomain::WallClock => TimeDomain::WallClock,
            },
            at: t.at,
            key: t.key,
        });
        let mut packer = Packer::with_capacity(0, 0, 0);
        with_instance::<P, _>(|p| run_timers(p, timers, |o| packer.push(o)))
            .map_err(|e| error(e.to_string(), None))?;
        Ok(packer.packed)
    }
}

/// Exports a [`Processor`](crate::Processor) as the component's
/// `eddy:processor` implementation. Use it once per plugin crate, at the top
/// level. On targets other than `wasm32` it expands to nothing, so the crate
/// still builds and tests natively.
///
/// ```
/// use eddy_sdk::prelude::*;
///
/// #[derive(Default)]
/// struct Passthrough;
///
/// impl Processor for Passthrough {
///     fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
///         out.emit(record);
///         Ok(())
///     }
/// }
///
/// eddy_sdk::export!(Passthrough);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export {
    ($processor:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__private::bindings::eddy::processor::types as __wit;

            struct __EddyGuest;

            impl $crate::__private::bindings::Guest for __EddyGuest {
                fn init(task: __wit::TaskInfo) -> ::core::result::Result<(), __wit::ProcessError> {
                    $crate::__private::init::<$processor>(task)
                }

                fn process_packed(
                    batch: __wit::PackedBatch,
                ) -> ::core::result::Result<__wit::PackedOutputs, __wit::ProcessError> {
                    $crate::__private::process_packed::<$processor>(batch)
                }

                fn on_timers_packed(
                    timers: ::std::vec::Vec<__wit::FiredTimer>,
                ) -> ::core::result::Result<__wit::PackedOutputs, __wit::ProcessError> {
                    $crate::__private::on_timers_packed::<$processor>(timers)
                }
            }

            $crate::__private::bindings::export_processor!(
                __EddyGuest with_types_in $crate::__private::bindings
            );
        };
    };
}

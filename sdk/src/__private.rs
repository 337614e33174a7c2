//! Glue used by [`export!`](crate::export); not part of the public API.

use crate::{Emitter, Error, OutputRecord, Processor, Record, Timer};

/// Runs `records` through `processor` one by one. Outputs without a
/// timestamp take their input's. On failure, reports the failing index.
pub fn run_batch<P: Processor>(
    processor: &mut P,
    records: Vec<Record>,
) -> Result<Vec<OutputRecord>, (Error, Option<u32>)> {
    let mut out = Emitter::default();
    let mut outputs = Vec::with_capacity(records.len());
    let mut last = None;
    for (index, record) in records.into_iter().enumerate() {
        let timestamp = record.timestamp();
        last = Some(timestamp);
        processor
            .process(record, &mut out)
            .map_err(|e| (e, u32::try_from(index).ok()))?;
        outputs.extend(out.drain().map(|o| match o.timestamp() {
            Some(_) => o,
            None => o.with_timestamp(timestamp),
        }));
    }
    processor.flush(&mut out).map_err(|e| (e, None))?;
    outputs.extend(out.drain().map(|o| match (o.timestamp(), last) {
        (None, Some(t)) => o.with_timestamp(t),
        _ => o,
    }));
    Ok(outputs)
}

/// Runs fired timers through `processor`; outputs default to the timer's time.
pub fn run_timers<P: Processor>(
    processor: &mut P,
    timers: Vec<Timer>,
) -> Result<Vec<OutputRecord>, Error> {
    let mut out = Emitter::default();
    let mut outputs = Vec::new();
    for timer in timers {
        let at = timer.at;
        processor.on_timer(timer, &mut out)?;
        outputs.extend(out.drain().map(|o| match o.timestamp() {
            Some(_) => o,
            None => o.with_timestamp(at),
        }));
    }
    Ok(outputs)
}

#[cfg(target_arch = "wasm32")]
pub use guest::*;

#[cfg(target_arch = "wasm32")]
mod guest {
    use super::{run_batch, run_timers};
    use crate::{Header, OutputRecord, Processor, Record, Task, TimeDomain, Timer};
    use std::any::Any;
    use std::cell::RefCell;

    pub use wit_bindgen;

    /// The generated bindings for `eddy:processor`.
    pub mod bindings {
        wit_bindgen::generate!({
            world: "processor",
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

    fn header(h: wit::Header) -> Header {
        Header {
            key: h.key,
            value: h.value,
        }
    }

    fn output(o: OutputRecord) -> wit::OutputRecord {
        wit::OutputRecord {
            key: o.key,
            value: o.value,
            headers: o
                .headers
                .into_iter()
                .map(|h| wit::Header {
                    key: h.key,
                    value: h.value,
                })
                .collect(),
            timestamp: o.timestamp,
            output: o.output,
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

    pub fn process<P: Processor>(
        batch: wit::Batch,
    ) -> Result<Vec<wit::OutputRecord>, wit::ProcessError> {
        let records = batch
            .records
            .into_iter()
            .map(|r| {
                Record::from_parts(
                    r.key,
                    r.value,
                    r.headers.into_iter().map(header).collect(),
                    r.timestamp,
                    r.offset,
                )
            })
            .collect();
        with_instance::<P, _>(|p| run_batch(p, records))
            .map(|outputs| outputs.into_iter().map(output).collect())
            .map_err(|(e, index)| error(e.to_string(), index))
    }

    pub fn on_timers<P: Processor>(
        timers: Vec<wit::FiredTimer>,
    ) -> Result<Vec<wit::OutputRecord>, wit::ProcessError> {
        let timers = timers
            .into_iter()
            .map(|t| Timer {
                domain: match t.domain {
                    wit::TimeDomain::EventTime => TimeDomain::EventTime,
                    wit::TimeDomain::WallClock => TimeDomain::WallClock,
                },
                at: t.at,
                key: t.key,
            })
            .collect();
        with_instance::<P, _>(|p| run_timers(p, timers))
            .map(|outputs| outputs.into_iter().map(output).collect())
            .map_err(|e| error(e.to_string(), None))
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

                fn process(
                    batch: __wit::Batch,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<__wit::OutputRecord>,
                    __wit::ProcessError,
                > {
                    $crate::__private::process::<$processor>(batch)
                }

                fn on_timers(
                    timers: ::std::vec::Vec<__wit::FiredTimer>,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<__wit::OutputRecord>,
                    __wit::ProcessError,
                > {
                    $crate::__private::on_timers::<$processor>(timers)
                }
            }

            $crate::__private::bindings::export_processor!(
                __EddyGuest with_types_in $crate::__private::bindings
            );
        };
    };
}

use crate::{Emitter, Record, Result, Timer};

/// A stream processor: the one trait a plugin implements.
///
/// eddy creates one instance per task (pipeline step and input partition)
/// with [`Default`], calls [`init`](Processor::init) once, then
/// [`process`](Processor::process) for every record of the partition in
/// offset order. Only `process` is required.
///
/// A returned error fails the record; the pipeline's error policy decides
/// whether that stops the task, skips the record or dead-letters it. State
/// written while handling a failed batch is discarded.
///
/// ```
/// use eddy_sdk::prelude::*;
///
/// /// Keeps records whose value contains the configured `pattern`.
/// #[derive(Default)]
/// struct Contains {
///     pattern: String,
/// }
///
/// impl Processor for Contains {
///     fn init(&mut self, _task: &Task) -> Result<()> {
///         self.pattern = config::require("pattern")?;
///         Ok(())
///     }
///
///     fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
///         if record.value_str().is_some_and(|v| v.contains(&self.pattern)) {
///             out.emit(record);
///         }
///         Ok(())
///     }
/// }
/// # fn main() {}
/// ```
pub trait Processor: Default + 'static {
    /// Prepares the instance before its first record: read configuration,
    /// compile patterns. An error here fails the task with its message.
    fn init(&mut self, task: &Task) -> Result {
        let _ = task;
        Ok(())
    }

    /// Handles one record, emitting any number of output records.
    fn process(&mut self, record: Record, out: &mut Emitter) -> Result;

    /// Called after the last record of each batch, before its timers fire:
    /// emit what was buffered across the batch (the latest count per key,
    /// say, as Kafka Streams' record cache does on commit). Outputs default
    /// to the timestamp of the batch's last record.
    fn flush(&mut self, out: &mut Emitter) -> Result {
        let _ = out;
        Ok(())
    }

    /// Handles a timer set with [`timers::set`](crate::timers::set) whose
    /// time has passed.
    fn on_timer(&mut self, timer: Timer, out: &mut Emitter) -> Result {
        let _ = (timer, out);
        Ok(())
    }
}

/// Where a processor instance runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Task {
    /// The pipeline's name.
    pub pipeline: String,
    /// The position of this step in the pipeline, from 0.
    pub step: u32,
    /// The input partition this instance owns.
    pub partition: i32,
}

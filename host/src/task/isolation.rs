//! The skip and dead-letter error policies: when the guest fails on a
//! batch, its records are retried on fresh instances until the failing
//! ones are isolated; those are skipped (counted and logged) or sent to
//! the dead-letter topic with where they came from and why they failed,
//! and every other record is processed once.

use super::fault::Fault;
use super::partition::{PartitionTask, live, no_guest, timed};
use super::plan::TaskGuest;
use super::settings::ErrorPolicy;
use crate::runtime::{GuestError, InputView, Outputs, PackedWriter};
use rdkafka::consumer::ConsumerContext;
use std::collections::VecDeque;
use std::ops::Range;

impl<C: ConsumerContext + 'static> PartitionTask<C> {
    /// Processes the batch in hand under the skip or dead-letter policy:
    /// when the guest fails on it, its state writes are rolled back and its
    /// records are retried on a fresh instance until the failing ones are
    /// isolated (see [`Self::isolate`]); those are skipped or dead-lettered,
    /// every other record is processed once. The outputs, and the dead
    /// letters to deliver with them.
    pub(super) fn process_isolating(
        &mut self,
        slot: &mut Option<TaskGuest>,
    ) -> Result<(Outputs, Outputs), Fault> {
        let mut outputs = Outputs::default();
        let mut failed = Vec::new();
        self.isolate(slot, &mut outputs, &mut failed)?;
        let mut dead_letters = PackedWriter::default();
        for (index, error) in failed {
            // A failed record is never dropped: a batch that cannot give it
            // back fails the task (a bug, the batch is replayed).
            let record = self.input.batch.record(index).map_err(|e| {
                Fault::internal(&format!(
                    "record {index} of the batch could not be read back: {e}"
                ))
            })?;
            match self.plan.settings.error_policy {
                ErrorPolicy::DeadLetter => {
                    self.dead_letter(&mut dead_letters, record, &error);
                    self.status.count("records-dead-lettered", 1);
                }
                _ => {
                    tracing::warn!(
                        task = &*self.label, topic = %self.input.topic,
                        partition = self.input.partition, offset = record.offset, error = %error,
                        "skipped a record the guest failed on"
                    );
                    self.status.count("records-skipped", 1);
                }
            }
        }
        let dead_letters = dead_letters
            .finish()
            .map_err(|e| Fault::internal(&format!("dead letters could not be read back: {e}")))?;
        Ok((outputs, dead_letters))
    }

    /// Runs the batch in hand through the guest in one call; when it fails,
    /// retries its records one call per record, so each failing record
    /// costs one failed call. Failed calls are the expensive ones (a
    /// deadline, an instance renewed, a memory cap filled); a successful
    /// call of one record costs microseconds. A guest that names the
    /// failing record (an error with its index) is taken at its word: the
    /// records before it are retried together, it fails without another
    /// call, the rest start over. The failed records are given by their
    /// index in the batch.
    fn isolate(
        &mut self,
        slot: &mut Option<TaskGuest>,
        outputs: &mut Outputs,
        failed: &mut Vec<(usize, String)>,
    ) -> Result<(), Fault> {
        // Groups of records still to call the guest with, in offset order.
        let mut queue = VecDeque::new();
        queue.push_back(0..self.input.batch.len());
        while let Some(group) = queue.pop_front() {
            if group.is_empty() {
                continue;
            }
            // A looping guest costs a deadline per failing record: pausing
            // or deleting the pipeline must not wait for all of them.
            if self.stopping() {
                return Err(Fault::Stopping);
            }
            let error = match self.call_once(slot, group.clone())? {
                Ok(out) => {
                    outputs.append(out);
                    continue;
                }
                Err(error) => error,
            };
            let named = match error {
                GuestError::Failed {
                    record_index: Some(i),
                    ..
                } => usize::try_from(i).ok().filter(|i| *i < group.len()),
                _ => None,
            };
            match named {
                _ if group.len() == 1 => failed.push((group.start, error.to_string())),
                Some(i) => {
                    let at = group.start + i;
                    failed.push((at, error.to_string()));
                    queue.push_front(at + 1..group.end);
                    queue.push_front(group.start..at);
                }
                None => {
                    for record in group.rev() {
                        queue.push_front(record..record + 1);
                    }
                }
            }
        }
        Ok(())
    }

    /// One guest call with the records of the batch in hand in `range`. On
    /// failure its state writes are rolled back and the instance renewed,
    /// contained (a trap leaves it unusable, and any guest may hold half
    /// the batch in its own memory), and the call's error is returned.
    fn call_once(
        &mut self,
        slot: &mut Option<TaskGuest>,
        range: Range<usize>,
    ) -> Result<Result<Outputs, GuestError>, Fault> {
        let guest = live(slot)?;
        let savepoint = guest.services().state.pending().clone();
        let input = &self.input.batch;
        // The whole batch on the first try; part of it only after a failure.
        let part;
        let batch = if range == (0..input.len()) {
            input
        } else {
            part = input.slice(range);
            &part
        };
        let error = match timed(&self.status, || guest.process(batch)) {
            Ok(out) => return Ok(Ok(out)),
            // Not the records' fault: the whole batch is retried.
            Err(error) if error.is_host_fault() => return Err(error.into()),
            Err(e) => e,
        };
        self.contain();
        let mut guest = slot.take().ok_or_else(no_guest)?;
        guest.services().rollback(savepoint)?;
        let plan = &self.plan;
        *slot = Some(guest.renew(&plan.runtime, &plan.module, &self.guest_info(), self.tier)?);
        Ok(Err(error))
    }

    /// Appends the dead letter of `record` to `letters`: its key, value and
    /// headers, and where it came from and why it failed in `eddy.*`
    /// headers.
    fn dead_letter(&self, letters: &mut PackedWriter, record: InputView<'_>, error: &str) {
        let settings = &self.plan.settings;
        let partition = self.input.partition.to_string();
        let offset = record.offset.to_string();
        let step = settings.step.to_string();
        let provenance = [
            ("eddy.error", error),
            ("eddy.source.topic", self.input.topic.as_str()),
            ("eddy.source.partition", partition.as_str()),
            ("eddy.source.offset", offset.as_str()),
            ("eddy.pipeline", settings.pipeline.as_str()),
            ("eddy.step", step.as_str()),
            ("eddy.module", settings.module.as_str()),
        ];
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .copied()
            .chain(
                provenance
                    .iter()
                    .map(|(name, value)| (*name, Some(value.as_bytes()))),
            )
            .collect();
        letters.push(
            record.key,
            record.value,
            headers.into_iter(),
            Some(record.timestamp),
            None,
        );
    }
}

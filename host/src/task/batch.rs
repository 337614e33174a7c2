//! One turn of a task's loop: poll a batch, make one guest call (or, under
//! the skip and dead-letter policies, as many as isolating its failures
//! takes), advance stream time and fire the timers that are due, produce
//! the outputs into what is open, and commit when the interval is up.

use super::commit::Produced;
use super::fault::Fault;
use super::input::Polling;
use super::partition::{PartitionTask, live, now_ms, timed};
use super::plan::TaskGuest;
use super::settings::ErrorPolicy;
use crate::runtime::{InputBatch, Outputs};
use crate::state::TimeDomain;
use rdkafka::consumer::ConsumerContext;
use std::time::Duration;

/// How long one poll waits before the task checks whether it should stop.
pub(super) const IDLE_POLL: Duration = Duration::from_millis(100);

/// What one turn of the task loop did.
pub(super) enum Progress {
    /// Nothing to do.
    Idle,
    /// A batch was produced; it commits with its commit interval.
    Produced,
    /// Everything produced so far was committed.
    Committed,
}

impl<C: ConsumerContext + 'static> PartitionTask<C> {
    /// Polls one batch and carries it through; with no records, fires the
    /// wall-clock timers that are due, or commits what is open.
    pub(super) fn step(&mut self, slot: &mut Option<TaskGuest>) -> Result<Progress, Fault> {
        let settings = &self.plan.settings;
        // While a commit is open, wait no longer than until it is due.
        let first_wait = self
            .commits
            .due_in(settings.commit_interval)
            .map_or(IDLE_POLL, |due| due.min(IDLE_POLL));
        let polling = Polling {
            max: settings.max_batch_records as usize,
            first_wait,
            linger: settings.batch_linger,
        };
        self.input.poll(&polling)?;
        let off_partition = self.input.take_off_partition_keys();
        if off_partition > 0 {
            self.status.add_off_partition_keys(off_partition);
        }
        if self.input.batch.is_empty() {
            return self.idle(live(slot)?);
        }
        self.commits
            .processing_from(self.input.batch.offsets().first().copied());
        let span = BatchSpan::of(&self.input.batch);
        // The guest sees the stream time before this batch, and tracks it
        // record by record within the batch (the SDK's windows do).
        let (outputs, dead_letters) = match self.plan.settings.error_policy {
            ErrorPolicy::Fail => {
                let guest = live(slot)?;
                let called = timed(&self.status, || guest.process(&self.input.batch));
                (self.contain_failed(called)?, Outputs::default())
            }
            ErrorPolicy::Skip | ErrorPolicy::DeadLetter => self.process_isolating(slot)?,
        };
        self.finish_records(live(slot)?, outputs, &dead_letters, &span)
    }

    /// A turn without input: fires the wall-clock timers that are due; with
    /// none, commits what is open (the input went quiet) or, with nothing
    /// open, brings the group's offset up to date.
    fn idle(&mut self, guest: &mut TaskGuest) -> Result<Progress, Fault> {
        let now = now_ms();
        let due = guest.services().take_due_timers(TimeDomain::WallClock, now);
        if due.is_empty() {
            if self.commits.is_open() {
                self.commit_open(guest)?;
                return Ok(Progress::Committed);
            }
            self.offsets.commit_idle(self.commits.checkpoint().offset);
            return Ok(Progress::Idle);
        }
        let called = timed(&self.status, || guest.on_timers(&due));
        let outputs = self.contain_failed(called)?;
        self.status.record_output(outputs.len());
        let stream_time = guest.services().stream_time;
        self.produce(
            guest,
            Produced {
                outputs: &outputs,
                dead_letters: &Outputs::default(),
                next_offset: None,
                stream_time,
                default_timestamp: now,
            },
        )
    }

    /// The rest of a batch once the guest processed its records: advance
    /// stream time, fire event-time timers, produce, commit when due.
    fn finish_records(
        &mut self,
        guest: &mut TaskGuest,
        mut outputs: Outputs,
        dead_letters: &Outputs,
        span: &BatchSpan,
    ) -> Result<Progress, Fault> {
        let services = guest.services();
        if let Some(max) = span.max_timestamp {
            services.advance_stream_time(max);
        }
        let due = match services.stream_time {
            Some(now) => services.take_due_timers(TimeDomain::EventTime, now),
            None => Vec::new(),
        };
        if !due.is_empty() {
            let called = timed(&self.status, || guest.on_timers(&due));
            outputs.append(self.contain_failed(called)?);
        }
        self.status.record_batch(span.count, outputs.len());
        let stream_time = guest.services().stream_time;
        self.produce(
            guest,
            Produced {
                outputs: &outputs,
                dead_letters,
                next_offset: Some(span.next_offset),
                stream_time,
                default_timestamp: span.last_timestamp,
            },
        )
    }

    /// Produces a batch into what is open, and commits if the commit
    /// interval is up, or if the state writes pending are as many as the
    /// daemon lets a task hold (`limits.commit-state-bytes`).
    fn produce(&mut self, guest: &mut TaskGuest, batch: Produced<'_>) -> Result<Progress, Fault> {
        let interval_up = self
            .commits
            .produce(batch, self.plan.settings.commit_interval)?;
        if interval_up || guest.services().commit_due_to_size() {
            self.commit_open(guest)?;
            return Ok(Progress::Committed);
        }
        Ok(Progress::Produced)
    }

    /// Commits what is open (see `commit`) and tells the group how far the
    /// input now reaches. A commit Kafka keeps waiting because it refuses
    /// the writes shows why in the task's status while it waits, and the
    /// status clears once the commit goes through.
    pub(super) fn commit_open(&mut self, guest: &mut TaskGuest) -> Result<(), Fault> {
        let (plan, status, label) = (&self.plan, &self.status, &self.label);
        let mut waited_on_refusal = false;
        let committed = self.commits.commit(&mut guest.services().state, || {
            if let Some(refusal) = plan.refused_writes() {
                tracing::warn!(task = &**label, refusal, "a commit waits on Kafka");
                status.fail(format!("waiting to commit: {refusal}"));
                waited_on_refusal = true;
            }
        })?;
        if waited_on_refusal {
            status.clear_failure();
        }
        if let Some(offset) = committed {
            self.offsets.reached(offset);
        }
        Ok(())
    }
}

/// What the end of a batch needs to know about its records.
struct BatchSpan {
    count: usize,
    /// The offset after the last record.
    next_offset: i64,
    last_timestamp: i64,
    /// The highest valid timestamp, to advance stream time.
    max_timestamp: Option<i64>,
}

impl BatchSpan {
    fn of(batch: &InputBatch) -> Self {
        let timestamps = batch.timestamps();
        Self {
            count: batch.len(),
            next_offset: batch.offsets().last().map_or(0, |offset| offset + 1),
            last_timestamp: timestamps.last().copied().unwrap_or(0),
            max_timestamp: timestamps.iter().copied().filter(|t| *t >= 0).max(),
        }
    }
}

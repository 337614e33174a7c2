//! A task's guest log: the guest's messages go to the daemon's log under
//! the task's name, at most `limits.log-bytes-per-second` of them. A guest
//! that logs in a loop would otherwise fill the operator's disk and drown
//! every other pipeline's lines; over the rate its messages are dropped,
//! counted in the task's `log-messages-dropped`, and reported: the first
//! drop at once, then at most once a second.

use super::TaskStatus;
use std::time::{Duration, Instant};
use tracing::Level;

/// Longest message kept whole; the rest is cut, and the cut said.
const MAX_MESSAGE_BYTES: usize = 4 << 10;

/// How often dropped messages are reported.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// A token bucket of log bytes, one second's worth deep.
pub(super) struct GuestLog {
    bytes_per_second: u64,
    /// Bytes that may be logged now.
    allowance: f64,
    refilled: Instant,
    /// Messages dropped since the last report, and their bytes.
    dropped: (u64, u64),
    /// When drops were last reported: the first is at once, the rest at
    /// most once a second.
    reported: Option<Instant>,
}

impl GuestLog {
    pub(super) fn new(bytes_per_second: u64) -> Self {
        let now = Instant::now();
        Self {
            bytes_per_second,
            allowance: bytes_per_second as f64,
            refilled: now,
            dropped: (0, 0),
            reported: None,
        }
    }

    /// Logs `message` from the guest of task `label`, if the rate allows.
    pub(super) fn log(&mut self, label: &str, status: &TaskStatus, level: Level, message: &str) {
        let now = Instant::now();
        let rate = self.bytes_per_second as f64;
        let refill = now.duration_since(self.refilled).as_secs_f64() * rate;
        self.allowance = (self.allowance + refill).min(rate);
        self.refilled = now;
        let message = cut(message);
        let cost = message.len().max(1) as f64;
        if cost <= self.allowance {
            self.allowance -= cost;
            emit(label, level, &message);
        } else {
            self.dropped.0 += 1;
            self.dropped.1 += message.len() as u64;
            status.count("log-messages-dropped", 1);
        }
        let report_due = self
            .reported
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY);
        if self.dropped.0 > 0 && report_due {
            let (messages, bytes) = std::mem::take(&mut self.dropped);
            tracing::warn!(
                task = label,
                messages,
                bytes,
                limit = self.bytes_per_second,
                "the guest logs faster than limits.log-bytes-per-second; messages dropped"
            );
            self.reported = Some(now);
        }
    }
}

/// `message`, cut to [`MAX_MESSAGE_BYTES`] on a character boundary.
fn cut(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.into();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes cut)",
        &message[..end],
        message.len() - end
    )
    .into()
}

fn emit(task: &str, level: Level, message: &str) {
    match level {
        Level::TRACE => tracing::trace!(task, "{message}"),
        Level::DEBUG => tracing::debug!(task, "{message}"),
        Level::INFO => tracing::info!(task, "{message}"),
        Level::WARN => tracing::warn!(task, "{message}"),
        _ => tracing::error!(task, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_rate_and_counted() {
        let status = TaskStatus::default();
        let mut log = GuestLog::new(10_000);
        for _ in 0..1000 {
            log.log("t", &status, Level::INFO, &"x".repeat(100));
        }
        let dropped = status.counters()["log-messages-dropped"];
        // One second's worth (100 messages) passes, plus what refills while
        // the loop runs.
        assert!((850..=900).contains(&dropped), "dropped {dropped}");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = cut(&long);
        assert!(cut.len() < MAX_MESSAGE_BYTES + 40);
        assert!(cut.ends_with(&format!(
            "({} more bytes cut)",
            long.len() - MAX_MESSAGE_BYTES
        )));
    }
}

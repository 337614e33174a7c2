//! A blocking Kafka call given a deadline.
//!
//! librdkafka holds some calls for as long as Kafka is away: a synchronous
//! offset commit waits for a group coordinator until the consumer's session
//! times out, a delivery for the producer's message timeout (a minute). A
//! stopping daemon must not wait that long for a courtesy to the others, so
//! such calls run on a thread of their own and are waited for a while.

use std::time::Duration;

/// Why [`call_within`] has no answer.
#[derive(Debug)]
pub(crate) enum Unanswered {
    /// No thread could be started for the call; it did not run.
    Spawn(std::io::Error),
    /// The call still blocks; it finishes on its thread, its result dropped.
    TimedOut,
}

/// Runs `call` on a thread named `name` and waits at most `within` for it.
pub(crate) fn call_within<T: Send + 'static>(
    name: &str,
    within: Duration,
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unanswered> {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // The waiter may have given up and gone.
            let _ = done.send(call());
        })
        .map_err(Unanswered::Spawn)?;
    outcome
        .recv_timeout(within)
        .map_err(|_| Unanswered::TimedOut)
}

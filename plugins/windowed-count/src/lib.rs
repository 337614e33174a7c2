//! Counts records per key per window, emitting each window's count once,
//! when it closes (Kafka Streams' `windowedBy(...).count()` with
//! `suppress(untilWindowCloses)`).
//!
//! Configuration (all optional):
//! - `window`: `tumbling` (default), `hopping` or `session`;
//! - `size`: window length, default `1m` (tumbling and hopping);
//! - `advance`: how far hopping windows step, default `size`;
//! - `gap`: inactivity gap of session windows, default `5m`;
//! - `grace`: how long after its end a window still takes late records,
//!   default `0s`.
//!
//! Output: key = the record key, value = JSON
//! `{"key":"…","start":ms,"end":ms,"count":n}`. Records later than the grace
//! period are dropped and counted as `late-records-dropped` in the status.

use eddy_sdk::prelude::*;
use eddy_sdk::windows::{Closed, Windows};
use std::time::Duration;

/// See the crate docs.
#[derive(Default)]
pub struct WindowedCount {
    windows: Option<Windows>,
}

impl WindowedCount {
    fn windows(&self) -> Result<&Windows> {
        self.windows
            .as_ref()
            .ok_or_else(|| Error::new("windowed-count was not initialised"))
    }
}

fn result_json(closed: &Closed<u64>) -> String {
    serde_json::json!({
        "key": String::from_utf8_lossy(&closed.key),
        "start": closed.window.start,
        "end": closed.window.end,
        "count": closed.value,
    })
    .to_string()
}

impl Processor for WindowedCount {
    fn init(&mut self, _task: &Task) -> Result<()> {
        let size = config::duration("size")?.unwrap_or(Duration::from_secs(60));
        let grace = config::duration("grace")?.unwrap_or(Duration::ZERO);
        let windows = match config::get("window").as_deref().unwrap_or("tumbling") {
            "tumbling" => Windows::tumbling(size),
            "hopping" => Windows::hopping(size, config::duration("advance")?.unwrap_or(size)),
            "session" => {
                Windows::session(config::duration("gap")?.unwrap_or(Duration::from_secs(300)))
            }
            other => {
                return Err(Error::new(format!(
                    "configuration key `window` = {other:?}: use tumbling, hopping or session"
                )));
            }
        };
        self.windows = Some(windows.grace(grace));
        Ok(())
    }

    fn process(&mut self, record: Record, _out: &mut Emitter) -> Result<()> {
        let key = record.key().unwrap_or_default();
        self.windows()?
            .add(key, record.timestamp(), |count: &mut u64| *count += 1)?;
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Emitter) -> Result<()> {
        if let Some(closed) = self.windows()?.close::<u64>(&timer)? {
            out.emit(
                OutputRecord::new(result_json(&closed))
                    .with_key(closed.key.clone())
                    .with_timestamp(closed.window.end - 1),
            );
        }
        Ok(())
    }
}

eddy_sdk::export!(WindowedCount);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::testing::TestHarness;

    fn at(key: &str, t: i64) -> Record {
        Record::new("").with_key(key).with_timestamp(t)
    }

    #[test]
    fn one_minute_windows_emit_once_on_close() {
        let mut h = TestHarness::<WindowedCount>::new().config("grace", "10s");
        assert!(
            h.process([at("a", 1_000), at("b", 2_000), at("a", 61_000)])
                .expect("ok")
                .is_empty()
        );
        let out = h.process([at("a", 30_000), at("a", 75_000)]).expect("ok");
        let values: Vec<_> = out.iter().filter_map(OutputRecord::value_str).collect();
        assert_eq!(
            values,
            [
                r#"{"count":2,"end":60000,"key":"a","start":0}"#,
                r#"{"count":1,"end":60000,"key":"b","start":0}"#
            ]
        );
    }

    #[test]
    fn a_bad_window_kind_is_a_clear_error() {
        let mut h = TestHarness::<WindowedCount>::new().config("window", "sliding");
        let err = h.process([at("a", 1)]).expect_err("must fail");
        assert!(
            err.to_string().contains("tumbling, hopping or session"),
            "{err}"
        );
    }
}

//! The host's services, as the rest of the SDK sees them.
//!
//! On `wasm32` these call the component imports of `eddy:processor`. On any
//! other target they are served in memory by [`crate::testing`], one host per
//! thread, so tests running in parallel never share state.

pub(crate) use imp::*;

/// State entries as the host returns them: (key, value) in key order.
pub(crate) type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A state operation's failure, as the host reports it. (The in-memory
/// host never fails.)
#[derive(Debug)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) enum StateFailure {
    TooLarge(String),
    Unavailable(String),
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::StateFailure;
    use crate::__private::bindings::eddy::processor::{config, log, metrics, state, timers, types};
    use crate::log::Level;
    use crate::timers::TimeDomain;

    fn failure(e: state::StateError) -> StateFailure {
        match e {
            state::StateError::TooLarge(m) => StateFailure::TooLarge(m),
            state::StateError::Unavailable(m) => StateFailure::Unavailable(m),
        }
    }

    fn domain(d: TimeDomain) -> types::TimeDomain {
        match d {
            TimeDomain::EventTime => types::TimeDomain::EventTime,
            TimeDomain::WallClock => types::TimeDomain::WallClock,
        }
    }

    pub(crate) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => log::Level::Trace,
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message);
    }

    pub(crate) fn config_get(key: &str) -> Option<String> {
        config::get(key)
    }

    pub(crate) fn config_all() -> Vec<(String, String)> {
        config::all()
    }

    pub(crate) fn state_get(key: &[u8]) -> Result<Option<Vec<u8>>, StateFailure> {
        state::get(key).map_err(failure)
    }

    pub(crate) fn state_put(key: &[u8], value: &[u8]) -> Result<(), StateFailure> {
        state::put(key, value).map_err(failure)
    }

    pub(crate) fn state_delete(key: &[u8]) -> Result<(), StateFailure> {
        state::delete(key).map_err(failure)
    }

    pub(crate) fn state_scan(
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: u32,
    ) -> Result<super::Entries, StateFailure> {
        state::scan(start, end, limit)
            .map(|entries| entries.into_iter().map(|e| (e.key, e.value)).collect())
            .map_err(failure)
    }

    pub(crate) fn state_scan_prefix(
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Result<super::Entries, StateFailure> {
        state::scan_prefix(prefix, start_after, limit)
            .map(|entries| entries.into_iter().map(|e| (e.key, e.value)).collect())
            .map_err(failure)
    }

    pub(crate) fn timer_set(d: TimeDomain, at: i64, key: &[u8]) {
        timers::set(domain(d), at, key);
    }

    pub(crate) fn timer_cancel(d: TimeDomain, at: i64, key: &[u8]) {
        timers::cancel(domain(d), at, key);
    }

    pub(crate) fn stream_time() -> Option<i64> {
        timers::stream_time()
    }

    pub(crate) fn metrics_increment(name: &str, delta: u64) {
        metrics::increment(name, delta);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::StateFailure;
    use crate::log::Level;
    use crate::testing::with_host;
    use crate::timers::TimeDomain;
    use std::ops::Bound;

    pub(crate) fn log(level: Level, message: &str) {
        with_host(|h| h.logs.push((level, message.to_owned())));
    }

    pub(crate) fn config_get(key: &str) -> Option<String> {
        with_host(|h| h.config.get(key).cloned())
    }

    pub(crate) fn config_all() -> Vec<(String, String)> {
        with_host(|h| {
            h.config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    pub(crate) fn state_get(key: &[u8]) -> Result<Option<Vec<u8>>, StateFailure> {
        Ok(with_host(|h| h.state.get(key).cloned()))
    }

    pub(crate) fn state_put(key: &[u8], value: &[u8]) -> Result<(), StateFailure> {
        with_host(|h| {
            h.state.insert(key.to_vec(), value.to_vec());
        });
        Ok(())
    }

    pub(crate) fn state_delete(key: &[u8]) -> Result<(), StateFailure> {
        with_host(|h| {
            h.state.remove(key);
        });
        Ok(())
    }

    pub(crate) fn state_scan(
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: u32,
    ) -> Result<super::Entries, StateFailure> {
        let lower = start.map_or(Bound::Unbounded, |s| Bound::Included(s.to_vec()));
        let upper = end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec()));
        Ok(with_host(|h| {
            h.state
                .range::<Vec<u8>, _>((lower, upper))
                .take(limit as usize)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }

    pub(crate) fn state_scan_prefix(
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Result<super::Entries, StateFailure> {
        let lower = match start_after {
            Some(after) => Bound::Excluded(after.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        Ok(with_host(|h| {
            h.state
                .range::<Vec<u8>, _>((lower, Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .take(limit as usize)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }

    pub(crate) fn timer_set(domain: TimeDomain, at: i64, key: &[u8]) {
        with_host(|h| {
            h.timers.insert((at, domain, key.to_vec()));
        });
    }

    pub(crate) fn timer_cancel(domain: TimeDomain, at: i64, key: &[u8]) {
        with_host(|h| {
            h.timers.remove(&(at, domain, key.to_vec()));
        });
    }

    pub(crate) fn stream_time() -> Option<i64> {
        with_host(|h| h.stream_time)
    }

    pub(crate) fn metrics_increment(name: &str, delta: u64) {
        with_host(|h| *h.counters.entry(name.to_owned()).or_default() += delta);
    }
}

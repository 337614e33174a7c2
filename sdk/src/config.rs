//! The pipeline's configuration: the `key=value` pairs given at deploy time
//! (`eddy pipeline create ... --config pattern=error`).
//!
//! ```
//! use eddy_sdk::{config, testing::TestHarness};
//! # #[derive(Default)] struct P;
//! # impl eddy_sdk::Processor for P {
//! #   fn process(&mut self, _: eddy_sdk::Record, _: &mut eddy_sdk::Emitter) -> eddy_sdk::Result { Ok(()) }
//! # }
//! let _host = TestHarness::<P>::new().config("limit", "10");
//! assert_eq!(config::get("limit").as_deref(), Some("10"));
//! assert_eq!(config::parse::<u32>("limit").unwrap(), Some(10));
//! assert!(config::require("missing").is_err());
//! ```

use crate::Error;
use std::str::FromStr;

/// The value of `key`, if configured.
pub fn get(key: &str) -> Option<String> {
    crate::host::config_get(key)
}

/// The value of `key`, or an error naming the missing key.
pub fn require(key: &str) -> Result<String, Error> {
    get(key).ok_or_else(|| {
        Error::new(format!(
            "missing configuration key `{key}`: deploy with --config {key}=VALUE"
        ))
    })
}

/// The value of `key` parsed as `T`, `None` when not configured, or an error
/// naming the key and the bad value.
pub fn parse<T>(key: &str) -> Result<Option<T>, Error>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    get(key)
        .map(|raw| {
            raw.parse::<T>().map_err(|e| {
                Error::new(format!(
                    "configuration key `{key}` = {raw:?} is invalid: {e}"
                ))
            })
        })
        .transpose()
}

/// The value of `key` as a duration such as `500ms`, `30s`, `10m`, `2h` or
/// `1d` (a bare number is milliseconds); `None` when not configured.
///
/// ```
/// # use eddy_sdk::{config, testing::TestHarness};
/// # #[derive(Default)] struct P;
/// # impl eddy_sdk::Processor for P {
/// #   fn process(&mut self, _: eddy_sdk::Record, _: &mut eddy_sdk::Emitter) -> eddy_sdk::Result { Ok(()) }
/// # }
/// let _host = TestHarness::<P>::new().config("ttl", "10m");
/// assert_eq!(config::duration("ttl")?, Some(std::time::Duration::from_secs(600)));
/// # Ok::<(), eddy_sdk::Error>(())
/// ```
pub fn duration(key: &str) -> Result<Option<std::time::Duration>, Error> {
    let Some(raw) = get(key) else {
        return Ok(None);
    };
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let millis_per = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if millis_per > 0 => Ok(Some(std::time::Duration::from_millis(
            n.saturating_mul(millis_per),
        ))),
        _ => Err(Error::new(format!(
            "configuration key `{key}` = {raw:?} is not a duration (write e.g. 500ms, 30s, 10m, 2h)"
        ))),
    }
}

/// Every configured pair.
pub fn all() -> Vec<(String, String)> {
    crate::host::config_all()
}

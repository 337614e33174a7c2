//! The daemon's defaults and ceilings for guests (the `[limits]` table):
//! what a pipeline gets when it asks for nothing, and the most it may ask
//! for.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Defaults and ceilings for guests.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsConfig {
    /// Linear memory cap per guest instance, in bytes.
    pub memory_bytes: u64,
    /// Deadline for one guest call.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Most records handed to a guest in one call.
    pub max_batch_records: u32,
    /// How long a task waits to fill a batch.
    #[serde(with = "humantime_serde")]
    pub batch_linger: Duration,
    /// Largest module accepted for upload, in bytes.
    pub max_module_bytes: u64,
    /// Most records one guest call may emit.
    #[serde(default = "default_max_output_records")]
    pub max_output_records: u32,
    /// Most bytes (keys, values, headers) one guest call may emit.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
    /// Largest record eddy produces (key, value and headers). Raise it only
    /// together with the brokers' `message.max.bytes`.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: u64,
}

/// Also the default of specs stored before the output limits existed.
pub(crate) fn default_max_output_records() -> u32 {
    LimitsConfig::default().max_output_records
}

pub(crate) fn default_max_output_bytes() -> u64 {
    LimitsConfig::default().max_output_bytes
}

pub(crate) fn default_max_record_bytes() -> u64 {
    LimitsConfig::default().max_record_bytes
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            memory_bytes: 128 << 20,
            call_timeout: Duration::from_secs(10),
            max_batch_records: 1024,
            batch_linger: Duration::from_millis(10),
            max_module_bytes: 64 << 20,
            max_output_records: 100_000,
            max_output_bytes: 64 << 20,
            // librdkafka's and Kafka's default message.max.bytes.
            max_record_bytes: 1_000_000,
        }
    }
}

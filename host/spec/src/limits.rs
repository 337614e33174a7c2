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
    /// Most bytes of state writes one guest call may add to what its task
    /// holds pending.
    #[serde(default = "default_max_call_state_bytes")]
    pub max_call_state_bytes: u64,
    /// Pending state bytes at which a task commits without waiting for
    /// its commit interval.
    #[serde(default = "default_commit_state_bytes")]
    pub commit_state_bytes: u64,
    /// Most timers pending per task.
    #[serde(default = "default_max_timers")]
    pub max_timers: u32,
    /// Most distinct counter names per task.
    #[serde(default = "default_max_counters")]
    pub max_counters: u32,
    /// Guest log bytes per second per task; a burst of one second's worth
    /// passes at once.
    #[serde(default = "default_log_bytes_per_second")]
    pub log_bytes_per_second: u64,
}

impl LimitsConfig {
    /// The host-side budgets every task's guest gets on this daemon.
    pub fn budgets(&self) -> GuestBudgets {
        GuestBudgets {
            max_call_state_bytes: self.max_call_state_bytes,
            commit_state_bytes: self.commit_state_bytes,
            max_timers: self.max_timers,
            max_counters: self.max_counters,
            log_bytes_per_second: self.log_bytes_per_second,
        }
    }
}

/// What one task's guest may make the host hold or do through its host
/// calls, in the daemon's memory rather than its own: a daemon's, not a
/// pipeline's, since they protect the daemon. A call over a budget fails
/// like a guest error (its writes are discarded, the error policy decides
/// about its records), except the log rate, over which messages are
/// dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestBudgets {
    /// Most bytes of state writes one call may add to what is pending.
    pub max_call_state_bytes: u64,
    /// Pending state bytes at which a task commits early.
    pub commit_state_bytes: u64,
    /// Most timers pending per task.
    pub max_timers: u32,
    /// Most distinct counter names per task.
    pub max_counters: u32,
    /// Guest log bytes per second per task.
    pub log_bytes_per_second: u64,
}

impl Default for GuestBudgets {
    fn default() -> Self {
        Self {
            max_call_state_bytes: 64 << 20,
            commit_state_bytes: 32 << 20,
            max_timers: 1_000_000,
            max_counters: 100,
            log_bytes_per_second: 64 << 10,
        }
    }
}

fn default_max_call_state_bytes() -> u64 {
    GuestBudgets::default().max_call_state_bytes
}

fn default_commit_state_bytes() -> u64 {
    GuestBudgets::default().commit_state_bytes
}

fn default_max_timers() -> u32 {
    GuestBudgets::default().max_timers
}

fn default_max_counters() -> u32 {
    GuestBudgets::default().max_counters
}

fn default_log_bytes_per_second() -> u64 {
    GuestBudgets::default().log_bytes_per_second
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
        let budgets = GuestBudgets::default();
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
            max_call_state_bytes: budgets.max_call_state_bytes,
            commit_state_bytes: budgets.commit_state_bytes,
            max_timers: budgets.max_timers,
            max_counters: budgets.max_counters,
            log_bytes_per_second: budgets.log_bytes_per_second,
        }
    }
}

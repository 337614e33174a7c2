//! End to end: the real `eddy` binary against a broker in its own process,
//! deploying plugins built from `plugins/`. The broker is `eddy dev-broker`,
//! or Apache Kafka with `EDDY_TEST_BROKER=kafka`; `just test` runs the
//! modules whose outcome rests on Kafka's semantics on both.

mod broker;
mod cli;
mod cluster;
mod compaction;
mod control_plane;
mod control_tls;
mod delivery;
mod embedded;
mod exactly_once;
mod failover;
mod hostile;
mod misconfigured;
mod plugins;
mod policies;
mod quotas;
mod secured;
mod state;
mod tenants;

use eddy_tests::{Broker, Daemon};

/// A broker with `topics` and a daemon on a fresh data directory.
fn setup(topics: &[(&str, i32)]) -> anyhow::Result<(Broker, Daemon, tempfile::TempDir)> {
    let broker = Broker::start(topics)?;
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    Ok((broker, daemon, dir))
}

//! End to end: the real `eddy` binary against `eddy dev-broker` in its own
//! process, deploying plugins built from `plugins/`. Run with `just test`.

mod broker;
mod cli;
mod cluster;
mod control_plane;
mod delivery;
mod exactly_once;
mod hostile;
mod plugins;
mod policies;
mod state;

use eddy_tests::{Broker, Daemon};

/// A broker with `topics` and a daemon on a fresh data directory.
fn setup(topics: &[(&str, i32)]) -> anyhow::Result<(Broker, Daemon, tempfile::TempDir)> {
    let broker = Broker::start(topics)?;
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &[])?;
    Ok((broker, daemon, dir))
}

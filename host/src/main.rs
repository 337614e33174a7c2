//! `eddy`: the daemon and its command line. See `eddy --help`.

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    eddy::cli::run(eddy::cli::Cli::parse()).await
}

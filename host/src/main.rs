//! `eddy`: the daemon and its command line. See `eddy --help`.

use clap::Parser as _;

// mimalloc rather than glibc's malloc: the data path allocates and frees a
// batch's records on one thread per task, and glibc returned that memory
// to the kernel and faulted it back in on every batch (a fifth of the CPU
// of a guest call in `just microbench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    eddy::cli::run(eddy::cli::Cli::parse()).await
}

//! `doorwatch-collector`: parses the command line and hands it to the
//! library ([`doorwatch_collector::cli`]); nothing else lives here.

#![forbid(unsafe_code)]

use clap::Parser;

/// mimalloc instead of the system allocator: ingest allocates and frees
/// many small buffers on every thread, where glibc's malloc spent about a
/// third of the collector's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = doorwatch_collector::cli::Cli::parse();
    cli.log.init();
    doorwatch_collector::cli::run(cli)
}

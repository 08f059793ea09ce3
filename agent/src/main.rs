//! `doorwatch-agent`: the command-line entry point. It parses the flags,
//! sets up logging and hands the subcommand to [`cli`]; everything else
//! lives in the `doorwatch_agent` library ([`doorwatch_agent::app`] runs
//! the agent).

#![forbid(unsafe_code)]

mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    cli.log.init();
    cli::dispatch(cli.command)
}

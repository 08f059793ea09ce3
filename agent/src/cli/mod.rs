//! The command line: flags, subcommands and one handler per subcommand
//! (`run`, `enroll`, `check-config`, `top`, `status`, `replay`), with the
//! output each prints next to it. Part of the binary, not the library:
//! handlers report with `anyhow` and context for the person at the
//! terminal.
//!
//! It must not hold capture, detection or delivery logic: `run` hands a
//! validated configuration to [`doorwatch_agent::app`], and the other
//! commands call the library's subsystems.

mod args;
mod check_config;
mod enroll;
mod replay;
mod status;
mod top;

use std::path::Path;

use anyhow::Context;
use doorwatch_agent::config::{AgentConfig, ValidConfig};

pub use args::{Cli, Command};

/// Runs one subcommand.
pub fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => Ok(doorwatch_agent::app::run(load_config(&config)?)?),
        Command::Top {
            config,
            once,
            seconds,
            format,
        } => top::top(&load_config(&config)?, once.then_some(seconds), format),
        Command::Status { config } => status::status(&load_config(&config)?),
        Command::Enroll {
            config,
            collector,
            token,
            ca,
        } => enroll::enroll_once(load_config(&config)?, collector, token, ca),
        Command::CheckConfig { config } => {
            check_config::check_config(&config, &load_config(&config)?)
        }
        Command::Replay {
            pcap,
            local_ips,
            format,
        } => replay::replay(&pcap, local_ips, format),
    }
}

/// Reads and validates agent.toml.
fn load_config(path: &Path) -> anyhow::Result<ValidConfig> {
    AgentConfig::load(path)
        .and_then(AgentConfig::validate)
        .with_context(|| format!("invalid configuration {}", path.display()))
}

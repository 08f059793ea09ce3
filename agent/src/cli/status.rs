//! `doorwatch-agent status`: what the running agent saw recently, read
//! from its status file and told in plain words. It asks the running
//! agent nothing.

use anyhow::Context;
use doorwatch_agent::config::ValidConfig;
use doorwatch_agent::status::{self, Status};
use doorwatch_process::clock::unix_now_ms;

/// Prints the status file of the agent configured by `config`.
pub fn status(config: &ValidConfig) -> anyhow::Result<()> {
    let path = status::path_for(&config.spool_dir);
    let status = Status::read(&path).with_context(|| {
        format!(
            "cannot read {}; is the agent running (doorwatch-agent run)?",
            path.display()
        )
    })?;
    print!("{}", status.describe(unix_now_ms()));
    Ok(())
}

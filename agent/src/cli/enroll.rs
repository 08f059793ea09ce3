//! `doorwatch-agent enroll`: get this PC's identity by hand, once, with a
//! bootstrap token (`run` does the same by itself when agent.toml holds
//! the token).

use std::path::PathBuf;

use anyhow::Context;
use doorwatch_agent::app;
use doorwatch_agent::config::ValidConfig;
use doorwatch_agent::enroll;

/// Enrolls with the collector and writes the certificate and key where
/// `config` says.
pub fn enroll_once(
    config: ValidConfig,
    collector: Option<String>,
    token: Option<String>,
    ca: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut files = app::identity_files(&config);
    if let Some(address) = collector {
        // Accept a URL as well as host:port.
        let address = address
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let host = address
            .rsplit_once(':')
            .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
            .with_context(|| format!("--collector {address:?} is not host:port"))?;
        files.server_name = host.to_owned();
        files.address = address;
    }
    if let Some(ca) = ca {
        files.ca = ca;
    }
    let token = token
        .or_else(|| config.token.as_ref().map(|t| t.expose().to_owned()))
        .context("no token: pass --token or set collector.token in agent.toml")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let enrolled = runtime
        .block_on(enroll::enroll(&files, &token, &app::claims()))
        .with_context(|| format!("enrollment with {} failed", files.address))?;
    tracing::info!(agent_id = %enrolled.agent_id, group = %enrolled.group, "enrolled");
    println!(
        "enrolled as agent {} (group {})",
        enrolled.agent_id, enrolled.group
    );
    println!("certificate: {}", files.cert.display());
    println!("key (0600):  {}", files.key.display());
    Ok(())
}

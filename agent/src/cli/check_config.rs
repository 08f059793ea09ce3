//! `doorwatch-agent check-config`: the configuration and the files it
//! names, checked without starting anything.

use std::path::Path;

use anyhow::Context;
use doorwatch_agent::config::ValidConfig;
use doorwatch_agent::tls::ClientTls;

/// Checks the TLS files that `valid` (read from `config`) names; prints
/// `ok`.
pub fn check_config(config: &Path, valid: &ValidConfig) -> anyhow::Result<()> {
    if valid.token.is_some() && !valid.cert.exists() {
        doorwatch_tls::load_roots(&valid.ca)
            .context("the CA bundle named in collector.ca does not work")?;
        println!(
            "{}: ok (enrolls with its token on first start)",
            config.display()
        );
        return Ok(());
    }
    ClientTls::load(&valid.ca, &valid.cert, &valid.key, &valid.server_name)
        .context("the TLS files named in [collector] do not work")?;
    println!("{}: ok", config.display());
    Ok(())
}

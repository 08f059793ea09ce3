//! `pki`: the campus root CA, the issuing CA, and certificates issued by hand.

use super::PkiCommand;
use crate::trust::pki;
use anyhow::Context;

pub(crate) fn run_pki(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init {
            dir,
            names,
            ips,
            force,
        } => {
            let (ca, server) = pki::init(&dir, &names, &ips, force)
                .with_context(|| format!("cannot create the PKI in {}", dir.display()))?;
            println!("trust bundle (root CA) for agents: {}", ca.cert.display());
            println!("root CA key (move it offline):     {}", ca.key.display());
            println!(
                "issuing CA (collector signs with): {}",
                dir.join("issuing.pem").display()
            );
            println!(
                "collector certificate:             {}",
                server.cert.display()
            );
            println!(
                "collector key:                     {}",
                server.key.display()
            );
        }
        PkiCommand::RotateIssuing { dir } => {
            let files = pki::rotate_issuing(&dir)
                .with_context(|| format!("cannot make a new issuing CA in {}", dir.display()))?;
            println!(
                "new issuing CA: {} (key {})",
                files.cert.display(),
                files.key.display()
            );
            println!("restart the collector to sign with it");
        }
        PkiCommand::IssueAgent { dir, name, days } => {
            let files = pki::issue_agent(&dir, &name, days)
                .with_context(|| format!("cannot issue a certificate for agent {name:?}"))?;
            println!("agent certificate: {}", files.cert.display());
            println!("agent key:         {}", files.key.display());
        }
    }
    Ok(())
}

//! `campaigns list|show`: campus-wide campaigns for people and scripts.

use super::{CampaignsCommand, connect_store, load_config};
use crate::campaigns::correlate;
use crate::cli::output::{self, Format};
use anyhow::Context;
use doorwatch_process::clock;
use doorwatch_store::MemberKind;

pub(crate) fn campaign_json(row: &doorwatch_store::CampaignRow) -> serde_json::Value {
    serde_json::json!({
        "campaign_id": row.campaign_id.to_string(),
        "kind": row.kind.label(),
        "key": row.campaign_key,
        "state": row.state.label(),
        "severity": correlate::severity_label(row.severity),
        "first_seen": clock::rfc3339(row.first_seen),
        "last_seen": clock::rfc3339(row.last_seen),
        "pcs": row.pcs,
        "sources": row.sources,
        "ports": row.ports,
        "open_ports": row.open_ports,
        "exposed_ports": row.exposed_ports,
        "explanation": row.explanation,
    })
}

pub(crate) async fn run_campaigns(command: CampaignsCommand) -> anyhow::Result<()> {
    match command {
        CampaignsCommand::List {
            config,
            since,
            format,
        } => {
            let store = connect_store(&load_config(&config)?).await?;
            let since = clock::unix_now_u32()
                .saturating_sub(u32::try_from(since.as_secs()).unwrap_or(u32::MAX));
            let rows = store
                .recent_campaigns(since, 10_000)
                .await
                .context("cannot read campaigns")?;
            if format == Format::Table {
                println!(
                    "{:<36}  {:<11}  {:<24}  {:<6}  {:<8}  {:>5}  {:>7}  {:>5}  LAST SEEN (UTC)",
                    "CAMPAIGN", "KIND", "KEY", "STATE", "SEVERITY", "PCS", "SOURCES", "PORTS"
                );
            }
            for row in rows {
                match format {
                    Format::Json => println!("{}", campaign_json(&row)),
                    Format::Table => {
                        output::say(format!(
                            "{:<36}  {:<11}  {:<24}  {:<6}  {:<8}  {:>5}  {:>7}  {:>5}  {}",
                            row.campaign_id,
                            row.kind.label(),
                            row.campaign_key,
                            row.state.label(),
                            correlate::severity_label(row.severity),
                            row.pcs,
                            row.sources,
                            row.ports,
                            clock::rfc3339(row.last_seen)
                        ));
                        output::say(format!("    {}", row.explanation));
                    }
                }
            }
        }
        CampaignsCommand::Show { config, id, format } => {
            let store = connect_store(&load_config(&config)?).await?;
            let members = store
                .campaign_members(id)
                .await
                .context("cannot read the campaign's members")?;
            if members.is_empty() {
                anyhow::bail!("no campaign {id} (see `campaigns list`)");
            }
            let of = |kind: MemberKind| -> Vec<String> {
                members
                    .iter()
                    .filter(|m| m.member == kind)
                    .map(|m| m.value.clone())
                    .collect()
            };
            let (sources, pcs, ports) = (
                of(MemberKind::Source),
                of(MemberKind::Pc),
                of(MemberKind::Port),
            );
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({
                        "campaign_id": id.to_string(),
                        "sources": sources,
                        "pcs": pcs,
                        "ports": ports,
                    })
                ),
                Format::Table => {
                    output::say(format!("campaign {id}"));
                    output::say(format!(
                        "sources ({}): {}",
                        sources.len(),
                        sources.join(" ")
                    ));
                    output::say(format!("PCs     ({}): {}", pcs.len(), pcs.join(" ")));
                    output::say(format!("ports   ({}): {}", ports.len(), ports.join(" ")));
                }
            }
        }
    }
    Ok(())
}

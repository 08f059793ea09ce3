//! `agents list|revoke|health`: enrolled PCs, cutting one off, and heartbeats.

use super::{connect_store, os_user};
use crate::cli::output::{self, Format};
use crate::config::ValidConfig;
use anyhow::Context;
use doorwatch_process::clock;

pub(crate) async fn print_agents(config: ValidConfig, format: Format) -> anyhow::Result<()> {
    let store = connect_store(&config).await?;
    let agents = store
        .agents()
        .await
        .context("cannot read enrolled agents")?;
    let revoked: std::collections::HashMap<String, doorwatch_store::RevocationRow> = store
        .revocations()
        .await
        .context("cannot read revocations")?
        .into_iter()
        .map(|r| (r.agent_id.clone(), r))
        .collect();
    let now = clock::unix_now_u32();
    let health: std::collections::HashMap<String, u32> = store
        .agent_health(now.saturating_sub(30 * 86_400))
        .await
        .context("cannot read agent heartbeats")?
        .into_iter()
        .map(|h| (h.agent_id, h.last_seen))
        .collect();
    if format == Format::Table {
        println!(
            "{:<36}  {:<8}  {:<12}  {:<20}  {:<20}  HOSTNAME (claimed)",
            "AGENT", "STATUS", "GROUP", "ENROLLED", "CERT EXPIRES"
        );
    }
    for agent in agents {
        let status = match (revoked.get(&agent.agent_id), health.get(&agent.agent_id)) {
            (Some(_), _) => "revoked".to_owned(),
            (None, Some(seen)) => format!(
                "{:?}",
                doorwatch_store::Health::from_age(now.saturating_sub(*seen))
            )
            .to_lowercase(),
            (None, None) => "never".to_owned(),
        };
        match format {
            Format::Json => println!(
                "{}",
                serde_json::json!({
                    "agent_id": agent.agent_id,
                    "status": status,
                    "group": agent.agent_group,
                    "enrolled_at": clock::rfc3339(agent.enrolled_at),
                    "cert_serial": agent.cert_serial,
                    "cert_not_after": clock::rfc3339(agent.cert_not_after),
                    "claimed_hostname": agent.hostname,
                    "os": agent.os,
                    "agent_version": agent.agent_version,
                    "token_id": agent.token_id,
                    "revoked_reason": revoked.get(&agent.agent_id).map(|r| r.reason.clone()),
                })
            ),
            Format::Table => output::say(format!(
                "{:<36}  {:<8}  {:<12}  {:<20}  {:<20}  {}",
                agent.agent_id,
                status,
                agent.agent_group,
                clock::rfc3339(agent.enrolled_at),
                clock::rfc3339(agent.cert_not_after),
                agent.hostname
            )),
        }
    }
    Ok(())
}

pub(crate) async fn revoke_agent(
    config: ValidConfig,
    id: String,
    reason: String,
    keep_token: bool,
) -> anyhow::Result<()> {
    let row =
        doorwatch_store::rules::new_revocation(&id, &reason, &os_user(), clock::unix_now_u32())
            .context(
                "cannot revoke (see `agents list` for ids; --reason says why, for the audit trail)",
            )?;
    let store = connect_store(&config).await?;
    if store
        .agent(&id)
        .await
        .context("cannot read the agent")?
        .is_none()
    {
        eprintln!("note: {id} never enrolled (a hand-made certificate?); revoking it anyway");
    }
    let token = store
        .revoke_agent(&row, keep_token)
        .await
        .context("cannot store the revocation")?;
    tracing::info!(agent_id = %id, reason = %reason, token_revoked = ?token.as_ref().map(|t| &t.token.token_id), "agent revoked");
    println!(
        "agent {id} revoked; every collector closes its stream and refuses it within {} s",
        config.enrollment.revocation_check.as_secs() + 1
    );
    if let Some(token) = token {
        println!(
            "its bootstrap token {} is revoked too, so the PC cannot enroll again with it \
             ({} PCs enrolled with it keep working; make a new token for PCs still to enroll)",
            token.token.token_id, token.uses
        );
    }
    Ok(())
}

pub(crate) async fn print_health(config: ValidConfig, format: Format) -> anyhow::Result<()> {
    let store = connect_store(&config).await?;
    let now = clock::unix_now_u32();
    // Agents silent for a month are retired, not offline.
    let rows = store
        .agent_health(now.saturating_sub(30 * 86_400))
        .await
        .context("cannot read agent heartbeats")?;
    if format == Format::Table {
        println!(
            "{:<24}  {:<8}  {:<20}  {:>8}  {:>8}  {:>8}  {:>8}  {:>6}  HOSTNAME (claimed)",
            "AGENT",
            "HEALTH",
            "LAST HEARTBEAT",
            "CREATED",
            "PENDING",
            "DROPPED",
            "K-DROPS",
            "POLICY"
        );
    }
    for row in rows {
        let health = doorwatch_store::Health::from_age(now.saturating_sub(row.last_seen));
        match format {
            Format::Json => println!(
                "{}",
                serde_json::json!({
                    "agent_id": row.agent_id,
                    "health": health,
                    "last_heartbeat": clock::rfc3339(row.last_seen),
                    "agent_version": row.agent_version,
                    "claimed_hostname": row.claimed_hostname,
                    "events_created": row.events_created,
                    "pending_events": row.pending_events,
                    "events_dropped": row.events_dropped,
                    "kernel_drops": row.kernel_drops,
                    "policy_version": row.policy_version,
                })
            ),
            Format::Table => output::say(format!(
                "{:<24}  {:<8}  {:<20}  {:>8}  {:>8}  {:>8}  {:>8}  {:>6}  {}",
                row.agent_id,
                format!("{health:?}").to_lowercase(),
                clock::rfc3339(row.last_seen),
                row.events_created,
                row.pending_events,
                row.events_dropped,
                row.kernel_drops,
                row.policy_version,
                row.claimed_hostname,
            )),
        }
    }
    Ok(())
}

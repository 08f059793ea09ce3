//! One PC (agent) in detail: its health, listeners, top talkers and the
//! scans it saw.

use super::summary::{EpisodeView, health_label};
use doorwatch_process::clock::unix_now_u32;
use doorwatch_store::ip::{self};
use doorwatch_store::{EventSearch, Health, Store, StoreError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ListenerView {
    pub protocol: &'static str,
    pub address: String,
    pub port: u16,
    pub process: String,
    pub user: String,
    pub risk: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TalkerView {
    pub process: String,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    pub status: &'static str,
    pub last_seen: u32,
    pub version: String,
    pub hostname: String,
    pub pending_events: u64,
    pub events_dropped: u64,
    pub kernel_drops: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    pub agent_id: String,
    pub health: Option<HealthView>,
    pub scans: Vec<EpisodeView>,
    pub listening: Vec<ListenerView>,
    pub top_talkers: Vec<TalkerView>,
}

pub async fn host(store: &Store, agent_id: &str) -> Result<HostView, StoreError> {
    let now = unix_now_u32();
    let health = store
        .agent_health(0)
        .await?
        .into_iter()
        .find(|a| a.agent_id == agent_id)
        .map(|a| HealthView {
            status: health_label(Health::from_age(now.saturating_sub(a.last_seen))),
            last_seen: a.last_seen,
            version: a.agent_version,
            hostname: a.claimed_hostname,
            pending_events: a.pending_events,
            events_dropped: a.events_dropped,
            kernel_drops: a.kernel_drops,
        });
    let listening = store
        .listening_ports(Some(agent_id))
        .await?
        .into_iter()
        .map(|l| ListenerView {
            protocol: if l.protocol == 17 { "udp" } else { "tcp" },
            address: ip::from_fixed16(l.local_ip).to_string(),
            port: l.port,
            process: l.process,
            user: l.user_name,
            risk: l.risk,
        })
        .collect();
    Ok(HostView {
        agent_id: agent_id.to_owned(),
        health,
        scans: store
            .search_episodes(&EventSearch {
                since: now.saturating_sub(7 * 86_400),
                until: now.saturating_add(3600),
                agent_id: Some(agent_id.to_owned()),
                limit: 100,
                ..EventSearch::default()
            })
            .await?
            .0
            .into_iter()
            .map(EpisodeView::from)
            .collect(),
        listening,
        top_talkers: store
            .top_talkers(agent_id, now.saturating_sub(86_400), 10)
            .await?
            .into_iter()
            .map(|t| TalkerView {
                process: t.name,
                bytes_out: t.bytes_out,
                bytes_in: t.bytes_in,
            })
            .collect(),
    })
}

//! The campaign list and one campaign in detail: members, episodes,
//! timeline, alerts and the triage history.

use std::net::IpAddr;

use super::summary::{CampaignView, campaign_views, fill_buckets};
use doorwatch_process::clock::unix_now_u32;
use doorwatch_store::ip::{self};
use doorwatch_store::{
    AlertRow, AlertStatus, CampaignKind, MemberKind, Store, StoreError, TimeBucket, TriageState,
    severity_label,
};
use serde::Serialize;

pub async fn campaigns(store: &Store, days: u32) -> Result<Vec<CampaignView>, StoreError> {
    let rows = store
        .recent_campaigns(unix_now_u32().saturating_sub(days * 86_400), 500)
        .await?;
    campaign_views(store, &rows).await
}

#[derive(Debug, Clone, Serialize)]
pub struct TriageView {
    pub state: &'static str,
    pub note: String,
    pub actor: String,
    pub at: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub channel: String,
    pub severity: &'static str,
    pub status: &'static str,
    pub attempts: u32,
    pub at: u32,
    pub error: String,
}

impl From<AlertRow> for AlertView {
    fn from(a: AlertRow) -> Self {
        Self {
            channel: a.channel,
            severity: severity_label(a.severity),
            status: match a.status {
                AlertStatus::Sent => "sent",
                AlertStatus::GaveUp => "gave up",
            },
            attempts: a.attempts,
            at: a.at,
            error: a.error,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CampaignDetail {
    pub campaign: CampaignView,
    pub sources: Vec<String>,
    pub pcs: Vec<String>,
    pub ports: Vec<u16>,
    /// Open ports the campaign's scans found, per PC.
    pub open_ports: Vec<(String, Vec<u16>)>,
    pub timeline: Vec<TimeBucket>,
    pub alerts: Vec<AlertView>,
    /// Oldest first.
    pub triage_history: Vec<TriageView>,
}

/// One campaign, or `None` if there is no such id.
pub async fn campaign(store: &Store, id: uuid::Uuid) -> Result<Option<CampaignDetail>, StoreError> {
    let Some(row) = store.campaigns_by_id(&[id]).await?.into_iter().next() else {
        return Ok(None);
    };
    let members = store.campaign_members(id).await?;
    let mut sources = Vec::new();
    let mut pcs = Vec::new();
    let mut ports = Vec::new();
    for m in members {
        match m.member {
            MemberKind::Source => sources.push(m.value),
            MemberKind::Pc => pcs.push(m.value),
            MemberKind::Port => ports.extend(m.value.parse::<u16>()),
        }
    }
    sources.dedup();
    pcs.dedup();
    ports.sort_unstable();
    ports.dedup();
    let source_bytes: Vec<[u8; 16]> = sources
        .iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .map(ip::to_fixed16)
        .collect();
    // Outbound campaigns have no scans: no timeline, no open ports found.
    let (timeline, open_ports) = if row.kind == CampaignKind::Outbound {
        (Vec::new(), Vec::new())
    } else {
        let (first, last) = (row.first_seen, row.last_seen);
        (
            store
                .campaign_timeline(&source_bytes, &pcs, first, last)
                .await?,
            store
                .campaign_open_ports(&source_bytes, &pcs, first, last)
                .await?,
        )
    };
    let timeline = if timeline.is_empty() {
        timeline
    } else {
        let start = timeline
            .first()
            .map_or(row.first_seen, |b| b.at.min(row.first_seen));
        fill_buckets(&timeline, start, row.last_seen, 300, 288)
    };
    let history = store.triage_of(&[id]).await?;
    let triage = history.last().map_or(TriageState::New, |t| t.state);
    Ok(Some(CampaignDetail {
        campaign: CampaignView::new(&row, triage),
        sources,
        pcs,
        ports,
        open_ports,
        timeline,
        alerts: store
            .alerts_of(id)
            .await?
            .into_iter()
            .map(AlertView::from)
            .collect(),
        triage_history: history
            .into_iter()
            .map(|t| TriageView {
                state: t.state.label(),
                note: t.note,
                actor: t.actor,
                at: t.at,
            })
            .collect(),
    }))
}

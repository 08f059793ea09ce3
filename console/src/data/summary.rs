//! The pieces several pages share: a campaign line, an episode line, a
//! time axis with no gaps, the health label, and the newest triage state
//! per campaign. Nothing here is a whole page.

use std::collections::BTreeMap;

use doorwatch_store::ip::{self};
use doorwatch_store::{
    CampaignRow, EpisodeRow, Health, Store, StoreError, TimeBucket, TriageState, severity_label,
};
use serde::Serialize;

/// Rows in each top list.
pub(super) const TOP: u64 = 10;

/// `buckets` on a full axis: one bucket every `step` seconds from the one
/// holding `start` to the one holding `end`, zero where nothing happened;
/// at most `max` buckets (the newest).
pub fn fill_buckets(
    buckets: &[TimeBucket],
    start: u32,
    end: u32,
    step: u32,
    max: usize,
) -> Vec<TimeBucket> {
    let step = step.max(1);
    let first = start - start % step;
    let last = end.max(start) - end.max(start) % step;
    let count = ((last - first) / step) as usize + 1;
    let skip = count.saturating_sub(max) as u32;
    (skip..count as u32)
        .map(|i| {
            let at = first + i * step;
            TimeBucket {
                at,
                scans: buckets
                    .iter()
                    .filter(|b| b.at >= at && b.at < at + step)
                    .map(|b| b.scans)
                    .sum(),
            }
        })
        .collect()
}

/// A campaign as pages and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignView {
    pub id: String,
    pub kind: &'static str,
    pub key: String,
    pub state: &'static str,
    pub severity: &'static str,
    pub severity_level: u8,
    pub first_seen: u32,
    pub last_seen: u32,
    pub pcs: u32,
    pub sources: u32,
    pub ports: u32,
    pub open_ports: u32,
    pub exposed_ports: u32,
    pub explanation: String,
    /// "new" until someone triages it.
    pub triage: &'static str,
}

impl CampaignView {
    pub(super) fn new(row: &CampaignRow, triage: TriageState) -> Self {
        Self {
            id: row.campaign_id.to_string(),
            kind: row.kind.label(),
            key: row.campaign_key.clone(),
            state: row.state.label(),
            severity: severity_label(row.severity),
            severity_level: row.severity,
            first_seen: row.first_seen,
            last_seen: row.last_seen,
            pcs: row.pcs,
            sources: row.sources,
            ports: row.ports,
            open_ports: row.open_ports,
            exposed_ports: row.exposed_ports,
            explanation: row.explanation.clone(),
            triage: triage.label(),
        }
    }
}

/// A scan episode as pages show it.
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeView {
    pub episode_id: String,
    pub agent_id: String,
    pub scanner: String,
    pub target: String,
    pub scan_types: Vec<String>,
    pub ports_probed: u32,
    pub open_ports: Vec<u16>,
    pub first_seen: u32,
    pub last_seen: u32,
    pub severity: &'static str,
    pub explanation: String,
}

impl From<EpisodeRow> for EpisodeView {
    fn from(r: EpisodeRow) -> Self {
        Self {
            episode_id: r.episode_id.to_string(),
            agent_id: r.agent_id,
            scanner: ip::from_fixed16(r.scanner).to_string(),
            target: ip::from_fixed16(r.target).to_string(),
            scan_types: r.scan_types,
            ports_probed: r.ports_probed,
            open_ports: r.open_ports,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            severity: severity_label(r.severity),
            explanation: r.explanation,
        }
    }
}

/// The newest triage state per campaign.
pub(super) async fn triage_states(
    store: &Store,
    ids: &[uuid::Uuid],
) -> Result<BTreeMap<uuid::Uuid, TriageState>, StoreError> {
    Ok(store
        .triage_of(ids)
        .await?
        .into_iter()
        .map(|t| (t.campaign_id, t.state))
        .collect())
}

pub(super) async fn campaign_views(
    store: &Store,
    rows: &[CampaignRow],
) -> Result<Vec<CampaignView>, StoreError> {
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.campaign_id).collect();
    let triage = triage_states(store, &ids).await?;
    Ok(rows
        .iter()
        .map(|r| {
            CampaignView::new(
                r,
                triage
                    .get(&r.campaign_id)
                    .copied()
                    .unwrap_or(TriageState::New),
            )
        })
        .collect())
}

pub(super) fn health_label(h: Health) -> &'static str {
    match h {
        Health::Online => "online",
        Health::Stale => "stale",
        Health::Offline => "offline",
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fill_the_whole_axis() {
        let b = |at, scans| TimeBucket { at, scans };
        let filled = fill_buckets(&[b(7200, 4)], 3700, 11_000, 3600, 25);
        let got: Vec<(u32, u64)> = filled.iter().map(|x| (x.at, x.scans)).collect();
        assert_eq!(got, vec![(3600, 0), (7200, 4), (10_800, 0)]);
        assert_eq!(
            fill_buckets(&[], 0, 100 * 3600, 3600, 25).len(),
            25,
            "capped"
        );
    }
}

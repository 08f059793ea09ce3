//! The overview page: open campaigns by severity, agent health, and the
//! day's aggregates, which are computed in the background and cached.

use super::summary::{CampaignView, TOP, campaign_views, fill_buckets};
use doorwatch_process::clock::unix_now_u32;
use doorwatch_store::ip::{self};
use doorwatch_store::{Health, PcHitRow, PortRow, Store, StoreError, TimeBucket};
use serde::Serialize;

/// The overview's window.
pub const OVERVIEW_HOURS: u32 = 24;

#[derive(Debug, Clone, Serialize)]
pub struct ScannerView {
    pub source: String,
    pub pcs: u64,
    pub scans: u64,
    pub last_seen: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentCounts {
    pub online: usize,
    pub stale: usize,
    pub offline: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub hours: u32,
    /// Open and quiet campaigns per severity: low, medium, high, critical.
    pub open_by_severity: [usize; 4],
    pub campaigns: Vec<CampaignView>,
    pub agents: AgentCounts,
    /// The 24-hour aggregates, at most [`AGGREGATES_MAX_AGE`] old.
    #[serde(flatten)]
    pub aggregates: Aggregates,
}

/// The overview's aggregates over the last 24 hours: the expensive part
/// (four scans of a day of events), computed in the background every
/// [`AGGREGATES_REFRESH`] and served from memory.
#[derive(Debug, Clone, Serialize)]
pub struct Aggregates {
    /// When they were computed (Unix seconds).
    pub computed_at: u32,
    pub scans_per_hour: Vec<TimeBucket>,
    pub top_scanners: Vec<ScannerView>,
    pub top_ports: Vec<PortRow>,
    pub pcs_hit: Vec<PcHitRow>,
}

/// How often the background task recomputes the aggregates, and the age
/// beyond which a request computes them itself.
pub const AGGREGATES_REFRESH: std::time::Duration = std::time::Duration::from_secs(15);
pub const AGGREGATES_MAX_AGE: u32 = 60;

/// Computes the aggregates, the four queries at once.
pub async fn aggregates(store: &Store) -> Result<Aggregates, StoreError> {
    let now = unix_now_u32();
    let since = now.saturating_sub(OVERVIEW_HOURS * 3600);
    let (hours, scanners, ports, pcs) = tokio::try_join!(
        store.scans_per_hour(since),
        store.top_scanners(since, TOP),
        store.top_ports(since, TOP),
        store.pcs_hit(since, TOP),
    )?;
    Ok(Aggregates {
        computed_at: now,
        scans_per_hour: fill_buckets(&hours, since, now, 3600, 25),
        top_scanners: scanners
            .into_iter()
            .map(|s| ScannerView {
                source: ip::from_fixed16(s.scanner).to_string(),
                pcs: s.pcs,
                scans: s.scans,
                last_seen: s.last_seen,
            })
            .collect(),
        top_ports: ports,
        pcs_hit: pcs,
    })
}

/// The newest aggregates, shared by requests and the refresher.
#[derive(Debug, Default)]
pub struct AggregatesCache {
    latest: tokio::sync::RwLock<Option<Aggregates>>,
}

impl AggregatesCache {
    /// Recomputes and keeps the result.
    pub async fn refresh(&self, store: &Store) -> Result<Aggregates, StoreError> {
        let fresh = aggregates(store).await?;
        *self.latest.write().await = Some(fresh.clone());
        Ok(fresh)
    }

    /// The kept aggregates if recent enough, else fresh ones.
    pub async fn get(&self, store: &Store) -> Result<Aggregates, StoreError> {
        if let Some(kept) = self.latest.read().await.as_ref()
            && unix_now_u32().saturating_sub(kept.computed_at) <= AGGREGATES_MAX_AGE
        {
            return Ok(kept.clone());
        }
        self.refresh(store).await
    }
}

/// The overview: campaigns and agent health live, the aggregates from
/// `cache`.
pub async fn overview(store: &Store, cache: &AggregatesCache) -> Result<Overview, StoreError> {
    let now = unix_now_u32();
    let (mut active, health, aggregates) = tokio::try_join!(
        store.active_campaigns(),
        store.agent_health(0),
        cache.get(store)
    )?;
    active.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.last_seen.cmp(&a.last_seen))
    });
    let mut open_by_severity = [0usize; 4];
    for c in &active {
        open_by_severity[usize::from(c.severity.clamp(1, 4) - 1)] += 1;
    }
    active.truncate(50);
    let campaigns = campaign_views(store, &active).await?;
    let mut agents = AgentCounts::default();
    for a in health {
        match Health::from_age(now.saturating_sub(a.last_seen)) {
            Health::Online => agents.online += 1,
            Health::Stale => agents.stale += 1,
            Health::Offline => agents.offline += 1,
        }
    }
    Ok(Overview {
        hours: OVERVIEW_HOURS,
        open_by_severity,
        campaigns,
        agents,
        aggregates,
    })
}

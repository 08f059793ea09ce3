//! What each page shows, loaded from the store into plain serializable
//! structs. The HTML pages and `/api/v1` render the same structs, so the
//! API shows exactly what staff see.

use std::collections::BTreeMap;
use std::net::IpAddr;

use doorwatch_store::ip::{self, Cidr};
use doorwatch_store::{
    AlertRow, CampaignRow, EpisodeRow, EventSearch, Health, PcHitRow, PortRow, Store, StoreError,
    TimeBucket, campaign_kind, campaign_state, member, severity_label, triage_state,
};
use serde::Serialize;

/// The overview's window.
pub const OVERVIEW_HOURS: u32 = 24;
/// Rows in each top list.
const TOP: u64 = 10;

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

/// Seconds since the Unix epoch.
pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
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
    fn new(row: &CampaignRow, triage: i8) -> Self {
        Self {
            id: row.campaign_id.to_string(),
            kind: campaign_kind::label(row.kind),
            key: row.campaign_key.clone(),
            state: campaign_state::label(row.state),
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
            triage: triage_state::label(triage),
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
    let now = unix_now();
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
            && unix_now().saturating_sub(kept.computed_at) <= AGGREGATES_MAX_AGE
        {
            return Ok(kept.clone());
        }
        self.refresh(store).await
    }
}

/// The newest triage state per campaign.
async fn triage_states(
    store: &Store,
    ids: &[uuid::Uuid],
) -> Result<BTreeMap<uuid::Uuid, i8>, StoreError> {
    Ok(store
        .triage_of(ids)
        .await?
        .into_iter()
        .map(|t| (t.campaign_id, t.state))
        .collect())
}

async fn campaign_views(
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
                    .unwrap_or(triage_state::NEW),
            )
        })
        .collect())
}

/// The overview: campaigns and agent health live, the aggregates from
/// `cache`.
pub async fn overview(store: &Store, cache: &AggregatesCache) -> Result<Overview, StoreError> {
    let now = unix_now();
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

pub async fn campaigns(store: &Store, days: u32) -> Result<Vec<CampaignView>, StoreError> {
    let rows = store
        .recent_campaigns(unix_now().saturating_sub(days * 86_400), 500)
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
            status: if a.status == 1 { "sent" } else { "gave up" },
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
            member::SOURCE => sources.push(m.value),
            member::PC => pcs.push(m.value),
            member::PORT => ports.extend(m.value.parse::<u16>()),
            _ => {}
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
    let (timeline, open_ports) = if row.kind == campaign_kind::OUTBOUND {
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
    let triage = history.last().map_or(triage_state::NEW, |t| t.state);
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
                state: triage_state::label(t.state),
                note: t.note,
                actor: t.actor,
                at: t.at,
            })
            .collect(),
    }))
}

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

fn health_label(h: Health) -> &'static str {
    match h {
        Health::Online => "online",
        Health::Stale => "stale",
        Health::Offline => "offline",
    }
}

pub async fn host(store: &Store, agent_id: &str) -> Result<HostView, StoreError> {
    let now = unix_now();
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

#[derive(Debug, Clone, Serialize)]
pub struct SourceView {
    pub source: String,
    /// In the blocklist feed (a sweep or distributed campaign in the last
    /// 30 days), with when it was last active.
    pub blocklisted_until_quiet_since: Option<u32>,
    /// The correlation allowlist network holding it, if any: it is never
    /// made into campaigns, alerted or published.
    pub allowlisted_by: Option<String>,
    pub campaigns: Vec<CampaignView>,
    pub scans: Vec<EpisodeView>,
    pub pcs: Vec<String>,
}

pub async fn source(store: &Store, address: IpAddr) -> Result<SourceView, StoreError> {
    let now = unix_now();
    let text = address.to_string();
    let scans: Vec<EpisodeView> = store
        .search_episodes(&EventSearch {
            since: now.saturating_sub(30 * 86_400),
            until: now.saturating_add(3600),
            source_range: Some((ip::to_fixed16(address), ip::to_fixed16(address))),
            limit: 200,
            ..EventSearch::default()
        })
        .await?
        .0
        .into_iter()
        .map(EpisodeView::from)
        .collect();
    let mut pcs: Vec<String> = scans.iter().map(|s| s.agent_id.clone()).collect();
    pcs.sort();
    pcs.dedup();
    let ids = store.campaigns_of_source(&text).await?;
    let rows = store.campaigns_by_id(&ids).await?;
    let feed = store
        .feed_sources(now.saturating_sub(30 * 86_400))
        .await?
        .into_iter()
        .find(|f| f.source == text)
        .map(|f| f.last_active);
    let allowlisted_by = store.allowlist().await?.and_then(|list| {
        list.networks
            .into_iter()
            .find(|n| n.parse::<Cidr>().is_ok_and(|c| c.contains(address)))
    });
    Ok(SourceView {
        source: text,
        blocklisted_until_quiet_since: feed,
        allowlisted_by,
        campaigns: campaign_views(store, &rows).await?,
        scans,
        pcs,
    })
}

/// A search as the form and the API take it (all text, validated here).
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
#[serde(default)]
pub struct SearchForm {
    /// How far back: "1h", "24h", "7d" (humantime).
    pub since: String,
    pub pc: String,
    /// An address or a network in CIDR notation.
    pub source: String,
    pub port: String,
    pub scan_type: String,
    pub page: u64,
}

/// Rows per search page, and the most a CSV export holds.
pub const PAGE_ROWS: u64 = 50;
pub const CSV_ROWS: u64 = 100_000;

/// A search the user got wrong, in words for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSearch(pub String);

impl SearchForm {
    /// The store's search for this form, or what is wrong with it.
    pub fn to_search(&self, limit: u64) -> Result<EventSearch, BadSearch> {
        let now = unix_now();
        let since = if self.since.trim().is_empty() {
            std::time::Duration::from_secs(86_400)
        } else {
            humantime::parse_duration(self.since.trim())
                .map_err(|_| BadSearch("time range: use e.g. 1h, 24h or 7d".into()))?
        };
        let since = now.saturating_sub(u32::try_from(since.as_secs()).unwrap_or(u32::MAX));
        let source_range = match self.source.trim() {
            "" => None,
            text => {
                let cidr: Cidr = if text.contains('/') {
                    text.parse().map_err(|_| {
                        BadSearch("source: an address or a network like 198.51.100.0/24".into())
                    })?
                } else {
                    let address: IpAddr = text.parse().map_err(|_| {
                        BadSearch("source: an address or a network like 198.51.100.0/24".into())
                    })?;
                    Cidr::of(address, if address.is_ipv4() { 32 } else { 128 })
                };
                Some(cidr.range())
            }
        };
        let port = match self.port.trim() {
            "" => None,
            text => Some(
                text.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| BadSearch("port: a number from 1 to 65535".into()))?,
            ),
        };
        let scan_type = match self.scan_type.trim() {
            "" => None,
            t if SCAN_TYPES.contains(&t) => Some(t.to_owned()),
            _ => return Err(BadSearch("scan type: pick one from the list".into())),
        };
        let pc = self.pc.trim();
        Ok(EventSearch {
            since,
            until: now.saturating_add(3600),
            agent_id: (!pc.is_empty()).then(|| pc.to_owned()),
            source_range,
            port,
            scan_type,
            offset: self.page.saturating_mul(limit),
            limit,
            count: true,
        })
    }
}

/// Scan types as stored.
pub const SCAN_TYPES: &[&str] = &[
    "syn", "connect", "fin", "null", "xmas", "maimon", "ack", "udp", "ip_proto", "icmp",
];

#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    pub total: u64,
    pub page: u64,
    pub pages: u64,
    pub episodes: Vec<EpisodeView>,
}

pub async fn search(store: &Store, search: &EventSearch) -> Result<SearchResult, StoreError> {
    let (rows, total) = store.search_episodes(search).await?;
    Ok(SearchResult {
        total,
        page: search.offset / search.limit.max(1),
        pages: total.div_ceil(search.limit.max(1)),
        episodes: rows.into_iter().map(EpisodeView::from).collect(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub agent_id: String,
    pub hostname: String,
    pub group: String,
    pub version: String,
    pub status: &'static str,
    pub last_seen: u32,
    pub cert_not_after: u32,
    pub pending_events: u64,
    pub events_dropped: u64,
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenView {
    pub token_id: String,
    pub group: String,
    pub expires_at: u32,
    pub uses: u64,
    pub max_uses: u32,
    pub revoked: bool,
    /// Usable, revoked, expired or used up: the store's one rule.
    pub state: doorwatch_store::TokenState,
}

/// Pure: what the agents page shows of each token at `now`.
pub fn token_views(tokens: Vec<doorwatch_store::TokenUse>, now: u64) -> Vec<TokenView> {
    tokens
        .into_iter()
        .map(|t| TokenView {
            state: t.state(now),
            token_id: t.token.token_id,
            group: t.token.agent_group,
            expires_at: t.token.expires_at,
            uses: t.uses,
            max_uses: t.token.max_uses,
            revoked: t.token.revoked != 0,
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentsView {
    pub agents: Vec<AgentView>,
    pub tokens: Vec<TokenView>,
}

pub async fn agents(store: &Store) -> Result<AgentsView, StoreError> {
    let now = unix_now();
    let health: BTreeMap<String, doorwatch_store::AgentHealthRow> = store
        .agent_health(0)
        .await?
        .into_iter()
        .map(|h| (h.agent_id.clone(), h))
        .collect();
    let revoked: std::collections::BTreeSet<String> = store
        .revocations()
        .await?
        .into_iter()
        .map(|r| r.agent_id)
        .collect();
    let mut agents: Vec<AgentView> = store
        .agents()
        .await?
        .into_iter()
        .map(|a| {
            let h = health.get(&a.agent_id);
            AgentView {
                revoked: revoked.contains(&a.agent_id),
                status: h.map_or("never seen", |h| {
                    health_label(Health::from_age(now.saturating_sub(h.last_seen)))
                }),
                last_seen: h.map_or(0, |h| h.last_seen),
                pending_events: h.map_or(0, |h| h.pending_events),
                events_dropped: h.map_or(0, |h| h.events_dropped),
                version: h.map_or(a.agent_version.clone(), |h| h.agent_version.clone()),
                agent_id: a.agent_id,
                hostname: a.hostname,
                group: a.agent_group,
                cert_not_after: a.cert_not_after,
            }
        })
        .collect();
    // Agents with certificates from the dev PKI (not enrolled) still send
    // heartbeats: list them too.
    for (id, h) in &health {
        if !agents.iter().any(|a| &a.agent_id == id) {
            agents.push(AgentView {
                agent_id: id.clone(),
                hostname: h.claimed_hostname.clone(),
                group: String::new(),
                version: h.agent_version.clone(),
                status: health_label(Health::from_age(now.saturating_sub(h.last_seen))),
                last_seen: h.last_seen,
                cert_not_after: 0,
                pending_events: h.pending_events,
                events_dropped: h.events_dropped,
                revoked: revoked.contains(id),
            });
        }
    }
    agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    let tokens = token_views(store.tokens().await?, u64::from(now));
    Ok(AgentsView { agents, tokens })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_and_used_up_tokens_are_not_shown_as_usable() {
        let token = |id: &str, expires_at: u32, uses: u64| doorwatch_store::TokenUse {
            token: doorwatch_store::TokenRow {
                token_id: id.into(),
                secret_sha256: String::new(),
                agent_group: "library".into(),
                created_at: 0,
                expires_at,
                max_uses: 10,
                revoked: 0,
                revoked_at: 0,
                changed_by: "ada".into(),
                version: 1,
            },
            uses,
        };
        let views = token_views(
            vec![
                token("fresh", 2_000, 3),
                token("old", 1_000, 3),
                token("full", 2_000, 10),
            ],
            1_500,
        );
        let labels: Vec<(&str, &str)> = views
            .iter()
            .map(|v| (v.token_id.as_str(), v.state.label()))
            .collect();
        assert_eq!(
            labels,
            [("fresh", "usable"), ("old", "expired"), ("full", "used up")]
        );
        assert!(views.iter().all(|v| !v.revoked));
    }

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

    #[test]
    fn search_forms_are_checked_before_any_query() {
        let form = SearchForm {
            since: "7d".into(),
            source: "198.51.100.0/24".into(),
            port: "3389".into(),
            scan_type: "syn".into(),
            page: 2,
            ..SearchForm::default()
        };
        let s = form.to_search(50).expect("valid");
        assert_eq!(s.port, Some(3389));
        assert_eq!(s.offset, 100);
        let (low, high) = s.source_range.expect("range");
        assert_eq!(ip::from_fixed16(low).to_string(), "198.51.100.0");
        assert_eq!(ip::from_fixed16(high).to_string(), "198.51.100.255");
        for (field, bad) in [
            ("since", "yesterday"),
            ("source", "198.51.100.0/33"),
            ("source", "x' OR 1=1 --"),
            ("port", "70000"),
            ("scan_type", "evil"),
        ] {
            let mut form = SearchForm::default();
            match field {
                "since" => form.since = bad.into(),
                "source" => form.source = bad.into(),
                "port" => form.port = bad.into(),
                _ => form.scan_type = bad.into(),
            }
            assert!(form.to_search(50).is_err(), "{field}={bad}");
        }
    }
}

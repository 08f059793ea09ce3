//! The console's reads and writes: overview aggregates, one campaign, one
//! PC, one source address, event search, triage and the audit log.
//!
//! Every value that comes from a console user (an address, a PC id, a
//! port, a time range, a page) is bound with `?`, which the `clickhouse`
//! crate escapes; user input never becomes SQL text.
//!
//! Counting each event once: aggregates count distinct ids, so a resent
//! event stored twice before a merge counts once. They use `uniq`, which
//! is exact up to 65,536 distinct values per group and within about 1 %
//! beyond; `uniqExact` over millions of ids cost the overview seconds.
//! Listings show each episode once, as its newest report.

use crate::StoreError;
use crate::ip::hex;

/// Counted per hour: scan episodes that started then.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize, serde::Serialize)]
pub struct TimeBucket {
    /// Unix seconds of the bucket start.
    pub at: u32,
    pub scans: u64,
}

/// A scanning source with how much it did.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize)]
pub struct ScannerRow {
    pub scanner: [u8; 16],
    pub pcs: u64,
    pub scans: u64,
    pub last_seen: u32,
}

/// A port with how many sources and PCs it was probed by/on.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize, serde::Serialize)]
pub struct PortRow {
    pub port: u16,
    pub sources: u64,
    pub pcs: u64,
}

/// A PC with how many sources scanned it.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize, serde::Serialize)]
pub struct PcHitRow {
    pub agent_id: String,
    pub sources: u64,
    pub scans: u64,
    pub last_seen: u32,
}

/// The newest report of one scan episode.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize)]
pub struct EpisodeRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub episode_id: uuid::Uuid,
    pub agent_id: String,
    pub scanner: [u8; 16],
    pub target: [u8; 16],
    pub scan_types: Vec<String>,
    pub ports_probed: u32,
    pub open_ports: Vec<u16>,
    pub first_seen: u32,
    pub last_seen: u32,
    pub severity: u8,
    pub explanation: String,
}

/// What a search looks for. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventSearch {
    /// Episodes whose last probe is in [since, until] (Unix seconds).
    pub since: u32,
    pub until: u32,
    pub agent_id: Option<String>,
    /// A source network: its first and last address (see [`crate::ip`]).
    pub source_range: Option<([u8; 16], [u8; 16])>,
    pub port: Option<u16>,
    /// A scan type label as stored ("syn", "udp", ...).
    pub scan_type: Option<String>,
    pub offset: u64,
    pub limit: u64,
    /// Also count the matching episodes (a second pass over the rows).
    pub count: bool,
}

/// The triage state of a campaign: each change is a row; the newest wins.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct TriageRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub campaign_id: uuid::Uuid,
    pub state: crate::TriageState,
    pub note: String,
    /// Who changed it (the signed-in user's name).
    pub actor: String,
    pub at: u32,
}

/// One change made through the console (or its API): who, what, when,
/// from where.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct AuditRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub audit_id: uuid::Uuid,
    pub at: u32,
    /// The user's name (from the IdP, "local:NAME" or "token:NAME").
    pub actor: String,
    pub role: String,
    /// e.g. "campaign.triage", "agent.revoke", "login", "login.failed".
    pub action: String,
    /// What it acted on: a campaign id, an agent id, ...
    pub target: String,
    pub detail: String,
    pub source_ip: String,
    pub user_agent: String,
}

pub(crate) async fn scans_per_hour(
    client: &clickhouse::Client,
    since: u32,
) -> Result<Vec<TimeBucket>, StoreError> {
    client
        .query(
            "SELECT toUInt32(toStartOfHour(first_seen)) AS at, uniq(episode_id) AS scans \
             FROM scan_events WHERE first_seen >= toDateTime(?) \
             GROUP BY at ORDER BY at",
        )
        .bind(since)
        .fetch_all()
        .await
        .map_err(StoreError::query("count scans per hour"))
}

pub(crate) async fn top_scanners(
    client: &clickhouse::Client,
    since: u32,
    limit: u64,
) -> Result<Vec<ScannerRow>, StoreError> {
    client
        .query(
            "SELECT scanner, uniq(agent_id) AS pcs, uniq(episode_id) AS scans, \
                    toUInt32(max(last_seen)) AS last_seen \
             FROM scan_events WHERE first_seen >= toDateTime(?) \
             GROUP BY scanner ORDER BY pcs DESC, scans DESC, scanner LIMIT ?",
        )
        .bind(since)
        .bind(limit)
        .fetch_all()
        .await
        .map_err(StoreError::query("select top scanners"))
}

pub(crate) async fn top_ports(
    client: &clickhouse::Client,
    since: u32,
    limit: u64,
) -> Result<Vec<PortRow>, StoreError> {
    // Two steps: the most-named ports by a plain count (cheap), then
    // distinct sources and PCs for those only.
    let top: Vec<u16> = client
        .query(
            "SELECT port FROM scan_events ARRAY JOIN port_sample AS port \
             WHERE first_seen >= toDateTime(?) \
             GROUP BY port ORDER BY count() DESC, port LIMIT ?",
        )
        .bind(since)
        .bind(limit.saturating_mul(3))
        .fetch_all()
        .await
        .map_err(StoreError::query("select top ports"))?;
    if top.is_empty() {
        return Ok(Vec::new());
    }
    client
        .query(
            "SELECT port, uniq(scanner) AS sources, uniq(agent_id) AS pcs \
             FROM scan_events ARRAY JOIN port_sample AS port \
             WHERE first_seen >= toDateTime(?) AND hasAny(port_sample, ?) AND has(?, port) \
             GROUP BY port ORDER BY sources DESC, pcs DESC, port LIMIT ?",
        )
        .bind(since)
        .bind(&top)
        .bind(&top)
        .bind(limit)
        .fetch_all()
        .await
        .map_err(StoreError::query("count sources of top ports"))
}

pub(crate) async fn pcs_hit(
    client: &clickhouse::Client,
    since: u32,
    limit: u64,
) -> Result<Vec<PcHitRow>, StoreError> {
    client
        .query(
            "SELECT agent_id, uniq(scanner) AS sources, uniq(episode_id) AS scans, \
                    toUInt32(max(last_seen)) AS last_seen \
             FROM scan_events WHERE first_seen >= toDateTime(?) \
             GROUP BY agent_id ORDER BY sources DESC, scans DESC, agent_id LIMIT ?",
        )
        .bind(since)
        .bind(limit)
        .fetch_all()
        .await
        .map_err(StoreError::query("select PCs hit"))
}

/// The columns of [`EpisodeRow`], newest report per episode first.
const EPISODE_COLUMNS: &str = "episode_id, agent_id, scanner, target, scan_types, ports_probed, \
     open_ports, toUInt32(first_seen) AS first_seen, toUInt32(last_seen) AS last_seen, \
     severity, explanation";

/// The WHERE clause and its bound values for `search`, in bind order.
fn search_clause(search: &EventSearch) -> (String, Vec<SearchValue>) {
    // first_seen lets ClickHouse skip partitions; an episode longer than a
    // day before `since` is left out, as in correlation.
    let mut sql = String::from(
        "first_seen >= toDateTime(?) AND last_seen >= toDateTime(?) AND last_seen <= toDateTime(?)",
    );
    let mut values = vec![
        SearchValue::U32(search.since.saturating_sub(86_400)),
        SearchValue::U32(search.since),
        SearchValue::U32(search.until),
    ];
    if let Some(agent) = &search.agent_id {
        sql.push_str(" AND agent_id = ?");
        values.push(SearchValue::Text(agent.clone()));
    }
    if let Some((low, high)) = search.source_range {
        sql.push_str(" AND scanner >= unhex(?) AND scanner <= unhex(?)");
        values.push(SearchValue::Text(hex(&low)));
        values.push(SearchValue::Text(hex(&high)));
    }
    if let Some(port) = search.port {
        sql.push_str(" AND (has(port_sample, ?) OR has(open_ports, ?))");
        values.push(SearchValue::U16(port));
        values.push(SearchValue::U16(port));
    }
    if let Some(kind) = &search.scan_type {
        sql.push_str(" AND has(scan_types, ?)");
        values.push(SearchValue::Text(kind.clone()));
    }
    (sql, values)
}

#[derive(Debug, Clone)]
enum SearchValue {
    U32(u32),
    U16(u16),
    Text(String),
}

fn bind_all(
    mut query: clickhouse::query::Query,
    values: &[SearchValue],
) -> clickhouse::query::Query {
    for v in values {
        query = match v {
            SearchValue::U32(n) => query.bind(*n),
            SearchValue::U16(n) => query.bind(*n),
            SearchValue::Text(s) => query.bind(s.as_str()),
        };
    }
    query
}

/// Scan episodes matching `search`, the newest report of each, most
/// recent first; and about how many match in all (see the module doc).
///
/// Sorting whole reports to keep one per episode is slow over millions
/// of rows, so a page reads the newest reports' ids first (a top-N over
/// one small column), keeps the first report of each episode, and then
/// fetches those episodes whole. The total (if asked) is counted at the
/// same time.
pub(crate) async fn search_episodes(
    client: &clickhouse::Client,
    search: &EventSearch,
) -> Result<(Vec<EpisodeRow>, u64), StoreError> {
    let (clause, values) = search_clause(search);
    let count = async {
        if !search.count {
            return Ok(0);
        }
        bind_all(
            client.query(&format!(
                "SELECT uniq(episode_id) FROM scan_events WHERE {clause}"
            )),
            &values,
        )
        .fetch_one::<u64>()
        .await
        .map_err(StoreError::query("count scan episodes"))
    };
    let list = async {
        if search.limit > MAX_PAGE_BY_ID {
            // An export: one sort of whole reports beats thousands of ids.
            return bind_all(
                client.query(&format!(
                    "SELECT {EPISODE_COLUMNS} FROM \
                       (SELECT {EPISODE_COLUMNS} FROM scan_events WHERE {clause} \
                        ORDER BY episode_id, last_seen DESC, ports_probed DESC LIMIT 1 BY episode_id) \
                     ORDER BY last_seen DESC, episode_id LIMIT ? OFFSET ?"
                )),
                &values,
            )
            .bind(search.limit)
            .bind(search.offset)
            .fetch_all::<EpisodeRow>()
            .await
            .map_err(StoreError::query("export scan episodes"));
        }
        let (page, oldest) = newest_episodes(client, &clause, &values, search).await?;
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let listed: Vec<String> = page.iter().map(ToString::to_string).collect();
        // The ids are chosen; what is left is finding their rows cheaply:
        // the page's time span (so only a partition or two are read) and
        // the source range (the table's key), not the other filters again.
        let (low, high) = search.source_range.unwrap_or(([0; 16], [0xff; 16]));
        let mut rows = client
            .query(&format!(
                "SELECT {EPISODE_COLUMNS} FROM scan_events \
                 WHERE first_seen >= toDateTime(?) AND last_seen >= toDateTime(?) \
                   AND scanner >= unhex(?) AND scanner <= unhex(?) \
                   AND episode_id IN (SELECT arrayJoin(arrayMap(x -> toUUID(x), ?))) \
                 ORDER BY episode_id, last_seen DESC, ports_probed DESC LIMIT 1 BY episode_id"
            ))
            .bind(oldest.saturating_sub(86_400))
            .bind(oldest)
            .bind(hex(&low))
            .bind(hex(&high))
            .bind(&listed)
            .fetch_all::<EpisodeRow>()
            .await
            .map_err(StoreError::query("read scan episodes"))?;
        rows.sort_by_key(|r| page.iter().position(|id| *id == r.episode_id));
        Ok(rows)
    };
    let (rows, total) = futures_util::future::try_join(list, count).await?;
    Ok((rows, total))
}

/// Pages longer than this are read in one sort instead of by id.
const MAX_PAGE_BY_ID: u64 = 1000;

/// The ids of the page's episodes, newest first, and the oldest last
/// probe among them: the newest reports' ids (a top-N over two small
/// columns), the first report of each episode.
async fn newest_episodes(
    client: &clickhouse::Client,
    clause: &str,
    values: &[SearchValue],
    search: &EventSearch,
) -> Result<(Vec<uuid::Uuid>, u32), StoreError> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Newest {
        #[serde(with = "clickhouse::serde::uuid")]
        episode_id: uuid::Uuid,
        last_seen: u32,
    }
    let wanted = usize::try_from(search.offset.saturating_add(search.limit)).unwrap_or(usize::MAX);
    let mut fetch = search
        .offset
        .saturating_add(search.limit)
        .saturating_mul(3)
        .saturating_add(100);
    let ids = loop {
        let rows: Vec<Newest> = bind_all(
            client.query(&format!(
                "SELECT episode_id, toUInt32(last_seen) AS last_seen FROM scan_events \
                 WHERE {clause} ORDER BY last_seen DESC, episode_id LIMIT ?"
            )),
            values,
        )
        .bind(fetch)
        .fetch_all()
        .await
        .map_err(StoreError::query("search scan episodes"))?;
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<(uuid::Uuid, u32)> = rows
            .iter()
            .map(|r| (r.episode_id, r.last_seen))
            .filter(|(id, _)| seen.insert(*id))
            .collect();
        if ids.len() >= wanted || (rows.len() as u64) < fetch {
            break ids;
        }
        fetch = fetch.saturating_mul(4);
    };
    let page: Vec<(uuid::Uuid, u32)> = ids
        .into_iter()
        .skip(usize::try_from(search.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(search.limit).unwrap_or(usize::MAX))
        .collect();
    let oldest = page.iter().map(|(_, at)| *at).min().unwrap_or(search.since);
    Ok((page.into_iter().map(|(id, _)| id).collect(), oldest))
}

/// Scan episodes of a campaign's sources against its PCs in its time span,
/// per hour (for its timeline).
pub(crate) async fn campaign_timeline(
    client: &clickhouse::Client,
    sources: &[[u8; 16]],
    pcs: &[String],
    first_seen: u32,
    last_seen: u32,
) -> Result<Vec<TimeBucket>, StoreError> {
    let sources: Vec<String> = sources.iter().map(hex).collect();
    client
        .query(
            "SELECT toUInt32(toStartOfFiveMinute(first_seen)) AS at, uniqExact(id) AS scans FROM \
               (SELECT episode_id AS id, first_seen FROM scan_events \
                WHERE has(?, hex(scanner)) AND has(?, agent_id) \
                  AND first_seen >= toDateTime(?) AND first_seen <= toDateTime(?) \
                UNION ALL \
                SELECT event_id AS id, first_seen FROM knock_events \
                WHERE has(?, hex(source)) AND has(?, agent_id) \
                  AND first_seen >= toDateTime(?) AND first_seen <= toDateTime(?)) \
             GROUP BY at ORDER BY at",
        )
        .bind(&sources)
        .bind(pcs)
        .bind(first_seen.saturating_sub(86_400))
        .bind(last_seen)
        .bind(&sources)
        .bind(pcs)
        .bind(first_seen.saturating_sub(86_400))
        .bind(last_seen)
        .fetch_all()
        .await
        .map_err(StoreError::query("select a campaign's timeline"))
}

/// Open ports found by a campaign's sources on its PCs in its time span:
/// (PC, ports).
pub(crate) async fn campaign_open_ports(
    client: &clickhouse::Client,
    sources: &[[u8; 16]],
    pcs: &[String],
    first_seen: u32,
    last_seen: u32,
) -> Result<Vec<(String, Vec<u16>)>, StoreError> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Found {
        agent_id: String,
        ports: Vec<u16>,
    }
    let sources: Vec<String> = sources.iter().map(hex).collect();
    let rows: Vec<Found> = client
        .query(
            "SELECT agent_id, arraySort(groupUniqArrayArray(open_ports)) AS ports \
             FROM scan_events \
             WHERE has(?, hex(scanner)) AND has(?, agent_id) AND notEmpty(open_ports) \
               AND first_seen >= toDateTime(?) AND first_seen <= toDateTime(?) \
             GROUP BY agent_id ORDER BY agent_id",
        )
        .bind(&sources)
        .bind(pcs)
        .bind(first_seen.saturating_sub(86_400))
        .bind(last_seen)
        .fetch_all()
        .await
        .map_err(StoreError::query("select a campaign's open ports"))?;
    Ok(rows.into_iter().map(|r| (r.agent_id, r.ports)).collect())
}

/// Campaigns one address took part in, by id.
pub(crate) async fn campaigns_of_source(
    client: &clickhouse::Client,
    source: &str,
) -> Result<Vec<uuid::Uuid>, StoreError> {
    let ids: Vec<crate::campaigns::CampaignIdRow> = client
        .query(
            "SELECT DISTINCT campaign_id FROM campaign_members \
             WHERE member = 'source' AND value = ?",
        )
        .bind(source)
        .fetch_all()
        .await
        .map_err(StoreError::query("select a source's campaigns"))?;
    Ok(ids.into_iter().map(|i| i.campaign_id).collect())
}

/// Campaigns (newest version of each) with these ids.
pub(crate) async fn campaigns_by_id(
    client: &clickhouse::Client,
    ids: &[uuid::Uuid],
) -> Result<Vec<crate::CampaignRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    client
        .query(
            "SELECT ?fields FROM campaigns FINAL WHERE has(?, toString(campaign_id)) \
             ORDER BY last_seen DESC",
        )
        .bind(&ids)
        .fetch_all()
        .await
        .map_err(StoreError::query("select campaigns by id"))
}

/// Every alert sent or given up for one campaign, oldest first.
pub(crate) async fn alerts_of(
    client: &clickhouse::Client,
    campaign_id: uuid::Uuid,
) -> Result<Vec<crate::AlertRow>, StoreError> {
    client
        .query("SELECT ?fields FROM alerts WHERE toString(campaign_id) = ? ORDER BY at")
        .bind(campaign_id.to_string())
        .fetch_all()
        .await
        .map_err(StoreError::query("select a campaign's alerts"))
}

pub(crate) async fn insert_triage(
    client: &clickhouse::Client,
    row: &TriageRow,
) -> Result<(), StoreError> {
    crate::insert_all(client, "campaign_triage", std::slice::from_ref(row)).await
}

/// Every triage change of the campaigns `ids`, oldest first.
pub(crate) async fn triage_of(
    client: &clickhouse::Client,
    ids: &[uuid::Uuid],
) -> Result<Vec<TriageRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    client
        .query(
            "SELECT ?fields FROM campaign_triage WHERE has(?, toString(campaign_id)) \
             ORDER BY at, state",
        )
        .bind(&ids)
        .fetch_all()
        .await
        .map_err(StoreError::query("select triage"))
}

pub(crate) async fn insert_audit(
    client: &clickhouse::Client,
    row: &AuditRow,
) -> Result<(), StoreError> {
    crate::insert_all(client, "audit_log", std::slice::from_ref(row)).await
}

/// Audit entries, newest first, each once.
pub(crate) async fn audit(
    client: &clickhouse::Client,
    offset: u64,
    limit: u64,
) -> Result<Vec<AuditRow>, StoreError> {
    client
        .query("SELECT ?fields FROM audit_log FINAL ORDER BY at DESC, audit_id LIMIT ? OFFSET ?")
        .bind(limit)
        .bind(offset)
        .fetch_all()
        .await
        .map_err(StoreError::query("select audit log"))
}

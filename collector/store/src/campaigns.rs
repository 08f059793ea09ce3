//! Campus-wide campaigns: the `campaigns` and `campaign_members` tables,
//! and the aggregate queries over recent scan events and knocks of all
//! agents that the correlator turns into campaigns.
//!
//! The activity queries group distinct values (`groupUniqArray`,
//! `uniqExact`), so a resent event stored twice before a merge changes
//! nothing and they need no FINAL.

use crate::StoreError;
use crate::ip::Cidr;

/// One version of a campaign. Field order matches the columns.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct CampaignRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub campaign_id: uuid::Uuid,
    pub kind: crate::CampaignKind,
    /// What the campaign is about: a source network, a port, a campus PC.
    pub campaign_key: String,
    pub state: crate::CampaignState,
    /// 1 low, 2 medium, 3 high, 4 critical.
    pub severity: u8,
    pub first_seen: u32,
    pub last_seen: u32,
    pub pcs: u32,
    pub sources: u32,
    pub ports: u32,
    pub open_ports: u32,
    pub explanation: String,
    pub updated_at: u32,
    /// Newest wins; see the correlator for how it is made.
    pub version: u64,
    /// Risky open ports of campus PCs (proxies, file sharing, remote
    /// desktop, telnet, open databases) that the campaign reached.
    pub exposed_ports: u32,
}

/// Severity (campaigns, scan episodes, alerts) as a word: 1 low,
/// 2 medium, 3 high, 4 critical.
pub fn severity_label(level: u8) -> &'static str {
    match level {
        0 | 1 => "low",
        2 => "medium",
        3 => "high",
        _ => "critical",
    }
}

/// A source, PC or port that took part in a campaign.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct CampaignMemberRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub campaign_id: uuid::Uuid,
    pub member: crate::MemberKind,
    pub value: String,
    pub first_seen: u32,
    pub last_seen: u32,
}

/// Recent scanning grouped one way (by source network, port or campus
/// source), as the correlator reads it.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize)]
pub struct ActivityRow {
    /// Hex of the source network or address, or the port number.
    pub group_key: String,
    pub sources: Vec<[u8; 16]>,
    /// Agent ids of the PCs that saw it.
    pub pcs: Vec<String>,
    pub ports: Vec<u16>,
    /// Ports that were open on some PC and were hit.
    pub open_ports_hit: Vec<u16>,
    /// Of those, the ones the PC flags as risky exposures.
    pub exposed_ports_hit: Vec<u16>,
    /// First and last probe of the activity.
    pub activity_start: u32,
    pub activity_end: u32,
}

/// Which events an activity query looks at.
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    /// Events whose last probe is at or after this (Unix seconds).
    pub since: u32,
    /// The campus's own networks: sources inside are internal.
    pub campus: Vec<Cidr>,
    /// Sources never correlated (the campus's scanners, monitoring).
    pub allowlist: Vec<Cidr>,
}

impl ActivityFilter {
    fn any_of(networks: &[Cidr], column: &str) -> String {
        if networks.is_empty() {
            return "0".to_owned();
        }
        let parts: Vec<String> = networks.iter().map(|n| n.sql_condition(column)).collect();
        format!("({})", parts.join(" OR "))
    }

    /// The WHERE clause on a table whose source address is `column`:
    /// recent, not allowlisted, and inside or outside the campus.
    fn clause(&self, internal: bool, column: &str) -> String {
        let campus = Self::any_of(&self.campus, column);
        // The first_seen bound lets ClickHouse skip every daily partition
        // but the last two (scan_events is partitioned by first_seen): a
        // pass reads recent data only, however much is stored. Episodes
        // that began over a day before the window are left out.
        format!(
            "first_seen >= toDateTime({oldest}) AND last_seen >= toDateTime({since}) \
             AND NOT {allow} AND {not}{campus}",
            oldest = self.since.saturating_sub(MAX_EPISODE_SECONDS),
            since = self.since,
            allow = Self::any_of(&self.allowlist, column),
            not = if internal { "" } else { "NOT " },
        )
    }

    /// The recent activity an aggregate query reads, as a subquery: scan
    /// events, and knocks as one-port scans (a source that tried one
    /// closed port of a PC once). Internal or outside sources only.
    fn activity(&self, internal: bool) -> String {
        format!(
            "(SELECT scanner, agent_id, port_sample, open_ports, exposed_ports, ports_probed, \
                     first_seen, last_seen \
              FROM scan_events WHERE {scans} \
              UNION ALL \
              SELECT source AS scanner, agent_id, [port] AS port_sample, \
                     emptyArrayUInt16() AS open_ports, emptyArrayUInt16() AS exposed_ports, \
                     toUInt32(1) AS ports_probed, first_seen, last_seen \
              FROM knock_events WHERE {knocks})",
            scans = self.clause(internal, "scanner"),
            knocks = self.clause(internal, "source"),
        )
    }
}

/// Longest episode (first to last probe) a correlation pass still sees.
pub const MAX_EPISODE_SECONDS: u32 = 86_400;

/// Most members of each kind one activity row lists.
const MEMBERS: u32 = 1000;

/// Outside sources, grouped by their /24 (IPv4) or /64 (IPv6), seen by
/// at least `min_pcs` PCs.
/// A query's answer that is only campaign ids.
#[derive(clickhouse::Row, serde::Deserialize)]
pub(crate) struct CampaignIdRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub(crate) campaign_id: uuid::Uuid,
}

pub(crate) async fn sweeps(
    client: &clickhouse::Client,
    filter: &ActivityFilter,
    min_pcs: u32,
) -> Result<Vec<ActivityRow>, StoreError> {
    let sql = format!(
        "SELECT hex(if(substring(scanner, 1, 12) = unhex('00000000000000000000FFFF'), \
                       concat(substring(scanner, 1, 15), unhex('00')), \
                       concat(substring(scanner, 1, 8), unhex('0000000000000000')))) AS group_key, \
                arraySlice(groupUniqArray(scanner), 1, {MEMBERS}) AS sources, \
                arraySlice(groupUniqArray(agent_id), 1, {MEMBERS}) AS pcs, \
                arraySlice(groupUniqArrayArray(port_sample), 1, {MEMBERS}) AS ports, \
                arraySlice(groupUniqArrayArray(open_ports), 1, {MEMBERS}) AS open_ports_hit, \
                arraySlice(groupUniqArrayArray(exposed_ports), 1, {MEMBERS}) AS exposed_ports_hit, \
                min(first_seen) AS activity_start, max(last_seen) AS activity_end \
         FROM {activity} \
         GROUP BY group_key HAVING uniqExact(agent_id) >= {min_pcs} \
         ORDER BY group_key",
        activity = filter.activity(false),
    );
    fetch(client, &sql, "select sweeps").await
}

/// Ports probed by at least `min_sources` outside sources on at least
/// `min_pcs` PCs, counting only sources that probed at most
/// `max_ports` ports of a PC (targeted probing, not full scans).
pub(crate) async fn distributed(
    client: &clickhouse::Client,
    filter: &ActivityFilter,
    min_sources: u32,
    min_pcs: u32,
    max_ports: u32,
) -> Result<Vec<ActivityRow>, StoreError> {
    let sql = format!(
        "SELECT toString(port) AS group_key, \
                arraySlice(groupUniqArray(scanner), 1, {MEMBERS}) AS sources, \
                arraySlice(groupUniqArray(agent_id), 1, {MEMBERS}) AS pcs, \
                [any(port)] AS ports, \
                arraySlice(groupUniqArrayArray(arrayFilter(p -> p = port, open_ports)), 1, {MEMBERS}) AS open_ports_hit, \
                arraySlice(groupUniqArrayArray(arrayFilter(p -> p = port, exposed_ports)), 1, {MEMBERS}) AS exposed_ports_hit, \
                min(first_seen) AS activity_start, max(last_seen) AS activity_end \
         FROM {activity} ARRAY JOIN port_sample AS port \
         WHERE ports_probed <= {max_ports} \
         GROUP BY port \
         HAVING uniqExact(scanner) >= {min_sources} AND uniqExact(agent_id) >= {min_pcs} \
         ORDER BY port",
        activity = filter.activity(false),
    );
    fetch(client, &sql, "select distributed").await
}

/// Campus sources scanning at least `min_pcs` other PCs.
pub(crate) async fn internal(
    client: &clickhouse::Client,
    filter: &ActivityFilter,
    min_pcs: u32,
) -> Result<Vec<ActivityRow>, StoreError> {
    let sql = format!(
        "SELECT hex(scanner) AS group_key, \
                [any(scanner)] AS sources, \
                arraySlice(groupUniqArray(agent_id), 1, {MEMBERS}) AS pcs, \
                arraySlice(groupUniqArrayArray(port_sample), 1, {MEMBERS}) AS ports, \
                arraySlice(groupUniqArrayArray(open_ports), 1, {MEMBERS}) AS open_ports_hit, \
                arraySlice(groupUniqArrayArray(exposed_ports), 1, {MEMBERS}) AS exposed_ports_hit, \
                min(first_seen) AS activity_start, max(last_seen) AS activity_end \
         FROM {activity} \
         GROUP BY scanner HAVING uniqExact(agent_id) >= {min_pcs} \
         ORDER BY group_key",
        activity = filter.activity(true),
    );
    fetch(client, &sql, "select internal scanning").await
}

/// Outbound anomalies of one kind, towards the same destination (or, for
/// kinds without one, the same port), reported by at least `min_pcs` PCs.
/// `group_key` is "KIND:HEX OF THE DESTINATION:PORT"; the destination is
/// also the one "source" member, and all zeros when there is none.
pub(crate) async fn outbound(
    client: &clickhouse::Client,
    since: u32,
    min_pcs: u32,
) -> Result<Vec<ActivityRow>, StoreError> {
    let sql = format!(
        "SELECT concat(toString(kind), ':', hex(remote), ':', toString(remote_port)) AS group_key, \
                [any(remote)] AS sources, \
                arraySlice(groupUniqArray(agent_id), 1, {MEMBERS}) AS pcs, \
                arrayFilter(p -> p != 0, [any(remote_port)]) AS ports, \
                emptyArrayUInt16() AS open_ports_hit, \
                emptyArrayUInt16() AS exposed_ports_hit, \
                min(first_seen) AS activity_start, max(last_seen) AS activity_end \
         FROM outbound_anomalies \
         WHERE first_seen >= toDateTime({oldest}) AND last_seen >= toDateTime({since}) \
         GROUP BY kind, remote, remote_port HAVING uniqExact(agent_id) >= {min_pcs} \
         ORDER BY group_key",
        oldest = since.saturating_sub(MAX_EPISODE_SECONDS),
    );
    fetch(client, &sql, "select outbound activity").await
}

async fn fetch(
    client: &clickhouse::Client,
    sql: &str,
    step: &'static str,
) -> Result<Vec<ActivityRow>, StoreError> {
    client
        .query(sql)
        .fetch_all::<ActivityRow>()
        .await
        .map_err(StoreError::query(step))
}

/// Campaigns not closed, newest version of each.
pub(crate) async fn active(client: &clickhouse::Client) -> Result<Vec<CampaignRow>, StoreError> {
    client
        .query("SELECT ?fields FROM campaigns FINAL WHERE state != 'closed'")
        .fetch_all::<CampaignRow>()
        .await
        .map_err(StoreError::query("select active campaigns"))
}

/// Campaigns last seen at or after `since_unix`, newest first.
pub(crate) async fn recent(
    client: &clickhouse::Client,
    since_unix: u32,
    limit: u64,
) -> Result<Vec<CampaignRow>, StoreError> {
    client
        .query(
            "SELECT ?fields FROM campaigns FINAL WHERE last_seen >= toDateTime(?) \
             ORDER BY last_seen DESC LIMIT ?",
        )
        .bind(since_unix)
        .bind(limit)
        .fetch_all::<CampaignRow>()
        .await
        .map_err(StoreError::query("select campaigns"))
}

/// Members of campaign `id`.
pub(crate) async fn members(
    client: &clickhouse::Client,
    id: uuid::Uuid,
) -> Result<Vec<CampaignMemberRow>, StoreError> {
    client
        .query(&format!(
            "SELECT ?fields FROM campaign_members FINAL \
             WHERE campaign_id = toUUID('{id}') ORDER BY member, value"
        ))
        .fetch_all::<CampaignMemberRow>()
        .await
        .map_err(StoreError::query("select campaign members"))
}

/// Distinct members of each kind per campaign, for `ids`:
/// (campaign id, sources, pcs, ports).
pub(crate) async fn member_counts(
    client: &clickhouse::Client,
    ids: &[uuid::Uuid],
) -> Result<Vec<MemberCounts>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = ids.iter().map(|id| format!("toUUID('{id}')")).collect();
    client
        .query(&format!(
            "SELECT campaign_id, \
                    toUInt32(uniqExactIf(value, member = 'source')) AS sources, \
                    toUInt32(uniqExactIf(value, member = 'pc')) AS pcs, \
                    toUInt32(uniqExactIf(value, member = 'port')) AS ports \
             FROM campaign_members WHERE campaign_id IN ({}) GROUP BY campaign_id",
            list.join(", ")
        ))
        .fetch_all::<MemberCounts>()
        .await
        .map_err(StoreError::query("count campaign members"))
}

/// How many distinct members one campaign has.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize)]
pub struct MemberCounts {
    #[serde(with = "clickhouse::serde::uuid")]
    pub campaign_id: uuid::Uuid,
    pub sources: u32,
    pub pcs: u32,
    pub ports: u32,
}

pub(crate) async fn insert_campaigns(
    client: &clickhouse::Client,
    rows: &[CampaignRow],
) -> Result<(), StoreError> {
    crate::insert_all(client, "campaigns", rows).await
}

pub(crate) async fn insert_members(
    client: &clickhouse::Client,
    rows: &[CampaignMemberRow],
) -> Result<(), StoreError> {
    crate::insert_all(client, "campaign_members", rows).await
}

/// One alert sent or given up on a channel.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct AlertRow {
    /// The campaign, or for a revoked PC's return the `return_id` of its
    /// `revoked_returns` row (see `subject`).
    #[serde(with = "clickhouse::serde::uuid")]
    pub campaign_id: uuid::Uuid,
    pub severity: u8,
    pub channel: String,
    pub status: crate::AlertStatus,
    pub attempts: u32,
    pub at: u32,
    pub error: String,
    pub text: String,
    /// What the alert is about.
    pub subject: crate::AlertSubject,
}

pub(crate) async fn insert_alert(
    client: &clickhouse::Client,
    row: &AlertRow,
) -> Result<(), StoreError> {
    crate::insert_all(client, "alerts", std::slice::from_ref(row)).await
}

/// The highest severity recorded per campaign (or return) and channel,
/// for `ids`.
pub(crate) async fn alerted(
    client: &clickhouse::Client,
    ids: &[uuid::Uuid],
) -> Result<Vec<(uuid::Uuid, String, u8)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = ids.iter().map(|id| format!("toUUID('{id}')")).collect();
    let rows: Vec<AlertedRow> = client
        .query(&format!(
            "SELECT campaign_id, channel, max(severity) AS top \
             FROM alerts WHERE campaign_id IN ({}) GROUP BY campaign_id, channel",
            list.join(", ")
        ))
        .fetch_all()
        .await
        .map_err(StoreError::query("select alerts"))?;
    Ok(rows
        .into_iter()
        .map(|r| (r.campaign_id, r.channel, r.top))
        .collect())
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct AlertedRow {
    #[serde(with = "clickhouse::serde::uuid")]
    campaign_id: uuid::Uuid,
    channel: String,
    top: u8,
}

/// Alerts recorded since `since_unix`, newest first.
pub(crate) async fn recent_alerts(
    client: &clickhouse::Client,
    since_unix: u32,
) -> Result<Vec<AlertRow>, StoreError> {
    client
        .query("SELECT ?fields FROM alerts WHERE at >= toDateTime(?) ORDER BY at DESC")
        .bind(since_unix)
        .fetch_all::<AlertRow>()
        .await
        .map_err(StoreError::query("select recent alerts"))
}

/// One source for the blocklist feed.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize)]
pub struct FeedSourceRow {
    /// The address as text.
    pub source: String,
    /// Last activity in any sweep or distributed campaign.
    pub last_active: u32,
    /// Campaigns it took part in.
    pub campaigns: u64,
    /// Their ids, as text, in order.
    pub campaign_ids: Vec<String>,
}

/// Sources of sweep and distributed campaigns active at or after
/// `since_unix`.
pub(crate) async fn feed_sources(
    client: &clickhouse::Client,
    since_unix: u32,
) -> Result<Vec<FeedSourceRow>, StoreError> {
    client
        .query(
            "SELECT value AS source, max(last_seen) AS last_active, \
                    uniqExact(campaign_id) AS campaigns, \
                    arraySort(groupUniqArray(toString(campaign_id))) AS campaign_ids \
             FROM campaign_members \
             WHERE member = 'source' AND last_seen >= toDateTime(?) \
               AND campaign_id IN (SELECT campaign_id FROM campaigns \
                                   WHERE kind IN ('sweep', 'distributed')) \
             GROUP BY value ORDER BY value",
        )
        .bind(since_unix)
        .fetch_all::<FeedSourceRow>()
        .await
        .map_err(StoreError::query("select feed sources"))
}

/// Records that `holder` wants lease `name` for `term`.
pub(crate) async fn claim_lease(
    client: &clickhouse::Client,
    name: &str,
    term: u64,
    holder: &str,
    now: u32,
) -> Result<(), StoreError> {
    #[derive(clickhouse::Row, serde::Serialize)]
    struct Claim<'a> {
        name: &'a str,
        term: u64,
        holder: &'a str,
        claimed_at: u32,
    }
    let mut insert = client
        .insert::<Claim<'_>>("leases")
        .await
        .map_err(StoreError::query("claim lease"))?;
    insert
        .write(&Claim {
            name,
            term,
            holder,
            claimed_at: now,
        })
        .await
        .map_err(StoreError::query("claim lease"))?;
    insert.end().await.map_err(StoreError::query("claim lease"))
}

/// The holder of lease `name` for `term`: the smallest id that claimed it.
pub(crate) async fn lease_holder(
    client: &clickhouse::Client,
    name: &str,
    term: u64,
    claimed_before: u32,
) -> Result<Option<String>, StoreError> {
    client
        .query(
            "SELECT holder FROM leases WHERE name = ? AND term = ? \
             AND claimed_at < toDateTime(?) ORDER BY holder LIMIT 1",
        )
        .bind(name)
        .bind(term)
        .bind(claimed_before)
        .fetch_optional::<String>()
        .await
        .map_err(StoreError::query("read lease"))
}

//! doorwatch's ClickHouse storage: the schema and its versioned migrations,
//! the `Row` types, and the queries that the collector and the console share.
//!
//! `Row` structs live only here. This crate speaks SQL over the official
//! `clickhouse` crate and knows nothing of gRPC, TLS or capture.
//!
//! Compatibility: the SQL here must run on Debian's ClickHouse 18.16 and on
//! current releases (see `docs/clickhouse.md`). IPs are `FixedString(16)`,
//! there are no TTL clauses, no IPv4/IPv6/DateTime64/JSON types and no
//! server-side query parameters.

#![forbid(unsafe_code)]

mod campaigns;
mod config;
mod connect;
mod console;
mod enrollment;
mod error;
mod flood_events;
pub mod grants;
mod heartbeats;
mod inserter;
pub mod ip;
pub mod kinds;
mod knock_events;
pub mod layout;
mod migrations;
mod outbound;
mod policies;
mod replicas;
mod retention;
pub mod rules;
mod scan_events;
mod server;
mod token;

pub use campaigns::{
    ActivityFilter, ActivityRow, AlertRow, CampaignMemberRow, CampaignRow, FeedSourceRow,
    MemberCounts, severity_label,
};
pub use config::{ClickHouseConfig, InvalidClickHouseConfig, PasswordFileError};
pub use console::{
    AuditRow, EpisodeRow, EventSearch, PcHitRow, PortRow, ScannerRow, TimeBucket, TriageRow,
};
pub use enrollment::{
    AgentRow, RevocationRow, RevokedMatch, RevokedReturnRow, TokenRow, TokenState, TokenUse,
};
pub use error::StoreError;
pub use flood_events::FloodEventRow;
pub use heartbeats::{AgentHealthRow, Health, HeartbeatRow};
pub use inserter::{EventInserter, EventRows, InsertLimits};
pub use kinds::{
    AlertStatus, AlertSubject, AnomalyKind, CampaignKind, CampaignState, EpisodeState, MemberKind,
    TriageState,
};
pub use knock_events::KnockEventRow;
pub use migrations::{MIGRATIONS, Migration, Step};
pub use outbound::{FlowMinuteRow, ListeningPortRow, OutboundAnomalyRow, TalkerRow};
pub use policies::{AllowlistRow, PolicyRow};
pub use retention::PartitionRow;
pub use scan_events::ScanEventRow;
pub use server::{MINIMUM_VERSION, ServerInfo, SqlPath};
pub use token::{MalformedToken, NoRandomness, Token, hex_sha256};

/// Where and how to reach ClickHouse.
#[derive(Clone)]
pub struct StoreConfig {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding doorwatch's tables; created if missing.
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    /// Compress what is sent to ClickHouse with LZ4 (worth it over a
    /// network; on the same host it only costs CPU).
    pub compress: bool,
    /// The cluster to lay the schema out on; `None`: one server.
    pub cluster: Option<Cluster>,
}

/// A ClickHouse cluster doorwatch's schema spans (see `layout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Its name in the servers' `remote_servers`.
    pub name: String,
    /// Replicas of a shard that must hold an insert before it is
    /// acknowledged; 0 or 1: the replica that took it.
    pub insert_quorum: u32,
}

/// Everything but the password.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("compress", &self.compress)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// A connection pool to ClickHouse with the schema applied.
#[derive(Clone)]
pub struct Store {
    client: clickhouse::Client,
    layout: layout::Layout,
    server: ServerInfo,
    url: String,
    user: String,
    database: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("server", &self.server)
            .finish()
    }
}

impl Store {
    /// What the connected server is and which SQL path is in use.
    pub fn server(&self) -> &ServerInfo {
        &self.server
    }

    /// Writes scan events in one INSERT. Returns only after ClickHouse has
    /// accepted the whole insert, so the caller may acknowledge the batch.
    pub async fn insert_scan_events(&self, rows: &[ScanEventRow]) -> Result<(), StoreError> {
        scan_events::insert(&self.client, rows).await
    }

    /// Opens batched INSERTs for scan and flood events (see
    /// [`EventInserter`]).
    pub fn event_inserter(&self, limits: InsertLimits) -> EventInserter {
        EventInserter::new(&self.client, limits)
    }

    /// Writes flood events in one INSERT, like [`Store::insert_scan_events`].
    pub async fn insert_flood_events(&self, rows: &[FloodEventRow]) -> Result<(), StoreError> {
        flood_events::insert(&self.client, rows).await
    }

    /// Flood events received at or after `since_unix`, each id once.
    pub async fn recent_flood_events(
        &self,
        since_unix: u32,
        limit: u64,
    ) -> Result<Vec<FloodEventRow>, StoreError> {
        flood_events::recent(&self.client, since_unix, limit).await
    }

    /// Writes heartbeats in one INSERT.
    pub async fn insert_heartbeats(&self, rows: &[HeartbeatRow]) -> Result<(), StoreError> {
        heartbeats::insert(&self.client, rows).await
    }

    /// The newest heartbeat of every agent heard from since `since_unix`.
    pub async fn agent_health(&self, since_unix: u32) -> Result<Vec<AgentHealthRow>, StoreError> {
        heartbeats::latest(&self.client, since_unix).await
    }

    /// The newest policy of agent group `group`, if one was ever set.
    pub async fn latest_policy(&self, group: &str) -> Result<Option<PolicyRow>, StoreError> {
        policies::latest(&self.client, group).await
    }

    /// Stores a new policy version.
    pub async fn insert_policy(&self, row: &PolicyRow) -> Result<(), StoreError> {
        policies::insert(&self.client, row).await
    }

    /// Scan events received at or after `since_unix` (seconds), each event
    /// id once, newest first, at most `limit` rows.
    pub async fn recent_scan_events(
        &self,
        since_unix: u32,
        limit: u64,
    ) -> Result<Vec<ScanEventRow>, StoreError> {
        scan_events::recent(&self.client, since_unix, limit).await
    }

    /// Stores a new version of a bootstrap token.
    pub async fn insert_token(&self, row: &TokenRow) -> Result<(), StoreError> {
        enrollment::insert_token(&self.client, row).await
    }

    /// A token's newest version and its number of uses.
    pub async fn token(&self, token_id: &str) -> Result<Option<TokenUse>, StoreError> {
        enrollment::token(&self.client, token_id).await
    }

    /// Every token with its number of uses, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenUse>, StoreError> {
        enrollment::tokens(&self.client).await
    }

    /// Stores a new version of an enrolled agent.
    pub async fn insert_agent(&self, row: &AgentRow) -> Result<(), StoreError> {
        enrollment::insert_agent(&self.client, row).await
    }

    /// An enrolled agent's newest version.
    pub async fn agent(&self, agent_id: &str) -> Result<Option<AgentRow>, StoreError> {
        enrollment::agent(&self.client, agent_id).await
    }

    /// The agent that ever enrolled or renewed with this public key.
    pub async fn agent_with_key(&self, key_sha256: &str) -> Result<Option<String>, StoreError> {
        enrollment::agent_with_key(&self.client, key_sha256).await
    }

    /// Every enrolled agent's newest version.
    pub async fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        enrollment::agents(&self.client).await
    }

    /// Records a revocation.
    pub async fn insert_revocation(&self, row: &RevocationRow) -> Result<(), StoreError> {
        enrollment::insert_revocation(&self.client, row).await
    }

    /// Revokes an agent as `row` says, and, unless `keep_token`, the
    /// bootstrap token it enrolled with while that token can still enroll
    /// PCs: a stolen PC keeps its agent.toml, token and all, and would
    /// otherwise enroll again as a new agent. Returns the token revoked,
    /// if one was.
    pub async fn revoke_agent(
        &self,
        row: &RevocationRow,
        keep_token: bool,
    ) -> Result<Option<TokenUse>, StoreError> {
        self.insert_revocation(row).await?;
        if keep_token {
            return Ok(None);
        }
        let Some(agent) = self.agent(&row.agent_id).await? else {
            return Ok(None);
        };
        if agent.token_id.is_empty() {
            return Ok(None);
        }
        let Some(found) = self.token(&agent.token_id).await? else {
            return Ok(None);
        };
        if found.state(u64::from(row.revoked_at)) != TokenState::Usable {
            // Revoked, expired or used up: it enrolls nobody any more.
            return Ok(None);
        }
        let revoked = rules::revoke_token(found.token.clone(), &row.revoked_by, row.revoked_at);
        self.insert_token(&revoked).await?;
        Ok(Some(TokenUse {
            token: revoked,
            uses: found.uses,
        }))
    }

    /// Every revoked agent id, with its first revocation.
    pub async fn revocations(&self) -> Result<Vec<RevocationRow>, StoreError> {
        enrollment::revocations(&self.client).await
    }

    /// The revoked agents an enrolling PC resembles: those whose current
    /// record has the hostname it claims (ignoring ASCII case) or the key
    /// it presents (hex SHA-256 of the SubjectPublicKeyInfo), most
    /// recently revoked first, at most `limit`. An empty hostname or key
    /// matches nothing.
    pub async fn revoked_matching(
        &self,
        hostname: &str,
        key_sha256: &str,
        limit: u64,
    ) -> Result<Vec<RevokedMatch>, StoreError> {
        enrollment::revoked_matching(&self.client, hostname, key_sha256, limit).await
    }

    /// Records enrollments that resembled revoked agents.
    pub async fn insert_revoked_returns(
        &self,
        rows: &[RevokedReturnRow],
    ) -> Result<(), StoreError> {
        enrollment::insert_revoked_returns(&self.client, rows).await
    }

    /// Returns recorded at or after `since_unix`, each once, oldest first.
    pub async fn revoked_returns(
        &self,
        since_unix: u32,
    ) -> Result<Vec<RevokedReturnRow>, StoreError> {
        self.catch_up("revoked_returns").await?;
        enrollment::revoked_returns(&self.client, since_unix).await
    }

    /// Outside sources by /24 or /64 seen by at least `min_pcs` PCs.
    pub async fn sweep_activity(
        &self,
        filter: &ActivityFilter,
        min_pcs: u32,
    ) -> Result<Vec<ActivityRow>, StoreError> {
        campaigns::sweeps(&self.client, filter, min_pcs).await
    }

    /// Ports probed by many outside sources on many PCs.
    pub async fn distributed_activity(
        &self,
        filter: &ActivityFilter,
        min_sources: u32,
        min_pcs: u32,
        max_ports: u32,
    ) -> Result<Vec<ActivityRow>, StoreError> {
        campaigns::distributed(&self.client, filter, min_sources, min_pcs, max_ports).await
    }

    /// The same outbound anomaly (kind and destination) on at least
    /// `min_pcs` PCs, since `since_unix`.
    pub async fn outbound_activity(
        &self,
        since_unix: u32,
        min_pcs: u32,
    ) -> Result<Vec<ActivityRow>, StoreError> {
        campaigns::outbound(&self.client, since_unix, min_pcs).await
    }

    /// The processes of one PC that sent most since `since_unix`.
    pub async fn top_talkers(
        &self,
        agent_id: &str,
        since_unix: u32,
        limit: u64,
    ) -> Result<Vec<TalkerRow>, StoreError> {
        outbound::top_talkers(&self.client, agent_id, since_unix, limit).await
    }

    /// The destinations all PCs sent most to since `since_unix`; names are
    /// "hex of the address:port".
    pub async fn top_destinations(
        &self,
        since_unix: u32,
        limit: u64,
    ) -> Result<Vec<TalkerRow>, StoreError> {
        outbound::top_destinations(&self.client, since_unix, limit).await
    }

    /// Outbound anomalies received since `since_unix`, each event once.
    pub async fn outbound_anomalies(
        &self,
        since_unix: u32,
        limit: u64,
    ) -> Result<Vec<OutboundAnomalyRow>, StoreError> {
        outbound::anomalies(&self.client, since_unix, limit).await
    }

    /// The newest listening-port inventory of every PC, or of one.
    pub async fn listening_ports(
        &self,
        agent_id: Option<&str>,
    ) -> Result<Vec<ListeningPortRow>, StoreError> {
        outbound::listening(&self.client, agent_id).await
    }

    /// Campus sources scanning at least `min_pcs` PCs.
    pub async fn internal_activity(
        &self,
        filter: &ActivityFilter,
        min_pcs: u32,
    ) -> Result<Vec<ActivityRow>, StoreError> {
        campaigns::internal(&self.client, filter, min_pcs).await
    }

    /// Scan episodes that started per hour since `since`.
    pub async fn scans_per_hour(&self, since: u32) -> Result<Vec<TimeBucket>, StoreError> {
        console::scans_per_hour(&self.client, since).await
    }

    /// Sources that scanned most PCs since `since`.
    pub async fn top_scanners(
        &self,
        since: u32,
        limit: u64,
    ) -> Result<Vec<ScannerRow>, StoreError> {
        console::top_scanners(&self.client, since, limit).await
    }

    /// Ports probed by most sources since `since`.
    pub async fn top_ports(&self, since: u32, limit: u64) -> Result<Vec<PortRow>, StoreError> {
        console::top_ports(&self.client, since, limit).await
    }

    /// PCs scanned by most sources since `since`.
    pub async fn pcs_hit(&self, since: u32, limit: u64) -> Result<Vec<PcHitRow>, StoreError> {
        console::pcs_hit(&self.client, since, limit).await
    }

    /// Scan episodes matching `search` (newest report of each) and about
    /// how many match in all.
    pub async fn search_episodes(
        &self,
        search: &EventSearch,
    ) -> Result<(Vec<EpisodeRow>, u64), StoreError> {
        console::search_episodes(&self.client, search).await
    }

    /// A campaign's scans and knocks per five minutes.
    pub async fn campaign_timeline(
        &self,
        sources: &[[u8; 16]],
        pcs: &[String],
        first_seen: u32,
        last_seen: u32,
    ) -> Result<Vec<TimeBucket>, StoreError> {
        console::campaign_timeline(&self.client, sources, pcs, first_seen, last_seen).await
    }

    /// Open ports a campaign's sources found on its PCs: (PC, ports).
    pub async fn campaign_open_ports(
        &self,
        sources: &[[u8; 16]],
        pcs: &[String],
        first_seen: u32,
        last_seen: u32,
    ) -> Result<Vec<(String, Vec<u16>)>, StoreError> {
        console::campaign_open_ports(&self.client, sources, pcs, first_seen, last_seen).await
    }

    /// Ids of the campaigns a source address (as text) took part in.
    pub async fn campaigns_of_source(&self, source: &str) -> Result<Vec<uuid::Uuid>, StoreError> {
        console::campaigns_of_source(&self.client, source).await
    }

    /// The newest version of each campaign in `ids`.
    pub async fn campaigns_by_id(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<CampaignRow>, StoreError> {
        console::campaigns_by_id(&self.client, ids).await
    }

    /// Alerts sent or given up for one campaign.
    pub async fn alerts_of(&self, campaign_id: uuid::Uuid) -> Result<Vec<AlertRow>, StoreError> {
        console::alerts_of(&self.client, campaign_id).await
    }

    /// Records the correlation allowlist in force.
    pub async fn insert_allowlist(&self, row: &AllowlistRow) -> Result<(), StoreError> {
        policies::insert_allowlist(&self.client, row).await
    }

    /// The newest correlation allowlist recorded, if any.
    pub async fn allowlist(&self) -> Result<Option<AllowlistRow>, StoreError> {
        policies::allowlist(&self.client).await
    }

    /// Records a triage change.
    pub async fn insert_triage(&self, row: &TriageRow) -> Result<(), StoreError> {
        console::insert_triage(&self.client, row).await
    }

    /// Triage changes of campaigns `ids`, oldest first.
    pub async fn triage_of(&self, ids: &[uuid::Uuid]) -> Result<Vec<TriageRow>, StoreError> {
        console::triage_of(&self.client, ids).await
    }

    /// Records a change in the audit log.
    pub async fn insert_audit(&self, row: &AuditRow) -> Result<(), StoreError> {
        console::insert_audit(&self.client, row).await
    }

    /// Audit entries, newest first.
    pub async fn audit_log(&self, offset: u64, limit: u64) -> Result<Vec<AuditRow>, StoreError> {
        console::audit(&self.client, offset, limit).await
    }

    /// Campaigns not closed.
    pub async fn active_campaigns(&self) -> Result<Vec<CampaignRow>, StoreError> {
        campaigns::active(&self.client).await
    }

    /// Campaigns last seen at or after `since_unix`, newest first.
    pub async fn recent_campaigns(
        &self,
        since_unix: u32,
        limit: u64,
    ) -> Result<Vec<CampaignRow>, StoreError> {
        campaigns::recent(&self.client, since_unix, limit).await
    }

    /// The sources, PCs and ports of one campaign.
    pub async fn campaign_members(
        &self,
        id: uuid::Uuid,
    ) -> Result<Vec<CampaignMemberRow>, StoreError> {
        campaigns::members(&self.client, id).await
    }

    /// Distinct members per campaign.
    pub async fn campaign_member_counts(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<MemberCounts>, StoreError> {
        campaigns::member_counts(&self.client, ids).await
    }

    /// Stores campaign versions.
    pub async fn insert_campaigns(&self, rows: &[CampaignRow]) -> Result<(), StoreError> {
        campaigns::insert_campaigns(&self.client, rows).await
    }

    /// Stores campaign members (repeats collapse).
    pub async fn insert_campaign_members(
        &self,
        rows: &[CampaignMemberRow],
    ) -> Result<(), StoreError> {
        campaigns::insert_members(&self.client, rows).await
    }

    /// Records an alert sent or given up.
    pub async fn insert_alert(&self, row: &AlertRow) -> Result<(), StoreError> {
        campaigns::insert_alert(&self.client, row).await
    }

    /// Highest severity alerted per (campaign or return, channel), for
    /// `ids`.
    pub async fn alerted(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<(uuid::Uuid, String, u8)>, StoreError> {
        self.catch_up("alerts").await?;
        campaigns::alerted(&self.client, ids).await
    }

    /// Sources of sweep and distributed campaigns active since `since_unix`.
    pub async fn feed_sources(&self, since_unix: u32) -> Result<Vec<FeedSourceRow>, StoreError> {
        campaigns::feed_sources(&self.client, since_unix).await
    }

    /// Scanners that completed a TCP handshake with a campus PC (their
    /// address is not forged) in episodes seen at or after `since_unix`.
    pub async fn verified_scanners(
        &self,
        since_unix: u32,
    ) -> Result<Vec<std::net::IpAddr>, StoreError> {
        scan_events::verified_scanners(&self.client, since_unix).await
    }

    /// Claims lease `name` for `term` for `holder`.
    pub async fn claim_lease(
        &self,
        name: &str,
        term: u64,
        holder: &str,
        now: u32,
    ) -> Result<(), StoreError> {
        campaigns::claim_lease(&self.client, name, term, holder, now).await
    }

    /// Who holds lease `name` for `term`: the smallest holder among the
    /// claims made before `claimed_before` (Unix seconds), if any. On a
    /// cluster, this node first takes in every claim other nodes hold.
    pub async fn lease_holder(
        &self,
        name: &str,
        term: u64,
        claimed_before: u32,
    ) -> Result<Option<String>, StoreError> {
        self.catch_up("leases").await?;
        campaigns::lease_holder(&self.client, name, term, claimed_before).await
    }

    /// Alerts recorded since `since_unix`, newest first.
    pub async fn recent_alerts(&self, since_unix: u32) -> Result<Vec<AlertRow>, StoreError> {
        campaigns::recent_alerts(&self.client, since_unix).await
    }

    /// The active partitions of `tables` with their rows and bytes, by
    /// table and partition.
    pub async fn partitions(&self, tables: &[&str]) -> Result<Vec<PartitionRow>, StoreError> {
        retention::partitions(&self.client, &self.layout, tables).await
    }

    /// Drops one partition (`YYYYMMDD` or `YYYYMM`) of `table`.
    pub async fn drop_partition(
        &self,
        table: &'static str,
        partition: &str,
    ) -> Result<(), StoreError> {
        retention::drop_partition(&self.client, &self.layout, table, partition).await
    }

    /// Campaigns whose newest activity is before `cutoff` (Unix seconds).
    pub async fn campaigns_last_seen_before(
        &self,
        cutoff: u32,
    ) -> Result<Vec<uuid::Uuid>, StoreError> {
        retention::campaigns_last_seen_before(&self.client, cutoff).await
    }

    /// Deletes every row of these campaigns: versions, members, alerts and
    /// triage (`ALTER TABLE … DELETE`; the server removes them in the
    /// background).
    pub async fn delete_campaigns(&self, ids: &[uuid::Uuid]) -> Result<(), StoreError> {
        retention::delete_campaigns(&self.client, ids).await
    }

    /// Deletes lease claims made before `cutoff`; returns how many there were.
    pub async fn delete_leases_before(&self, cutoff: u32) -> Result<u64, StoreError> {
        retention::delete_leases_before(&self.client, cutoff).await
    }

    /// The migration versions recorded as applied, ascending.
    pub async fn applied_migrations(&self) -> Result<Vec<u32>, StoreError> {
        migrations::applied(&self.client).await
    }
}

/// Writes `rows` to `table` in one INSERT; returns once ClickHouse accepted
/// all of them.
async fn insert_all<R>(
    client: &clickhouse::Client,
    table: &'static str,
    rows: &[R],
) -> Result<(), StoreError>
where
    R: clickhouse::RowOwned + clickhouse::RowWrite,
{
    if rows.is_empty() {
        return Ok(());
    }
    let step = "insert";
    let mut insert = client
        .insert::<R>(table)
        .await
        .map_err(StoreError::query(step))?;
    for row in rows {
        insert.write(row).await.map_err(StoreError::query(step))?;
    }
    insert.end().await.map_err(StoreError::query(step))
}

/// Rows of `table` received at or after `since_unix`, each event id once
/// (FINAL), newest first, at most `limit`.
async fn recent_rows<R>(
    client: &clickhouse::Client,
    table: &'static str,
    since_unix: u32,
    limit: u64,
) -> Result<Vec<R>, StoreError>
where
    R: clickhouse::RowOwned + clickhouse::RowRead,
{
    client
        .query(&format!(
            "SELECT ?fields FROM {table} FINAL \
             WHERE received_at >= toDateTime(?) \
             ORDER BY received_at DESC, last_seen DESC LIMIT ?"
        ))
        .bind(since_unix)
        .bind(limit)
        .fetch_all::<R>()
        .await
        .map_err(StoreError::query("select recent events"))
}

/// Quotes an identifier with backticks, escaping embedded backticks and
/// backslashes. Identifiers come from validated config, but quoting keeps
/// a typo from turning into SQL.
fn quote_identifier(name: &str) -> String {
    let escaped = name.replace('\\', "\\\\").replace('`', "\\`");
    format!("`{escaped}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_config_debug_hides_the_password() {
        let config = StoreConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "doorwatch".into(),
            user: "collector".into(),
            password: Some("ch-password-value".into()),
            compress: false,
            cluster: None,
        };
        let text = format!("{config:?}");
        assert!(
            !text.contains("ch-password-value") && text.contains("<redacted>"),
            "{text}"
        );
    }
}

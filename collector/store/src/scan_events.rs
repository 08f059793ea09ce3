//! The `scan_events` table: one row per report of a scan episode.

use crate::StoreError;

/// A stored scan report. Field order matches the table's column order
/// (required on the portable path, where rows are plain RowBinary).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct ScanEventRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: uuid::Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub episode_id: uuid::Uuid,
    /// From the agent's verified certificate, never from the payload.
    pub agent_id: String,
    /// Collector clock, Unix seconds.
    pub received_at: u32,
    /// Agent clock, Unix seconds.
    pub created_at: u32,
    pub state: crate::EpisodeState,
    /// See [`crate::ip`].
    pub scanner: [u8; 16],
    pub target: [u8; 16],
    pub scan_types: Vec<String>,
    pub ports_probed: u32,
    pub port_sample: Vec<u16>,
    pub open_ports: Vec<u16>,
    pub probes: u64,
    pub first_seen: u32,
    pub last_seen: u32,
    pub confidence: u8,
    pub explanation: String,
    /// Decoy sources probing alongside the scanner (see [`crate::ip`]).
    pub companions: Vec<[u8; 16]>,
    /// 1 if the probes arrived as IP fragments.
    pub fragmented: u8,
    /// Open ports the scan reached that the PC flags as risky exposures.
    pub exposed_ports: Vec<u16>,
    /// The agent's judgement of the episode: 1 low, 2 medium, 3 high,
    /// 4 critical.
    pub severity: u8,
    /// 1 if the scanner completed a TCP handshake with the PC: its address
    /// is not forged.
    pub handshake_verified: u8,
}

pub(crate) async fn insert(
    client: &clickhouse::Client,
    rows: &[ScanEventRow],
) -> Result<(), StoreError> {
    crate::insert_all(client, "scan_events", rows).await
}

/// Scanners that completed a TCP handshake with a PC in an episode seen
/// at or after `since_unix` (see [`ScanEventRow::handshake_verified`]).
pub(crate) async fn verified_scanners(
    client: &clickhouse::Client,
    since_unix: u32,
) -> Result<Vec<std::net::IpAddr>, StoreError> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Scanner {
        scanner: [u8; 16],
    }
    let rows = client
        .query(
            "SELECT DISTINCT scanner FROM scan_events \
             WHERE handshake_verified = 1 AND last_seen >= toDateTime(?)",
        )
        .bind(since_unix)
        .fetch_all::<Scanner>()
        .await
        .map_err(StoreError::query("select verified scanners"))?;
    Ok(rows
        .into_iter()
        .map(|row| crate::ip::from_fixed16(row.scanner))
        .collect())
}

pub(crate) async fn recent(
    client: &clickhouse::Client,
    since_unix: u32,
    limit: u64,
) -> Result<Vec<ScanEventRow>, StoreError> {
    crate::recent_rows(client, "scan_events", since_unix, limit).await
}

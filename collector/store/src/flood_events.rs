//! The `flood_events` table: one row per report of a flood against one
//! address of a PC.

use crate::StoreError;

/// A stored flood report. Field order matches the table's columns.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct FloodEventRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: uuid::Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub episode_id: uuid::Uuid,
    /// From the agent's verified certificate, never from the payload.
    pub agent_id: String,
    pub received_at: u32,
    pub created_at: u32,
    pub state: crate::EpisodeState,
    pub target: [u8; 16],
    pub ports: Vec<u16>,
    /// New source addresses seen while the flood lasted.
    pub sources: u64,
    pub first_seen: u32,
    pub last_seen: u32,
    pub explanation: String,
}

pub(crate) async fn insert(
    client: &clickhouse::Client,
    rows: &[FloodEventRow],
) -> Result<(), StoreError> {
    crate::insert_all(client, "flood_events", rows).await
}

pub(crate) async fn recent(
    client: &clickhouse::Client,
    since_unix: u32,
    limit: u64,
) -> Result<Vec<FloodEventRow>, StoreError> {
    crate::recent_rows(client, "flood_events", since_unix, limit).await
}

//! The `policies` table: detection policy per agent group, versioned.
//! Every collector reads it, so a change made through any collector (or
//! the console) reaches agents connected to all of them.

use crate::StoreError;

/// One version of a group's policy. Field order matches the columns.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct PolicyRow {
    pub policy_group: String,
    /// Increases by one per change; agents report it in heartbeats.
    pub version: u64,
    /// 0 keeps each agent's configured value.
    pub scan_min_ports: u32,
    /// 0 keeps each agent's configured value.
    pub episode_idle_seconds: u32,
    /// Sources agents never report (see [`crate::ip`]).
    pub allowlisted_sources: Vec<[u8; 16]>,
    pub updated_at: u32,
    /// Who made the change (the OS user for the CLI).
    pub updated_by: String,
}

pub(crate) async fn latest(
    client: &clickhouse::Client,
    group: &str,
) -> Result<Option<PolicyRow>, StoreError> {
    client
        .query(
            "SELECT ?fields FROM policies WHERE policy_group = ? \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(group)
        .fetch_optional::<PolicyRow>()
        .await
        .map_err(StoreError::query("select policies"))
}

pub(crate) async fn insert(client: &clickhouse::Client, row: &PolicyRow) -> Result<(), StoreError> {
    crate::insert_all(client, "policies", std::slice::from_ref(row)).await
}

/// The correlation allowlist in force (sources never made into campaigns,
/// alerted or published), as the collector's config has it, so the
/// console can show it. One row per change; the newest wins.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct AllowlistRow {
    /// Networks in CIDR notation.
    pub networks: Vec<String>,
    pub updated_at: u32,
}

pub(crate) async fn insert_allowlist(
    client: &clickhouse::Client,
    row: &AllowlistRow,
) -> Result<(), StoreError> {
    crate::insert_all(client, "correlation_allowlist", std::slice::from_ref(row)).await
}

pub(crate) async fn allowlist(
    client: &clickhouse::Client,
) -> Result<Option<AllowlistRow>, StoreError> {
    client
        .query("SELECT ?fields FROM correlation_allowlist ORDER BY updated_at DESC LIMIT 1")
        .fetch_optional::<AllowlistRow>()
        .await
        .map_err(StoreError::query("select the allowlist"))
}

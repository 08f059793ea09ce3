//! The `agent_heartbeats` table and the agent health derived from it.

use crate::StoreError;

/// One heartbeat as stored. Field order matches the columns.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatRow {
    /// From the agent's verified certificate.
    pub agent_id: String,
    /// Collector clock, Unix seconds.
    pub received_at: u32,
    pub agent_version: String,
    /// What the agent says its hostname is (not used for attribution).
    pub claimed_hostname: String,
    pub packets_seen: u64,
    pub kernel_drops: u64,
    pub pending_events: u64,
    pub spool_bytes: u64,
    pub events_dropped: u64,
    pub dropped_spool_cap: u64,
    pub dropped_spool_error: u64,
    pub dropped_invalid: u64,
    pub dropped_queue_full: u64,
    pub policy_version: u64,
    pub uptime_seconds: u64,
    /// Events the agent produced since it started (migration 5).
    pub events_created: u64,
}

/// The newest heartbeat of one agent.
///
/// Each `argMax` column has an alias of its own (`newest_…`): current
/// servers name an unaliased column by its expression, which row
/// validation refuses, and an alias equal to the column name would turn the
/// aggregate's argument into itself on older servers.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize)]
pub struct AgentHealthRow {
    pub agent_id: String,
    pub last_seen: u32,
    #[serde(rename = "newest_agent_version")]
    pub agent_version: String,
    #[serde(rename = "newest_claimed_hostname")]
    pub claimed_hostname: String,
    #[serde(rename = "newest_pending_events")]
    pub pending_events: u64,
    #[serde(rename = "newest_events_dropped")]
    pub events_dropped: u64,
    #[serde(rename = "newest_kernel_drops")]
    pub kernel_drops: u64,
    #[serde(rename = "newest_policy_version")]
    pub policy_version: u64,
    #[serde(rename = "newest_events_created")]
    pub events_created: u64,
}

/// Whether an agent is reporting, from the age of its last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Heard from within three default heartbeat periods (90 s).
    Online,
    /// Silent for up to 10 minutes: a reboot, a network blip, a sleeping PC.
    Stale,
    /// Silent for longer.
    Offline,
}

impl Health {
    /// Pure: the health of an agent last heard from `age_seconds` ago.
    pub fn from_age(age_seconds: u32) -> Self {
        match age_seconds {
            0..=90 => Self::Online,
            91..=600 => Self::Stale,
            _ => Self::Offline,
        }
    }
}

pub(crate) async fn insert(
    client: &clickhouse::Client,
    rows: &[HeartbeatRow],
) -> Result<(), StoreError> {
    crate::insert_all(client, "agent_heartbeats", rows).await
}

pub(crate) async fn latest(
    client: &clickhouse::Client,
    since_unix: u32,
) -> Result<Vec<AgentHealthRow>, StoreError> {
    client
        .query(
            "SELECT agent_id, max(received_at) AS last_seen, \
             argMax(agent_version, received_at) AS newest_agent_version, \
             argMax(claimed_hostname, received_at) AS newest_claimed_hostname, \
             argMax(pending_events, received_at) AS newest_pending_events, \
             argMax(events_dropped, received_at) AS newest_events_dropped, \
             argMax(kernel_drops, received_at) AS newest_kernel_drops, \
             argMax(policy_version, received_at) AS newest_policy_version, \
             argMax(events_created, received_at) AS newest_events_created \
             FROM agent_heartbeats WHERE received_at >= toDateTime(?) \
             GROUP BY agent_id ORDER BY agent_id",
        )
        .bind(since_unix)
        .fetch_all::<AgentHealthRow>()
        .await
        .map_err(StoreError::query("select agent_heartbeats"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_age_of_the_last_heartbeat() {
        assert_eq!(Health::from_age(0), Health::Online);
        assert_eq!(Health::from_age(90), Health::Online);
        assert_eq!(Health::from_age(91), Health::Stale);
        assert_eq!(Health::from_age(600), Health::Stale);
        assert_eq!(Health::from_age(601), Health::Offline);
    }
}

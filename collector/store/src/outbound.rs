//! Outbound traffic of campus PCs: `flow_minutes` (bytes per process and
//! destination per minute), `outbound_anomalies` (uploads, outbound scans,
//! SMTP fan-out, failed connections) and `listening_ports` (what each PC
//! exposes), with the queries that read them.

use crate::StoreError;

/// One minute of one process's traffic with one destination. Field order
/// matches the columns.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct FlowMinuteRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: uuid::Uuid,
    pub agent_id: String,
    pub received_at: u32,
    pub minute: u32,
    /// 0 and empty names when the process was not found.
    pub pid: u32,
    pub process: String,
    pub exe: String,
    pub user_name: String,
    pub local_ip: [u8; 16],
    pub remote: [u8; 16],
    pub remote_port: u16,
    /// 6 or 17; 0 for the row summing flows the agent did not list.
    pub protocol: u8,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    pub connections: u32,
}

/// One report of an outbound anomaly.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct OutboundAnomalyRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: uuid::Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub episode_id: uuid::Uuid,
    pub agent_id: String,
    pub received_at: u32,
    pub created_at: u32,
    pub state: crate::EpisodeState,
    pub kind: crate::AnomalyKind,
    pub pid: u32,
    pub process: String,
    pub exe: String,
    pub user_name: String,
    /// All zeros when no single host is concerned.
    pub remote: [u8; 16],
    pub remote_port: u16,
    pub hosts: u32,
    pub ports: u32,
    pub bytes_out: u64,
    pub baseline_bytes_per_hour: u64,
    pub attempts: u32,
    pub failed: u32,
    pub first_seen: u32,
    pub last_seen: u32,
    pub host_sample: Vec<[u8; 16]>,
    pub port_sample: Vec<u16>,
    pub explanation: String,
}

/// One listening port of one inventory report. A report with nothing
/// listening is one row with protocol and port 0.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct ListeningPortRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: uuid::Uuid,
    pub agent_id: String,
    pub received_at: u32,
    pub created_at: u32,
    pub protocol: u8,
    pub local_ip: [u8; 16],
    pub port: u16,
    pub pid: u32,
    pub process: String,
    pub exe: String,
    pub user_name: String,
    /// Why the exposure is risky; empty if it is not.
    pub risk: String,
}

/// Bytes a process (or destination) sent and received over a period.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize, serde::Serialize)]
pub struct TalkerRow {
    /// Process name, or destination address and port, depending on the
    /// query.
    pub name: String,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub pcs: u64,
}

/// The processes of `agent_id` that sent most since `since_unix`.
pub(crate) async fn top_talkers(
    client: &clickhouse::Client,
    agent_id: &str,
    since_unix: u32,
    limit: u64,
) -> Result<Vec<TalkerRow>, StoreError> {
    client
        .query(
            "SELECT if(process = '', '(unknown)', process) AS name, \
                    sum(bytes_out) AS bytes_out, sum(bytes_in) AS bytes_in, \
                    toUInt64(uniqExact(agent_id)) AS pcs \
             FROM flow_minutes FINAL \
             WHERE agent_id = ? AND minute >= toDateTime(?) \
             GROUP BY name ORDER BY bytes_out DESC LIMIT ?",
        )
        .bind(agent_id)
        .bind(since_unix)
        .bind(limit)
        .fetch_all::<TalkerRow>()
        .await
        .map_err(StoreError::query("select top talkers"))
}

/// The remote addresses and ports that campus PCs sent most to since
/// `since_unix`, as hex of the address and the port ("hex:port"); the
/// caller formats them.
pub(crate) async fn top_destinations(
    client: &clickhouse::Client,
    since_unix: u32,
    limit: u64,
) -> Result<Vec<TalkerRow>, StoreError> {
    client
        .query(
            "SELECT concat(hex(remote), ':', toString(remote_port)) AS name, \
                    sum(bytes_out) AS bytes_out, sum(bytes_in) AS bytes_in, \
                    toUInt64(uniqExact(agent_id)) AS pcs \
             FROM flow_minutes FINAL \
             WHERE minute >= toDateTime(?) AND protocol != 0 \
             GROUP BY name ORDER BY bytes_out DESC LIMIT ?",
        )
        .bind(since_unix)
        .bind(limit)
        .fetch_all::<TalkerRow>()
        .await
        .map_err(StoreError::query("select top destinations"))
}

/// Outbound anomalies reported since `since_unix`, newest first, each
/// event once.
pub(crate) async fn anomalies(
    client: &clickhouse::Client,
    since_unix: u32,
    limit: u64,
) -> Result<Vec<OutboundAnomalyRow>, StoreError> {
    crate::recent_rows(client, "outbound_anomalies", since_unix, limit).await
}

/// Each PC's newest inventory: the rows of its latest listening-ports
/// report.
/// The newest inventory of every PC, or of `agent_id` only.
pub(crate) async fn listening(
    client: &clickhouse::Client,
    agent_id: Option<&str>,
) -> Result<Vec<ListeningPortRow>, StoreError> {
    let agent = agent_id.unwrap_or_default();
    client
        .query(
            "SELECT ?fields FROM listening_ports FINAL \
             WHERE (agent_id, event_id) IN ( \
                 SELECT agent_id, argMax(event_id, created_at) FROM listening_ports \
                 WHERE ? = '' OR agent_id = ? GROUP BY agent_id) \
               AND protocol != 0 \
             ORDER BY agent_id, protocol, port",
        )
        .bind(agent)
        .bind(agent)
        .fetch_all::<ListeningPortRow>()
        .await
        .map_err(StoreError::query("select listening ports"))
}

//! The `knock_events` table: one row per knock, a single try at a closed
//! port of a PC by a source that did not go on to scan that PC. The
//! correlator reads them with scan events to find one-port sweeps and
//! botnets that no single PC can call a scan.

/// A stored knock. Field order matches the table's columns.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct KnockEventRow {
    /// The agent's event that listed this knock; one event lists many.
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: uuid::Uuid,
    /// From the agent's verified certificate, never from the payload.
    pub agent_id: String,
    /// Collector clock, Unix seconds.
    pub received_at: u32,
    /// See [`crate::ip`].
    pub source: [u8; 16],
    pub target: [u8; 16],
    pub port: u16,
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    /// 1 if the PC refused the try, 0 if it went unanswered.
    pub refused: u8,
    pub probes: u32,
    pub first_seen: u32,
    pub last_seen: u32,
    /// The event's plain-language explanation, shared by every knock row
    /// of the event: one copy in memory however many knocks it lists.
    pub explanation: std::sync::Arc<str>,
}

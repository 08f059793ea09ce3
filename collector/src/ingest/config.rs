//! The `[ingest]` table: the shared INSERTs' limits and each agent's rate
//! and in-flight limits.

use doorwatch_process::config::ConfigError;
use serde::Deserialize;

/// How batches are written and how much load one agent, and all agents
/// together, may put on the collector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Rows (both event tables) after which a batched INSERT is ended.
    pub insert_max_rows: u64,
    /// Uncompressed MiB after which a batched INSERT is ended (per table).
    pub insert_max_mib: u64,
    /// Milliseconds after which a batched INSERT is ended anyway while
    /// ingest is quiet; this is most of the acknowledgement latency.
    pub insert_period_ms: u64,
    /// Longest insert period, used while ingest is busy (over 25,000
    /// events/s): fewer, larger INSERTs, less ClickHouse CPU per event.
    pub insert_period_max_ms: u64,
    /// Seconds one INSERT may take before it counts as failed.
    pub insert_timeout_seconds: u64,
    /// MiB of batches received but not yet stored, across all agents.
    /// When it is used up, agents are throttled.
    pub in_flight_mib: u64,
    /// Batches of one agent waiting for storage at once.
    pub agent_in_flight_batches: usize,
    /// Events per second one agent may send, sustained.
    pub agent_events_per_second: u32,
    /// Events one agent may send at once above that rate.
    pub agent_burst_events: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let insert = doorwatch_store::InsertLimits::default();
        let agent = crate::ingest::AgentLimits::default();
        Self {
            insert_max_rows: insert.max_rows,
            insert_max_mib: insert.max_bytes >> 20,
            insert_period_ms: insert.period.as_millis() as u64,
            insert_period_max_ms: 1000,
            insert_timeout_seconds: insert.timeout.as_secs(),
            in_flight_mib: 256,
            agent_in_flight_batches: agent.in_flight_batches,
            agent_events_per_second: agent.events_per_second as u32,
            agent_burst_events: agent.burst_events as u32,
        }
    }
}

impl IngestConfig {
    pub(crate) fn validate(
        &self,
    ) -> Result<
        (
            crate::ingest::writer::WriterLimits,
            crate::ingest::AgentLimits,
        ),
        ConfigError,
    > {
        let range = doorwatch_process::config::in_range;
        range(
            "ingest.insert_max_rows",
            self.insert_max_rows,
            1,
            10_000_000,
        )?;
        range("ingest.insert_max_mib", self.insert_max_mib, 1, 1024)?;
        range("ingest.insert_period_ms", self.insert_period_ms, 10, 60_000)?;
        range(
            "ingest.insert_period_max_ms",
            self.insert_period_max_ms,
            self.insert_period_ms,
            60_000,
        )?;
        range(
            "ingest.insert_timeout_seconds",
            self.insert_timeout_seconds,
            1,
            600,
        )?;
        range("ingest.in_flight_mib", self.in_flight_mib, 8, 65_536)?;
        range(
            "ingest.agent_in_flight_batches",
            self.agent_in_flight_batches as u64,
            1,
            1024,
        )?;
        range(
            "ingest.agent_events_per_second",
            self.agent_events_per_second.into(),
            1,
            10_000_000,
        )?;
        // A full batch must fit in the burst, or it could never be sent.
        range(
            "ingest.agent_burst_events",
            self.agent_burst_events.into(),
            doorwatch_proto::MAX_EVENTS_PER_BATCH as u64,
            100_000_000,
        )?;
        let writer = crate::ingest::writer::WriterLimits {
            insert: doorwatch_store::InsertLimits {
                max_rows: self.insert_max_rows,
                max_bytes: self.insert_max_mib << 20,
                period: std::time::Duration::from_millis(self.insert_period_ms),
                timeout: std::time::Duration::from_secs(self.insert_timeout_seconds),
            },
            period_max: std::time::Duration::from_millis(self.insert_period_max_ms),
            in_flight_bytes: usize::try_from(self.in_flight_mib << 20).unwrap_or(usize::MAX),
        };
        let agent = crate::ingest::AgentLimits {
            in_flight_batches: self.agent_in_flight_batches,
            events_per_second: self.agent_events_per_second.into(),
            burst_events: self.agent_burst_events.into(),
        };
        Ok((writer, agent))
    }
}

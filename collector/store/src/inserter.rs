//! Batched event writes: the rows of many agents' batches go into a few
//! large INSERTs through the `clickhouse` crate's `Inserter`, which ends an
//! INSERT when a row, byte or time limit is reached.
//!
//! The caller learns when rows are stored: when [`EventInserter::end`]
//! returns `Ok`, and only then, may the batches written into it be
//! acknowledged. [`EventInserter::due`] says when a limit is reached, so
//! the caller can end a full inserter in the background and go on filling
//! a fresh one. If anything fails, every row written into the inserter is
//! lost to this INSERT and the inserter must be dropped; the agents resend
//! and event ids collapse the repeats.

use std::time::Duration;

use clickhouse::inserter::Inserter;

use crate::{
    FloodEventRow, FlowMinuteRow, KnockEventRow, ListeningPortRow, OutboundAnomalyRow,
    ScanEventRow, StoreError,
};

/// When an INSERT is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertLimits {
    /// Rows (all tables together) after which the INSERTs are ended.
    pub max_rows: u64,
    /// Uncompressed bytes (all tables together) after which they are ended.
    pub max_bytes: u64,
    /// Longest time rows wait before their INSERT is ended.
    pub period: Duration,
    /// Longest time sending or ending one INSERT may take.
    pub timeout: Duration,
}

impl Default for InsertLimits {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_bytes: 32 << 20,
            period: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The rows of one or more agent batches, one list per table.
#[derive(Debug, Default, PartialEq)]
pub struct EventRows {
    pub scans: Vec<ScanEventRow>,
    pub floods: Vec<FloodEventRow>,
    pub knocks: Vec<KnockEventRow>,
    pub flows: Vec<FlowMinuteRow>,
    pub anomalies: Vec<OutboundAnomalyRow>,
    pub listening: Vec<ListeningPortRow>,
}

/// Open INSERTs into the event tables.
pub struct EventInserter {
    scans: Inserter<ScanEventRow>,
    floods: Inserter<FloodEventRow>,
    knocks: Inserter<KnockEventRow>,
    flows: Inserter<FlowMinuteRow>,
    anomalies: Inserter<OutboundAnomalyRow>,
    listening: Inserter<ListeningPortRow>,
    limits: InsertLimits,
}

impl std::fmt::Debug for EventInserter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventInserter")
            .field("pending_rows", &self.pending_rows())
            .finish()
    }
}

/// Writes every row of `rows` into `inserter`.
async fn write_all<T>(inserter: &mut Inserter<T>, rows: &[T]) -> Result<(), StoreError>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    for row in rows {
        inserter
            .write(row)
            .await
            .map_err(StoreError::query("batched insert"))?;
    }
    Ok(())
}

impl EventInserter {
    pub(crate) fn new(client: &clickhouse::Client, limits: InsertLimits) -> Self {
        Self {
            scans: configure(client.inserter("scan_events"), limits),
            floods: configure(client.inserter("flood_events"), limits),
            knocks: configure(client.inserter("knock_events"), limits),
            flows: configure(client.inserter("flow_minutes"), limits),
            anomalies: configure(client.inserter("outbound_anomalies"), limits),
            listening: configure(client.inserter("listening_ports"), limits),
            limits,
        }
    }

    /// Adds one batch's rows to the open INSERTs. Nothing is stored until a
    /// commit ends them.
    pub async fn write(&mut self, rows: &EventRows) -> Result<(), StoreError> {
        write_all(&mut self.scans, &rows.scans).await?;
        write_all(&mut self.floods, &rows.floods).await?;
        write_all(&mut self.knocks, &rows.knocks).await?;
        write_all(&mut self.flows, &rows.flows).await?;
        write_all(&mut self.anomalies, &rows.anomalies).await?;
        write_all(&mut self.listening, &rows.listening).await
    }

    /// (rows, bytes) written but not yet stored, per table.
    fn pending(&self) -> [(u64, u64); 6] {
        [
            (self.scans.pending().rows, self.scans.pending().bytes),
            (self.floods.pending().rows, self.floods.pending().bytes),
            (self.knocks.pending().rows, self.knocks.pending().bytes),
            (self.flows.pending().rows, self.flows.pending().bytes),
            (
                self.anomalies.pending().rows,
                self.anomalies.pending().bytes,
            ),
            (
                self.listening.pending().rows,
                self.listening.pending().bytes,
            ),
        ]
    }

    /// Rows written but not yet stored.
    pub fn pending_rows(&self) -> u64 {
        self.pending().iter().map(|p| p.0).sum()
    }

    /// Time until the period limit ends the open INSERTs.
    pub fn time_left(&mut self) -> Option<Duration> {
        [
            self.scans.time_left(),
            self.floods.time_left(),
            self.knocks.time_left(),
            self.flows.time_left(),
            self.anomalies.time_left(),
            self.listening.time_left(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether a row, byte or period limit is reached (all tables together).
    pub fn due(&mut self) -> bool {
        let pending = self.pending();
        pending.iter().map(|p| p.0).sum::<u64>() >= self.limits.max_rows
            || pending.iter().map(|p| p.1).sum::<u64>() >= self.limits.max_bytes
            || self.time_left().is_some_and(|left| left.is_zero())
    }

    /// Ends the INSERTs. Returns the number of rows stored; on `Ok` every
    /// row written is in ClickHouse.
    pub async fn end(self) -> Result<u64, StoreError> {
        let step = || StoreError::query("batched insert end");
        let mut rows = self.scans.end().await.map_err(step())?.rows;
        rows += self.floods.end().await.map_err(step())?.rows;
        rows += self.knocks.end().await.map_err(step())?.rows;
        rows += self.flows.end().await.map_err(step())?.rows;
        rows += self.anomalies.end().await.map_err(step())?.rows;
        rows += self.listening.end().await.map_err(step())?.rows;
        Ok(rows)
    }
}

fn configure<T: clickhouse::Row>(inserter: Inserter<T>, limits: InsertLimits) -> Inserter<T> {
    inserter
        .with_max_rows(limits.max_rows)
        .with_max_bytes(limits.max_bytes)
        .with_period(Some(limits.period))
        .with_period_bias(0.1)
        .with_timeouts(Some(limits.timeout), Some(limits.timeout))
}

//! Batched event writes: the rows of many agents' batches go into a few
//! large INSERTs through the `clickhouse` crate's `Inserter`, which ends an
//! INSERT when a row, byte or time limit is reached.
//!
//! The caller learns when rows are stored: [`EventInserter::commit`] says
//! whether it ended the INSERTs, and only then may the batches written so
//! far be acknowledged. If anything fails, every row written since the
//! last commit is lost to this INSERT and the inserter must be dropped;
//! the agents resend and event ids collapse the repeats.

use std::time::Duration;

use clickhouse::inserter::Inserter;

use crate::{FloodEventRow, ScanEventRow, StoreError};

/// When an INSERT is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertLimits {
    /// Rows per INSERT (per table).
    pub max_rows: u64,
    /// Uncompressed bytes per INSERT (per table).
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

/// Open INSERTs into `scan_events` and `flood_events`.
pub struct EventInserter {
    scans: Inserter<ScanEventRow>,
    floods: Inserter<FloodEventRow>,
}

impl std::fmt::Debug for EventInserter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventInserter")
            .field("pending_rows", &self.pending_rows())
            .finish()
    }
}

impl EventInserter {
    pub(crate) fn new(client: &clickhouse::Client, limits: InsertLimits) -> Self {
        Self {
            scans: configure(client.inserter("scan_events"), limits),
            floods: configure(client.inserter("flood_events"), limits),
        }
    }

    /// Adds one batch's rows to the open INSERTs. Nothing is stored until a
    /// commit ends them.
    pub async fn write(
        &mut self,
        scans: &[ScanEventRow],
        floods: &[FloodEventRow],
    ) -> Result<(), StoreError> {
        let step = "batched insert";
        for row in scans {
            self.scans
                .write(row)
                .await
                .map_err(StoreError::query(step))?;
        }
        for row in floods {
            self.floods
                .write(row)
                .await
                .map_err(StoreError::query(step))?;
        }
        Ok(())
    }

    /// Rows written but not yet stored.
    pub fn pending_rows(&self) -> u64 {
        self.scans.pending().rows + self.floods.pending().rows
    }

    /// Time until the period limit ends the open INSERTs.
    pub fn time_left(&mut self) -> Option<Duration> {
        match (self.scans.time_left(), self.floods.time_left()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends the INSERTs if a limit is reached. Returns the number of rows
    /// stored: when it is not zero, every row written so far is in
    /// ClickHouse (both tables are ended together).
    pub async fn commit(&mut self) -> Result<u64, StoreError> {
        let step = "batched insert commit";
        let pending = self.pending_rows();
        let scans = self.scans.commit().await.map_err(StoreError::query(step))?;
        let floods = self
            .floods
            .commit()
            .await
            .map_err(StoreError::query(step))?;
        if scans.rows == 0 && floods.rows == 0 {
            return Ok(0);
        }
        // One table reached a limit: end the other too, so that "committed"
        // covers every row written so far.
        self.force_commit().await?;
        Ok(pending)
    }

    /// Ends the INSERTs now. Returns the number of rows stored.
    pub async fn force_commit(&mut self) -> Result<u64, StoreError> {
        let step = "batched insert commit";
        let scans = self
            .scans
            .force_commit()
            .await
            .map_err(StoreError::query(step))?;
        let floods = self
            .floods
            .force_commit()
            .await
            .map_err(StoreError::query(step))?;
        Ok(scans.rows + floods.rows)
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

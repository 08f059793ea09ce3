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

use crate::{FloodEventRow, KnockEventRow, ScanEventRow, StoreError};

/// When an INSERT is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertLimits {
    /// Rows (both tables together) after which the INSERTs are ended.
    pub max_rows: u64,
    /// Uncompressed bytes (both tables together) after which they are ended.
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

/// Open INSERTs into `scan_events`, `flood_events` and `knock_events`.
pub struct EventInserter {
    scans: Inserter<ScanEventRow>,
    floods: Inserter<FloodEventRow>,
    knocks: Inserter<KnockEventRow>,
    limits: InsertLimits,
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
            knocks: configure(client.inserter("knock_events"), limits),
            limits,
        }
    }

    /// Adds one batch's rows to the open INSERTs. Nothing is stored until a
    /// commit ends them.
    pub async fn write(
        &mut self,
        scans: &[ScanEventRow],
        floods: &[FloodEventRow],
        knocks: &[KnockEventRow],
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
        for row in knocks {
            self.knocks
                .write(row)
                .await
                .map_err(StoreError::query(step))?;
        }
        Ok(())
    }

    /// Rows written but not yet stored.
    pub fn pending_rows(&self) -> u64 {
        self.scans.pending().rows + self.floods.pending().rows + self.knocks.pending().rows
    }

    /// Time until the period limit ends the open INSERTs.
    pub fn time_left(&mut self) -> Option<Duration> {
        [
            self.scans.time_left(),
            self.floods.time_left(),
            self.knocks.time_left(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether a row, byte or period limit is reached (either table).
    pub fn due(&mut self) -> bool {
        let pending = [
            self.scans.pending(),
            self.floods.pending(),
            self.knocks.pending(),
        ];
        pending.iter().map(|p| p.rows).sum::<u64>() >= self.limits.max_rows
            || pending.iter().map(|p| p.bytes).sum::<u64>() >= self.limits.max_bytes
            || self.time_left().is_some_and(|left| left.is_zero())
    }

    /// Ends the INSERTs. Returns the number of rows stored; on `Ok` every
    /// row written is in ClickHouse.
    pub async fn end(self) -> Result<u64, StoreError> {
        let step = "batched insert end";
        let scans = self.scans.end().await.map_err(StoreError::query(step))?;
        let floods = self.floods.end().await.map_err(StoreError::query(step))?;
        let knocks = self.knocks.end().await.map_err(StoreError::query(step))?;
        Ok(scans.rows + floods.rows + knocks.rows)
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

//! The batch writer: one task owns the batched INSERTs (see
//! [`doorwatch_store::EventInserter`]). Agent sessions hand it validated
//! rows and get a [`Receipt`] that resolves once those rows are in
//! ClickHouse; only then may a session acknowledge the batch.
//!
//! Memory is bounded. Before handing over a batch, a session takes [`Room`]
//! for it from one byte budget shared by all agents (the in-flight limit).
//! The room is given back when the batch's INSERT has ended, stored or
//! failed. When the budget is used up, sessions wait, stop reading their
//! streams, and HTTP/2 flow control slows the agents down.
//!
//! If an INSERT fails, every batch in it is reported failed; the sessions
//! end their streams with "retry later", the agents resend, and event ids
//! collapse the rows that had reached ClickHouse anyway.

use doorwatch_process::shutdown;
use std::sync::Arc;
use std::time::Duration;

use doorwatch_store::{InsertLimits, Store, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use doorwatch_store::EventRows;

/// Batches queued for the writer task before sessions wait (the byte
/// budget is the real bound; this only keeps the queue itself small).
const QUEUE: usize = 1024;

/// Whether a batch's INSERT stored it.
pub type Outcome = Result<(), Arc<StoreError>>;

/// Resolves when a batch's rows are stored (`Ok`) or their INSERT failed.
pub type Receipt = oneshot::Receiver<Outcome>;

/// A batch's share of the in-flight byte budget.
#[derive(Debug)]
pub struct Room {
    _permit: OwnedSemaphorePermit,
}

/// The writer's limits.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// `insert.period` is the shortest insert period (see [`Period`]).
    pub insert: InsertLimits,
    /// The longest insert period, used while ingest is busy.
    pub period_max: Duration,
    /// Encoded batch bytes received but not yet stored, across all agents.
    pub in_flight_bytes: usize,
}

struct Job {
    rows: EventRows,
    room: Room,
    done: oneshot::Sender<Outcome>,
}

/// Hands batches to the writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
}

impl Writer {
    /// Starts the writer task. It ends the open INSERTs at once when
    /// `shutdown` is set, and returns when every `Writer` clone is dropped
    /// and the last rows are stored.
    pub fn start(
        store: Store,
        limits: WriterLimits,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let budget_bytes = limits.in_flight_bytes.max(1);
        let writer = Self {
            jobs,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
        };
        let task = tokio::spawn(run(store, limits, queue, shutdown));
        (writer, task)
    }

    /// Room for a batch of `bytes` if the budget has it now.
    pub fn try_room(&self, bytes: usize) -> Option<Room> {
        let permits = self.permits(bytes);
        self.budget
            .clone()
            .try_acquire_many_owned(permits)
            .ok()
            .map(|permit| Room { _permit: permit })
    }

    /// Waits for room for a batch of `bytes`.
    pub async fn room(&self, bytes: usize) -> Option<Room> {
        let permits = self.permits(bytes);
        self.budget
            .clone()
            .acquire_many_owned(permits)
            .await
            .ok()
            .map(|permit| Room { _permit: permit })
    }

    /// A batch larger than the whole budget still gets through, alone.
    fn permits(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.clamp(1, self.budget_bytes)).unwrap_or(u32::MAX)
    }

    /// Queues `rows` for storage. `None` if the writer has stopped.
    pub async fn submit(&self, rows: EventRows, room: Room) -> Option<Receipt> {
        let (done, receipt) = oneshot::channel();
        self.jobs.send(Job { rows, room, done }).await.ok()?;
        Some(receipt)
    }

    /// Bytes of the in-flight budget in use.
    pub fn in_flight_bytes(&self) -> usize {
        self.budget_bytes - self.budget.available_permits()
    }
}

/// Batches written into the open INSERTs, waiting for them to end.
#[derive(Default)]
struct Waiting {
    batches: Vec<(oneshot::Sender<Outcome>, Room)>,
}

impl Waiting {
    fn resolve(self, outcome: Outcome) {
        for (done, room) in self.batches {
            // A session that went away no longer needs the answer.
            let _ = done.send(outcome.clone());
            drop(room);
        }
    }
}

/// INSERTs being ended at once: one ends in the background while the
/// next fills.
const ENDING: u32 = 2;
/// While shutting down, rows wait at most this long for company: the
/// sessions' last batches go in one INSERT rather than one each (many
/// tiny INSERTs make ClickHouse delay them all).
const STOPPING_PERIOD: Duration = Duration::from_millis(20);

/// Events per second above which ingest counts as busy.
const BUSY_EVENTS_PER_SECOND: f64 = 25_000.0;

/// The insert period, adapted to load. While ingest is quiet it is the
/// configured minimum: fresh data and a low ack latency. While it is busy
/// it doubles, up to the maximum: fewer, larger INSERTs cost ClickHouse
/// about half the CPU per event at 1 s than at 200 ms (BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub struct Period {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Period {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The period to use next, after an INSERT of `rows` that collected
    /// rows for `elapsed`.
    pub fn after_insert(&mut self, rows: u64, elapsed: Duration) -> Duration {
        let rate = rows as f64 / elapsed.as_secs_f64().max(0.001);
        if rate >= BUSY_EVENTS_PER_SECOND {
            self.current = (self.current * 2).min(self.max);
        } else if rate < BUSY_EVENTS_PER_SECOND / 2.0 {
            self.current = (self.current / 2).max(self.min);
        }
        self.current
    }

    pub fn current(&self) -> Duration {
        self.current
    }
}

async fn run(
    store: Store,
    writer: WriterLimits,
    mut queue: mpsc::Receiver<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut period = Period::new(writer.insert.period, writer.period_max);
    let mut limits = writer.insert;
    let mut collecting_since = tokio::time::Instant::now();
    let ending = Arc::new(Semaphore::new(ENDING as usize));
    let mut inserter = store.event_inserter(limits);
    let mut waiting = Waiting::default();
    let mut stopping = *shutdown.borrow();
    // When the oldest waiting batch was written.
    let mut oldest: Option<tokio::time::Instant> = None;
    loop {
        let wake = if stopping {
            oldest.map_or(STOPPING_PERIOD, |at| {
                STOPPING_PERIOD.saturating_sub(at.elapsed())
            })
        } else {
            inserter.time_left().unwrap_or(limits.period)
        };
        let mut closed = false;
        tokio::select! {
            job = queue.recv() => match job {
                Some(job) => {
                    let written = inserter.write(&job.rows).await;
                    waiting.batches.push((job.done, job.room));
                    oldest.get_or_insert_with(tokio::time::Instant::now);
                    if let Err(e) = written {
                        fail(std::mem::take(&mut waiting), e);
                        oldest = None;
                        inserter = store.event_inserter(limits);
                        continue;
                    }
                }
                None => closed = true,
            },
            _ = tokio::time::sleep(wake), if !waiting.batches.is_empty() => {}
            _ = shutdown::stop_requested(&mut shutdown), if !stopping => stopping = true,
        }
        let stop_due = stopping && oldest.is_some_and(|at| at.elapsed() >= STOPPING_PERIOD);
        if !waiting.batches.is_empty() && (closed || stop_due || inserter.due()) {
            oldest = None;
            let rows = inserter.pending_rows();
            limits.period = period.after_insert(rows, collecting_since.elapsed());
            collecting_since = tokio::time::Instant::now();
            let full = std::mem::replace(&mut inserter, store.event_inserter(limits));
            let batches = std::mem::take(&mut waiting);
            let Ok(permit) = ending.clone().acquire_owned().await else {
                return;
            };
            tokio::spawn(async move {
                let count = batches.batches.len();
                match full.end().await {
                    Ok(rows) => {
                        tracing::debug!(rows, batches = count, "batched insert stored");
                        batches.resolve(Ok(()));
                    }
                    Err(e) => fail(batches, e),
                }
                drop(permit);
            });
        }
        if closed {
            // Wait for the INSERTs still ending.
            let _ = ending.acquire_many(ENDING).await;
            return;
        }
    }
}

fn fail(waiting: Waiting, error: StoreError) {
    tracing::warn!(
        error = %error,
        batches = waiting.batches.len(),
        "batched insert failed; agents will resend"
    );
    waiting.resolve(Err(Arc::new(error)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_grows_while_busy_and_shrinks_when_quiet() {
        let ms = Duration::from_millis;
        let mut period = Period::new(ms(200), ms(1000));
        // 10,000 rows in 200 ms is 50,000 events/s: busy.
        assert_eq!(period.after_insert(10_000, ms(200)), ms(400));
        assert_eq!(period.after_insert(20_000, ms(400)), ms(800));
        assert_eq!(period.after_insert(40_000, ms(800)), ms(1000));
        assert_eq!(period.after_insert(50_000, ms(1000)), ms(1000), "capped");
        // 20,000 events/s is neither: the period stays.
        assert_eq!(period.after_insert(20_000, ms(1000)), ms(1000));
        // Quiet: back down to the minimum.
        assert_eq!(period.after_insert(1_000, ms(1000)), ms(500));
        assert_eq!(period.after_insert(100, ms(500)), ms(250));
        assert_eq!(period.after_insert(10, ms(250)), ms(200));
        assert_eq!(period.current(), ms(200));
    }
}

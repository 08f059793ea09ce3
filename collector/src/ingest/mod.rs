//! The agent stream service: one task per connected agent that validates
//! batches, hands them to the batch [`Writer`], and acknowledges each batch
//! only after ClickHouse has accepted it.
//!
//! Backpressure, per agent: at most `in_flight_batches` batches of one
//! agent wait for storage (the session stops reading its stream until one
//! is stored), and a token bucket holds each agent to its event rate: the
//! agent's, not the stream's, since an agent has one stream at a time and
//! its budget outlives reconnects ([`sessions`]). An
//! agent over its rate, or arriving while the shared in-flight budget is
//! used up, is sent a `Throttle` that says why and is slowed down; other
//! agents are not affected.
//!
//! If storage fails, the stream ends with `UNAVAILABLE` and nothing more is
//! acknowledged; the agent keeps its batches and resends them after
//! reconnecting. Event ids make that resend harmless (see `doorwatch-store`).
//!
//! On shutdown a session stops reading, waits for its in-flight batches to
//! be stored, acknowledges them, and closes the stream.

pub mod config;
pub mod rows;
pub mod sessions;
pub mod writer;

pub use rows::rows_from_batch;

use doorwatch_process::{clock, shutdown};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doorwatch_proto::v1::{
    self, AgentMessage, CollectorMessage, EventBatch, agent_message, collector_message,
};
use doorwatch_store::{HeartbeatRow, Store};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Fault, IngestError};
use crate::ingest::sessions::{AgentSessions, AgentStream};
use crate::ingest::writer::{Receipt, Writer};
use crate::trust::identity;
use crate::trust::revocation::Revocations;
use crate::trust::tls::{AgentConnInfo, PeerInfo};

/// How long a new stream may stay silent before its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a batch may wait for storage before the agent is told to retry.
const STORE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a session waits for room in the in-flight budget before it
/// tells its agent to slow down.
const ROOM_PATIENCE: Duration = Duration::from_millis(200);
/// A throttled agent is asked to pause at least this long when the
/// collector as a whole is busy.
const BUSY_PAUSE: Duration = Duration::from_secs(1);
/// At most one throttle log line per agent per this long.
const THROTTLE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Limits applied to each agent separately.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgentLimits {
    /// Batches of one agent waiting for storage at once.
    pub in_flight_batches: usize,
    /// Sustained events per second.
    pub events_per_second: f64,
    /// Events an agent may send at once above its rate (a backlog after an
    /// outage drains at `events_per_second` once this is used).
    pub burst_events: f64,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            // Small batches are normal (an agent sends what it has), so
            // the count must not bind before the byte budget and the rate
            // do: 64 batches with a 1 s insert period is 64 batches/s.
            in_flight_batches: 64,
            events_per_second: 2_000.0,
            burst_events: 100_000.0,
        }
    }
}

/// The gRPC service agents stream to.
#[derive(Debug, Clone)]
pub struct IngestService {
    writer: Writer,
    limits: AgentLimits,
    sessions: AgentSessions,
    policy: watch::Receiver<Arc<v1::Policy>>,
    heartbeats: mpsc::Sender<HeartbeatRow>,
    revocations: Revocations,
    shutdown: watch::Receiver<bool>,
}

impl IngestService {
    /// Batches go to `writer`. `policy` follows the current policy (see
    /// [`crate::policy::follow`]); every change is pushed to connected
    /// agents. Heartbeats go to `heartbeats` (see [`write_heartbeats`]).
    /// A stream of an agent in `revocations` is refused, or ended as soon
    /// as the agent is revoked.
    pub fn new(
        writer: Writer,
        limits: AgentLimits,
        policy: watch::Receiver<Arc<v1::Policy>>,
        heartbeats: mpsc::Sender<HeartbeatRow>,
        revocations: Revocations,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            writer,
            limits,
            sessions: AgentSessions::new(limits.events_per_second, limits.burst_events),
            policy,
            heartbeats,
            revocations,
            shutdown,
        }
    }

    /// The tonic server wrapper with our message-size limits.
    pub fn into_server(self) -> v1::agent_stream_server::AgentStreamServer<Self> {
        v1::agent_stream_server::AgentStreamServer::new(self)
            .max_decoding_message_size(doorwatch_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(doorwatch_proto::MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl v1::agent_stream_server::AgentStream for IngestService {
    type SessionStream = ReceiverStream<Result<CollectorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let info = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(PeerInfo::agent)
            .ok_or(IngestError::NoIdentity)?;
        if let Some(reason) = self.revocations.reason(&info.identity.agent_id) {
            tracing::warn!(agent_id = %info.identity, remote = %info.remote, reason = %reason, "refused a stream of a revoked agent");
            return Err(IngestError::Revoked(reason).into());
        }
        let (tx, rx) = mpsc::channel(16);
        let now = Instant::now();
        let session = Session {
            info: info.clone(),
            writer: self.writer.clone(),
            limits: self.limits,
            stream: self.sessions.begin(&info.identity.agent_id, now),
            policy: self.policy.clone(),
            heartbeats: self.heartbeats.clone(),
            revoked: self.revocations.subscribe(),
            revocations: self.revocations.clone(),
            claimed_hostname: String::new(),
            tx,
            last_seq: None,
            in_flight: VecDeque::new(),
            throttle_logged: None,
        };
        let inbound = request.into_inner();
        tokio::spawn(session.run(inbound, self.shutdown.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One agent's stream.
struct Session {
    info: AgentConnInfo,
    writer: Writer,
    limits: AgentLimits,
    /// This stream's hold on its agent's event budget; a newer stream of
    /// the same agent ends this one.
    stream: AgentStream,
    policy: watch::Receiver<Arc<v1::Policy>>,
    heartbeats: mpsc::Sender<HeartbeatRow>,
    revocations: Revocations,
    /// Changes when any agent is newly revoked.
    revoked: watch::Receiver<u64>,
    claimed_hostname: String,
    tx: mpsc::Sender<Result<CollectorMessage, Status>>,
    /// The last batch received (stored or not).
    last_seq: Option<u64>,
    /// Batches handed to the writer, oldest first, not yet acknowledged.
    in_flight: VecDeque<(u64, Receipt)>,
    throttle_logged: Option<Instant>,
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<AgentMessage>, shutdown: watch::Receiver<bool>) {
        let agent_id = self.info.identity.agent_id.clone();
        let outcome = match self.serve(&mut inbound, shutdown).await {
            // The batches before a bad one are fine: store and acknowledge
            // them first, so the agent's oldest unacknowledged batch is the
            // bad one when it hears the error.
            Err(error) if error.class().fault == Fault::Agent => self.drain_then(Err(error)).await,
            outcome => outcome,
        };
        match outcome {
            Ok(()) => tracing::info!(agent_id = %agent_id, "agent closed its stream"),
            Err(IngestError::Replaced) => {
                tracing::info!(agent_id = %agent_id, remote = %self.info.remote, "a newer stream of this agent replaced this one");
                let _ = self.tx.send(Err(Status::from(IngestError::Replaced))).await;
            }
            Err(IngestError::ShuttingDown) => {
                tracing::info!(agent_id = %agent_id, "closing the agent's stream for shutdown");
                let _ = self
                    .tx
                    .send(Err(Status::from(IngestError::ShuttingDown)))
                    .await;
            }
            Err(error) => {
                let class = error.class();
                tracing::warn!(
                    agent_id = %agent_id,
                    remote = %self.info.remote,
                    error = %error,
                    fault = ?class.fault,
                    "agent stream ended"
                );
                let _ = self.tx.send(Err(Status::from(error))).await;
            }
        }
    }

    async fn serve(
        &mut self,
        inbound: &mut Streaming<AgentMessage>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), IngestError> {
        let first = tokio::select! {
            first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => first
                .map_err(|_| IngestError::HelloTimeout(HELLO_TIMEOUT.as_secs()))?,
            _ = shutdown::stop_requested(&mut shutdown) => return Err(IngestError::ShuttingDown),
        };
        let hello = match first {
            Ok(Some(AgentMessage {
                body: Some(agent_message::Body::Hello(hello)),
            })) => hello,
            Ok(None) => return Ok(()),
            Ok(Some(_)) => return Err(IngestError::HelloExpected),
            Err(status) => return self.stream_broke(status),
        };
        self.claimed_hostname = identity::claim(&hello.hostname);
        tracing::info!(
            agent_id = %self.info.identity,
            remote = %self.info.remote,
            agent_version = %identity::claim(&hello.agent_version),
            claimed_hostname = %self.claimed_hostname,
            protocol_version = hello.protocol_version,
            "agent connected"
        );
        let current = (**self.policy.borrow_and_update()).clone();
        self.send(collector_message::Body::Policy(current)).await;
        let mut policy_live = true;
        let mut revocations_live = true;
        loop {
            let reading = self.in_flight.len() < self.limits.in_flight_batches;
            tokio::select! {
                biased;
                _ = shutdown::stop_requested(&mut shutdown) => return self.drain().await,
                () = self.stream.replaced() => return Err(IngestError::Replaced),
                stored = next_stored(&mut self.in_flight) => {
                    let seq = stored?;
                    self.send(collector_message::Body::Ack(v1::Ack { seq })).await;
                }
                changed = self.revoked.changed(), if revocations_live => {
                    if changed.is_err() {
                        revocations_live = false;
                    } else if let Some(reason) = self.revocations.reason(&self.info.identity.agent_id) {
                        return Err(IngestError::Revoked(reason));
                    }
                }
                changed = self.policy.changed(), if policy_live => {
                    if changed.is_ok() {
                        let current = (**self.policy.borrow_and_update()).clone();
                        self.send(collector_message::Body::Policy(current)).await;
                    } else {
                        policy_live = false;
                    }
                }
                message = inbound.message(), if reading => {
                    let message = match message {
                        Ok(Some(message)) => message,
                        Ok(None) => return self.drain_then(Ok(())).await,
                        Err(status) => return self.stream_broke(status),
                    };
                    match message.body {
                        Some(agent_message::Body::Batch(batch)) => self.accept_batch(batch).await?,
                        Some(agent_message::Body::Heartbeat(hb)) => self.heartbeat(hb),
                        Some(agent_message::Body::Hello(_)) => return Err(IngestError::DuplicateHello),
                        None => return Err(IngestError::EmptyMessage),
                    }
                }
            }
        }
    }

    /// Shutdown: acknowledges what is stored, then closes the stream so
    /// the agent reconnects (to this collector once it is back, or another).
    async fn drain(&mut self) -> Result<(), IngestError> {
        self.drain_then(Err(IngestError::ShuttingDown)).await
    }

    /// Waits for every in-flight batch, acknowledging each, then ends with
    /// `outcome`.
    async fn drain_then(&mut self, outcome: Result<(), IngestError>) -> Result<(), IngestError> {
        while !self.in_flight.is_empty() {
            let seq = next_stored(&mut self.in_flight).await?;
            self.send(collector_message::Body::Ack(v1::Ack { seq }))
                .await;
        }
        outcome
    }

    /// Validates a batch, applies the agent's rate and the shared budget,
    /// and hands the rows to the writer.
    async fn accept_batch(&mut self, batch: EventBatch) -> Result<(), IngestError> {
        if let Some(previous) = self.last_seq
            && batch.seq <= previous
        {
            return Err(IngestError::SeqNotIncreasing {
                got: batch.seq,
                previous,
            });
        }
        // The budget is taken in what the rows will cost, before any is
        // built: a batch small on the wire can be large in memory.
        let (seq, events) = (batch.seq, batch.events.len());
        let bytes = rows::cost::decoded_cost(&batch, &self.info.identity.agent_id);
        if bytes > rows::cost::MAX_BATCH_DECODED_BYTES {
            return Err(IngestError::BatchTooCostly {
                bytes,
                max: rows::cost::MAX_BATCH_DECODED_BYTES,
            });
        }
        let wait = self.stream.take(events, Instant::now());
        if !wait.is_zero() {
            let reason = format!(
                "over this agent's limit of {} events/s",
                self.limits.events_per_second
            );
            self.throttle(wait, reason).await;
            tokio::time::sleep(wait).await;
        }
        let room = match self.writer.try_room(bytes) {
            Some(room) => room,
            None => {
                let waited = tokio::time::timeout(ROOM_PATIENCE, self.writer.room(bytes)).await;
                match waited {
                    Ok(room) => room,
                    Err(_) => {
                        let reason = "collector busy: storage is behind".to_owned();
                        self.throttle(BUSY_PAUSE, reason).await;
                        self.writer.room(bytes).await
                    }
                }
                .ok_or(IngestError::ShuttingDown)?
            }
        };
        let rows = rows_from_batch(&self.info.identity, clock::unix_now_u32(), batch)?;
        let receipt = self
            .writer
            .submit(rows, room)
            .await
            .ok_or(IngestError::ShuttingDown)?;
        self.in_flight.push_back((seq, receipt));
        self.last_seq = Some(seq);
        Ok(())
    }

    /// Tells the agent to pause and why; logs it (at most once a minute).
    async fn throttle(&mut self, pause: Duration, reason: String) {
        let now = Instant::now();
        if self
            .throttle_logged
            .is_none_or(|at| now.duration_since(at) >= THROTTLE_LOG_EVERY)
        {
            self.throttle_logged = Some(now);
            tracing::warn!(
                agent_id = %self.info.identity,
                pause_ms = pause.as_millis() as u64,
                reason = %reason,
                in_flight_bytes = self.writer.in_flight_bytes(),
                "throttling agent"
            );
        }
        let retry_after_ms = u32::try_from(pause.as_millis()).unwrap_or(u32::MAX);
        self.send(collector_message::Body::Throttle(v1::Throttle {
            retry_after_ms,
            reason,
        }))
        .await;
    }

    fn heartbeat(&self, hb: v1::Heartbeat) {
        tracing::debug!(
            agent_id = %self.info.identity,
            packets_seen = hb.packets_seen,
            kernel_drops = hb.kernel_drops,
            pending_events = hb.pending_events,
            events_dropped = hb.events_dropped,
            policy_version = hb.policy_version,
            "heartbeat"
        );
        let row = HeartbeatRow {
            agent_id: self.info.identity.agent_id.clone(),
            received_at: clock::unix_now_u32(),
            agent_version: identity::claim(&hb.agent_version),
            claimed_hostname: self.claimed_hostname.clone(),
            packets_seen: hb.packets_seen,
            kernel_drops: hb.kernel_drops,
            pending_events: hb.pending_events,
            spool_bytes: hb.spool_bytes,
            events_dropped: hb.events_dropped,
            dropped_spool_cap: hb.dropped_spool_cap,
            dropped_spool_error: hb.dropped_spool_error,
            dropped_invalid: hb.dropped_invalid,
            dropped_queue_full: hb.dropped_queue_full,
            policy_version: hb.policy_version,
            uptime_seconds: hb.uptime_seconds,
            events_created: hb.events_created,
        };
        // Health is best effort: under pressure a heartbeat may be skipped,
        // the next one arrives soon.
        let _ = self.heartbeats.try_send(row);
    }

    /// A read error ends the stream. An agent that went away (cancelled,
    /// reset) gets nothing back; a message we could not decode or that
    /// exceeded the size limit is answered with a status that says so.
    fn stream_broke(&self, status: Status) -> Result<(), IngestError> {
        match status.code() {
            tonic::Code::Cancelled | tonic::Code::Unknown | tonic::Code::Unavailable => {
                tracing::info!(
                    agent_id = %self.info.identity,
                    code = ?status.code(),
                    message = %status.message(),
                    "agent stream broke"
                );
                Ok(())
            }
            _ => Err(IngestError::BadMessage(status)),
        }
    }

    async fn send(&self, body: collector_message::Body) {
        // A closed channel means the agent went away; the read side notices.
        let _ = self
            .tx
            .send(Ok(CollectorMessage { body: Some(body) }))
            .await;
    }
}

/// Waits for the oldest in-flight batch to be stored and returns its seq;
/// never resolves when nothing is in flight.
async fn next_stored(in_flight: &mut VecDeque<(u64, Receipt)>) -> Result<u64, IngestError> {
    let Some((seq, receipt)) = in_flight.front_mut() else {
        return std::future::pending().await;
    };
    let seq = *seq;
    let outcome = tokio::time::timeout(STORE_TIMEOUT, receipt).await;
    in_flight.pop_front();
    match outcome {
        Ok(Ok(Ok(()))) => Ok(seq),
        Ok(Ok(Err(e))) => Err(IngestError::Storage(e)),
        Ok(Err(_)) => Err(IngestError::ShuttingDown),
        Err(_) => Err(IngestError::StorageTimeout(STORE_TIMEOUT.as_secs())),
    }
}

/// Writes heartbeats in batches (up to 1,000 rows or every 2 s) until
/// `shutdown`, so thousands of agents do not mean thousands of INSERTs.
pub async fn write_heartbeats(
    store: Store,
    mut rows: mpsc::Receiver<HeartbeatRow>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(1000);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let last = tokio::select! {
            row = rows.recv() => match row {
                Some(row) => {
                    batch.push(row);
                    if batch.len() < 1000 {
                        continue;
                    }
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        if !batch.is_empty() {
            if let Err(e) = store.insert_heartbeats(&batch).await {
                tracing::warn!(error = %e, rows = batch.len(), "cannot store heartbeats; dropped them");
            }
            batch.clear();
        }
        if last {
            return;
        }
    }
}

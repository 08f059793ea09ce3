//! The agent stream service: one task per connected agent that validates
//! batches, hands them to the batch [`Writer`], and acknowledges each batch
//! only after ClickHouse has accepted it.
//!
//! Backpressure, per agent: at most `in_flight_batches` batches of one
//! agent wait for storage (the session stops reading its stream until one
//! is stored), and a token bucket holds each agent to its event rate. An
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

mod outbound_rows;
pub mod writer;

use doorwatch_process::{clock, shutdown};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doorwatch_proto::v1::{
    self, AgentMessage, CollectorMessage, EventBatch, agent_message, collector_message,
};
use doorwatch_proto::{MAX_EVENTS_PER_BATCH, MAX_PORT_SAMPLE};
use doorwatch_store::{
    FloodEventRow, HeartbeatRow, KnockEventRow, ScanEventRow, Store, episode_state, ip,
};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Fault, IngestError};
use crate::ingest::writer::{Receipt, Writer};
use crate::trust::identity::AgentIdentity;
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
/// Longest explanation text stored.
const MAX_EXPLANATION_BYTES: usize = 4096;
/// Most open ports listed for one episode.
const MAX_OPEN_PORTS: usize = 1024;
/// Most decoy companions listed for one episode.
const MAX_COMPANIONS: usize = 64;
/// Most risky exposures one scan report names.
const MAX_EXPOSED: usize = 64;

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

/// A token bucket of events for one agent.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `events` tokens and returns how long the caller must wait
    /// before going on (zero if the agent is within its rate). Tokens may
    /// go into debt, so a waiting agent is not starved by later arrivals.
    pub fn take(&mut self, events: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= events as f64;
        if self.tokens >= 0.0 || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / self.rate)
    }
    /// How long since tokens were last taken.
    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last)
    }
}

/// The gRPC service agents stream to.
#[derive(Debug, Clone)]
pub struct IngestService {
    writer: Writer,
    limits: AgentLimits,
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
            info,
            writer: self.writer.clone(),
            limits: self.limits,
            rate: RateLimit::new(self.limits.events_per_second, self.limits.burst_events, now),
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
    rate: RateLimit,
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
        tracing::info!(
            agent_id = %self.info.identity,
            remote = %self.info.remote,
            agent_version = %hello.agent_version,
            claimed_hostname = %hello.hostname,
            protocol_version = hello.protocol_version,
            "agent connected"
        );
        self.claimed_hostname = hello.hostname.chars().take(255).collect();
        let current = (**self.policy.borrow_and_update()).clone();
        self.send(collector_message::Body::Policy(current)).await;
        let mut policy_live = true;
        let mut revocations_live = true;
        loop {
            let reading = self.in_flight.len() < self.limits.in_flight_batches;
            tokio::select! {
                biased;
                _ = shutdown::stop_requested(&mut shutdown) => return self.drain().await,
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
        let (seq, events, bytes) = (batch.seq, batch.events.len(), batch.encoded_len());
        let rows = rows_from_batch(&self.info.identity, clock::unix_now_u32(), batch)?;
        let wait = self.rate.take(events, Instant::now());
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
            agent_version: hb.agent_version.chars().take(64).collect(),
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

/// The rows one batch turns into.
pub type BatchRows = doorwatch_store::EventRows;

/// Validates a batch and turns it into rows attributed to `identity`.
/// Pure: the whole batch is accepted or the first bad event is named. Takes
/// the batch by value so texts move into the rows instead of being copied.
pub fn rows_from_batch(
    identity: &AgentIdentity,
    received_at: u32,
    batch: EventBatch,
) -> Result<BatchRows, IngestError> {
    if batch.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(IngestError::BatchTooLarge {
            got: batch.events.len(),
            max: MAX_EVENTS_PER_BATCH,
        });
    }
    let mut rows = BatchRows::default();
    let seq = batch.seq;
    for (index, event) in batch.events.into_iter().enumerate() {
        let bad = |problem| IngestError::BadEvent {
            seq,
            index,
            problem,
        };
        let event_id = uuid_v7(&event.id, "id").map_err(bad)?;
        let created_at = unix_seconds(event.created_unix_ms, "created_unix_ms").map_err(bad)?;
        let common = Common {
            identity,
            event_id,
            received_at,
            created_at,
        };
        match event.detail {
            Some(v1::event::Detail::Scan(scan)) => {
                rows.scans.push(scan_row(&common, scan).map_err(bad)?);
            }
            Some(v1::event::Detail::Flood(flood)) => {
                rows.floods.push(flood_row(&common, flood).map_err(bad)?);
            }
            Some(v1::event::Detail::Knocks(knocks)) => {
                knock_rows(&common, knocks, &mut rows.knocks).map_err(bad)?;
            }
            Some(v1::event::Detail::Flows(flows)) => {
                crate::ingest::outbound_rows::flow_rows(&common, flows, &mut rows.flows)
                    .map_err(bad)?;
            }
            Some(v1::event::Detail::Outbound(anomaly)) => {
                rows.anomalies.push(
                    crate::ingest::outbound_rows::anomaly_row(&common, anomaly).map_err(bad)?,
                );
            }
            Some(v1::event::Detail::Listening(listening)) => {
                crate::ingest::outbound_rows::listening_rows(
                    &common,
                    listening,
                    &mut rows.listening,
                )
                .map_err(bad)?;
            }
            None => return Err(bad("event has no detail".into())),
        }
    }
    Ok(rows)
}

/// What every row of an event shares.
pub(crate) struct Common<'a> {
    pub identity: &'a AgentIdentity,
    pub event_id: uuid::Uuid,
    pub received_at: u32,
    pub created_at: u32,
}

pub(crate) fn episode_state(value: i32) -> Result<i8, String> {
    match v1::EpisodeState::try_from(value) {
        Ok(v1::EpisodeState::Detected) => Ok(episode_state::DETECTED),
        Ok(v1::EpisodeState::Active) => Ok(episode_state::ACTIVE),
        Ok(v1::EpisodeState::Closed) => Ok(episode_state::CLOSED),
        _ => Err(format!("unknown episode state {value}")),
    }
}

fn flood_row(common: &Common<'_>, flood: v1::FloodDetected) -> Result<FloodEventRow, String> {
    if flood.ports.len() > 64 {
        return Err(format!(
            "ports has {} entries; at most 64",
            flood.ports.len()
        ));
    }
    if flood.explanation.len() > MAX_EXPLANATION_BYTES {
        return Err(format!("explanation exceeds {MAX_EXPLANATION_BYTES} bytes"));
    }
    let first_seen = unix_seconds(flood.first_seen_unix_ms, "first_seen_unix_ms")?;
    let last_seen = unix_seconds(flood.last_seen_unix_ms, "last_seen_unix_ms")?;
    if last_seen < first_seen {
        return Err("last_seen is before first_seen".into());
    }
    Ok(FloodEventRow {
        event_id: common.event_id,
        episode_id: uuid_v7(&flood.episode_id, "episode_id")?,
        agent_id: common.identity.agent_id.clone(),
        received_at: common.received_at,
        created_at: common.created_at,
        state: episode_state(flood.state)?,
        target: ip::to_fixed16(ip_from_bytes(&flood.target_ip, "target_ip")?),
        ports: ports(&flood.ports, "ports")?,
        sources: flood.sources,
        first_seen,
        last_seen,
        explanation: flood.explanation,
    })
}

/// Most knocks one event may list (the agent lists at most 256).
const MAX_KNOCKS_PER_EVENT: usize = 256;

/// Appends one row per knock of `knocks` to `out`; nothing on error.
fn knock_rows(
    common: &Common<'_>,
    knocks: v1::KnocksSeen,
    out: &mut Vec<KnockEventRow>,
) -> Result<(), String> {
    if knocks.knocks.len() > MAX_KNOCKS_PER_EVENT {
        return Err(format!(
            "knocks has {} entries; at most {MAX_KNOCKS_PER_EVENT}",
            knocks.knocks.len()
        ));
    }
    explanation_ok(&knocks.explanation)?;
    let start = out.len();
    for (i, knock) in knocks.knocks.into_iter().enumerate() {
        let row =
            knock_row(common, knock, &knocks.explanation).map_err(|e| format!("knock {i}: {e}"));
        match row {
            Ok(row) => out.push(row),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn knock_row(
    common: &Common<'_>,
    knock: v1::Knock,
    explanation: &str,
) -> Result<KnockEventRow, String> {
    let port =
        u16::try_from(knock.port).map_err(|_| format!("port {} is over 65535", knock.port))?;
    let protocol = transport_protocol(knock.protocol)?;
    let first_seen = unix_seconds(knock.first_seen_unix_ms, "first_seen_unix_ms")?;
    let last_seen = unix_seconds(knock.last_seen_unix_ms, "last_seen_unix_ms")?;
    if last_seen < first_seen {
        return Err("last_seen is before first_seen".into());
    }
    Ok(KnockEventRow {
        event_id: common.event_id,
        agent_id: common.identity.agent_id.clone(),
        received_at: common.received_at,
        source: ip::to_fixed16(ip_from_bytes(&knock.source_ip, "source_ip")?),
        target: ip::to_fixed16(ip_from_bytes(&knock.target_ip, "target_ip")?),
        port,
        protocol,
        refused: u8::from(knock.refused),
        probes: knock.probes,
        first_seen,
        last_seen,
        explanation: explanation.to_owned(),
    })
}

fn scan_row(common: &Common<'_>, scan: v1::ScanDetected) -> Result<ScanEventRow, String> {
    let episode_id = uuid_v7(&scan.episode_id, "episode_id")?;
    let state = episode_state(scan.state)?;
    let scanner = ip_from_bytes(&scan.scanner_ip, "scanner_ip")?;
    let target = ip_from_bytes(&scan.target_ip, "target_ip")?;
    if scan.scan_types.is_empty() {
        return Err("scan_types is empty".into());
    }
    let scan_types = scan
        .scan_types
        .iter()
        .map(|&t| scan_type_label(t).map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()?;
    if scan.port_sample.len() > MAX_PORT_SAMPLE {
        return Err(format!(
            "port_sample has {} ports; at most {MAX_PORT_SAMPLE}",
            scan.port_sample.len()
        ));
    }
    if scan.open_ports.len() > MAX_OPEN_PORTS {
        return Err(format!(
            "open_ports has {} ports; at most {MAX_OPEN_PORTS}",
            scan.open_ports.len()
        ));
    }
    if scan.ports_probed > 65_536 {
        return Err(format!("ports_probed {} exceeds 65536", scan.ports_probed));
    }
    if scan.explanation.len() > MAX_EXPLANATION_BYTES {
        return Err(format!("explanation exceeds {MAX_EXPLANATION_BYTES} bytes"));
    }
    let first_seen = unix_seconds(scan.first_seen_unix_ms, "first_seen_unix_ms")?;
    let last_seen = unix_seconds(scan.last_seen_unix_ms, "last_seen_unix_ms")?;
    if last_seen < first_seen {
        return Err("last_seen is before first_seen".into());
    }
    if scan.companions.len() > MAX_COMPANIONS {
        return Err(format!(
            "companions has {} entries; at most {MAX_COMPANIONS}",
            scan.companions.len()
        ));
    }
    let companions = scan
        .companions
        .iter()
        .map(|c| ip_from_bytes(c, "companions").map(ip::to_fixed16))
        .collect::<Result<Vec<_>, _>>()?;
    if scan.exposed.len() > MAX_EXPOSED {
        return Err(format!(
            "exposed has {} entries; at most {MAX_EXPOSED}",
            scan.exposed.len()
        ));
    }
    let mut exposed_ports = scan
        .exposed
        .iter()
        .map(|e| {
            u16::try_from(e.port)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("exposed port {} is not a port", e.port))
        })
        .collect::<Result<Vec<_>, _>>()?;
    exposed_ports.sort_unstable();
    exposed_ports.dedup();
    // Agents older than the field send 0: judge from what they report.
    let severity = match v1::Severity::try_from(scan.severity) {
        Ok(v1::Severity::Unspecified) if scan.open_ports.is_empty() => 1,
        Ok(v1::Severity::Unspecified) => 2,
        Ok(s) => s as u8,
        Err(_) => return Err(format!("unknown severity {}", scan.severity)),
    };
    Ok(ScanEventRow {
        event_id: common.event_id,
        episode_id,
        agent_id: common.identity.agent_id.clone(),
        received_at: common.received_at,
        created_at: common.created_at,
        state,
        scanner: ip::to_fixed16(scanner),
        target: ip::to_fixed16(target),
        scan_types,
        ports_probed: scan.ports_probed,
        port_sample: ports(&scan.port_sample, "port_sample")?,
        open_ports: ports(&scan.open_ports, "open_ports")?,
        probes: scan.probes,
        first_seen,
        last_seen,
        confidence: u8::try_from(scan.confidence.min(100)).unwrap_or(100),
        explanation: scan.explanation,
        companions,
        fragmented: u8::from(scan.fragmented),
        exposed_ports,
        severity,
    })
}

pub(crate) fn uuid_v7(bytes: &[u8], field: &str) -> Result<uuid::Uuid, String> {
    let id = uuid::Uuid::from_slice(bytes)
        .map_err(|_| format!("{field} must be 16 bytes, got {}", bytes.len()))?;
    if id.get_version_num() != 7 {
        return Err(format!("{field} is not a UUIDv7"));
    }
    Ok(id)
}

pub(crate) fn ip_from_bytes(bytes: &[u8], field: &str) -> Result<IpAddr, String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::from(v4));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::from(v6));
    }
    Err(format!(
        "{field} must be 4 or 16 bytes, got {}",
        bytes.len()
    ))
}

pub(crate) fn port(value: u32, field: &str) -> Result<u16, String> {
    u16::try_from(value).map_err(|_| format!("{field} {value} is over 65535"))
}

/// 6 (TCP) or 17 (UDP), the only transports knocks, flows and listeners
/// name.
pub(crate) fn transport_protocol(value: u32) -> Result<u8, String> {
    match value {
        6 | 17 => Ok(value as u8),
        other => Err(format!("protocol {other} is neither 6 (TCP) nor 17 (UDP)")),
    }
}

/// Refuses an explanation (or other text) over the size limit.
pub(crate) fn explanation_ok(text: &str) -> Result<(), String> {
    if text.len() > MAX_EXPLANATION_BYTES {
        return Err(format!("explanation exceeds {MAX_EXPLANATION_BYTES} bytes"));
    }
    Ok(())
}

pub(crate) fn ports(values: &[u32], field: &str) -> Result<Vec<u16>, String> {
    // Checked first so the conversion below allocates once (collecting
    // `Result`s grows the vector step by step; this runs for every row).
    if let Some(p) = values.iter().find(|&&p| p > u32::from(u16::MAX)) {
        return Err(format!("{field} holds {p}, not a port"));
    }
    Ok(values.iter().map(|&p| p as u16).collect())
}

/// Unix milliseconds to the `DateTime` column's seconds, refusing values
/// outside 2001..2106 that a broken agent clock or a lie would produce.
pub(crate) fn unix_seconds(ms: i64, field: &str) -> Result<u32, String> {
    let secs = ms.div_euclid(1000);
    match u32::try_from(secs) {
        Ok(s) if s >= 1_000_000_000 => Ok(s),
        _ => Err(format!("{field} {ms} is not a plausible time")),
    }
}

/// The stored name of a scan type.
pub fn scan_type_label(value: i32) -> Result<&'static str, String> {
    use v1::ScanType::*;
    Ok(match v1::ScanType::try_from(value) {
        Ok(Syn) => "syn",
        Ok(Connect) => "connect",
        Ok(Fin) => "fin",
        Ok(Null) => "null",
        Ok(Xmas) => "xmas",
        Ok(Maimon) => "maimon",
        Ok(Ack) => "ack",
        Ok(Udp) => "udp",
        Ok(IpProto) => "ip_proto",
        Ok(Icmp) => "icmp",
        _ => return Err(format!("unknown scan type {value}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> AgentIdentity {
        AgentIdentity {
            agent_id: "pc-1".into(),
        }
    }

    fn good_event() -> v1::Event {
        v1::Event {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            created_unix_ms: 1_764_000_000_000,
            detail: Some(v1::event::Detail::Scan(v1::ScanDetected {
                episode_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
                state: v1::EpisodeState::Detected as i32,
                scanner_ip: vec![198, 18, 0, 2],
                target_ip: vec![198, 18, 0, 10],
                scan_types: vec![v1::ScanType::Syn as i32],
                ports_probed: 1000,
                port_sample: vec![1, 2, 3],
                open_ports: vec![22],
                probes: 1001,
                first_seen_unix_ms: 1_764_000_000_000,
                last_seen_unix_ms: 1_764_000_002_000,
                confidence: 99,
                explanation: "a scan".into(),
                companions: vec![vec![198, 18, 0, 3]],
                fragmented: false,
                exposed: vec![],
                severity: v1::Severity::Medium as i32,
            })),
        }
    }

    fn batch(events: Vec<v1::Event>) -> EventBatch {
        EventBatch { seq: 7, events }
    }

    fn with_scan(f: impl FnOnce(&mut v1::ScanDetected)) -> v1::Event {
        let mut event = good_event();
        if let Some(v1::event::Detail::Scan(scan)) = &mut event.detail {
            f(scan);
        }
        event
    }

    #[test]
    fn good_batch_becomes_rows_attributed_to_the_certificate() {
        let rows = rows_from_batch(&identity(), 5, batch(vec![good_event()]))
            .expect("valid")
            .scans;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].agent_id, "pc-1");
        assert_eq!(rows[0].scan_types, vec!["syn"]);
        assert_eq!(ip::from_fixed16(rows[0].scanner).to_string(), "198.18.0.2");
        assert_eq!(rows[0].first_seen, 1_764_000_000);
        assert_eq!(
            ip::from_fixed16(rows[0].companions[0]).to_string(),
            "198.18.0.3"
        );
    }

    fn knocks_event(knocks: Vec<v1::Knock>) -> v1::Event {
        v1::Event {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            created_unix_ms: 1_764_000_000_000,
            detail: Some(v1::event::Detail::Knocks(v1::KnocksSeen {
                knocks,
                unlisted: 0,
                explanation: "single tries".into(),
            })),
        }
    }

    fn good_knock() -> v1::Knock {
        v1::Knock {
            source_ip: vec![192, 0, 2, 7],
            target_ip: vec![198, 18, 0, 10],
            port: 3389,
            protocol: 6,
            refused: true,
            probes: 1,
            first_seen_unix_ms: 1_764_000_000_000,
            last_seen_unix_ms: 1_764_000_000_000,
        }
    }

    #[test]
    fn each_knock_becomes_a_row_and_a_bad_one_refuses_the_batch() {
        let event = knocks_event(vec![good_knock(), good_knock()]);
        let rows = rows_from_batch(&identity(), 5, batch(vec![event])).expect("valid");
        assert_eq!(rows.knocks.len(), 2);
        assert_eq!(rows.knocks[0].agent_id, "pc-1");
        assert_eq!(rows.knocks[0].port, 3389);
        assert_eq!(rows.knocks[0].event_id, rows.knocks[1].event_id);
        for (change, problem) in [
            (
                (|k: &mut v1::Knock| k.port = 70_000) as fn(&mut v1::Knock),
                "over 65535",
            ),
            (|k| k.protocol = 1, "neither 6"),
            (|k| k.source_ip = vec![1, 2, 3], "source_ip"),
            (|k| k.last_seen_unix_ms -= 5_000, "before first_seen"),
        ] {
            let mut bad = good_knock();
            change(&mut bad);
            let err = rows_from_batch(
                &identity(),
                5,
                batch(vec![knocks_event(vec![good_knock(), bad])]),
            )
            .expect_err("invalid knock");
            assert!(err.to_string().contains(problem), "{err}");
            assert!(err.to_string().contains("knock 1"), "{err}");
        }
        let too_many = knocks_event(vec![good_knock(); 257]);
        let err = rows_from_batch(&identity(), 5, batch(vec![too_many])).expect_err("too many");
        assert!(err.to_string().contains("at most 256"), "{err}");
    }

    #[test]
    fn flood_events_become_flood_rows() {
        let flood = v1::Event {
            detail: Some(v1::event::Detail::Flood(v1::FloodDetected {
                episode_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
                state: v1::EpisodeState::Closed as i32,
                target_ip: vec![198, 18, 0, 10],
                ports: vec![80],
                sources: 50_000,
                first_seen_unix_ms: 1_764_000_000_000,
                last_seen_unix_ms: 1_764_000_010_000,
                explanation: "a flood".into(),
            })),
            ..good_event()
        };
        let rows =
            rows_from_batch(&identity(), 5, batch(vec![good_event(), flood])).expect("valid");
        assert_eq!(rows.scans.len(), 1);
        assert_eq!(rows.floods.len(), 1);
        assert_eq!(rows.floods[0].sources, 50_000);
        assert_eq!(rows.floods[0].agent_id, "pc-1");
    }

    #[test]
    fn bad_events_are_named() {
        let cases: Vec<(v1::Event, &str)> = vec![
            (
                v1::Event {
                    id: vec![1, 2, 3],
                    ..good_event()
                },
                "id must be 16 bytes",
            ),
            (
                v1::Event {
                    id: uuid::Uuid::new_v4().as_bytes().to_vec(),
                    ..good_event()
                },
                "not a UUIDv7",
            ),
            (
                v1::Event {
                    detail: None,
                    ..good_event()
                },
                "no detail",
            ),
            (
                with_scan(|s| s.scanner_ip = vec![1; 5]),
                "scanner_ip must be 4 or 16",
            ),
            (with_scan(|s| s.port_sample = vec![70_000]), "not a port"),
            (with_scan(|s| s.port_sample = vec![1; 65]), "at most 64"),
            (with_scan(|s| s.scan_types = vec![99]), "unknown scan type"),
            (with_scan(|s| s.scan_types = vec![]), "scan_types is empty"),
            (with_scan(|s| s.state = 42), "unknown episode state"),
            (
                with_scan(|s| s.first_seen_unix_ms = -5),
                "not a plausible time",
            ),
            (
                with_scan(|s| s.last_seen_unix_ms = 1_000_000_000_000),
                "before first_seen",
            ),
            (
                with_scan(|s| s.explanation = "x".repeat(5000)),
                "explanation exceeds",
            ),
        ];
        for (event, expected) in cases {
            let err = rows_from_batch(&identity(), 5, batch(vec![good_event(), event]))
                .expect_err(expected)
                .to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
            assert!(err.contains("event 1 of batch 7"), "{err}");
        }
    }

    #[test]
    fn rate_limit_allows_the_burst_then_paces_to_the_rate() {
        let start = Instant::now();
        let mut limit = RateLimit::new(1000.0, 2000.0, start);
        assert_eq!(limit.take(1000, start), Duration::ZERO);
        assert_eq!(limit.take(1000, start), Duration::ZERO);
        // Burst used: the next 500 events need half a second.
        let wait = limit.take(500, start);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // Debt is remembered: a second later only 500 tokens are back.
        let later = start + Duration::from_secs(1);
        assert_eq!(limit.take(500, later), Duration::ZERO);
        assert!(limit.take(1, later) > Duration::ZERO);
        // Idle time refills up to the burst, not beyond.
        let much_later = later + Duration::from_secs(3600);
        assert_eq!(limit.take(2000, much_later), Duration::ZERO);
        assert!(limit.take(1, much_later) > Duration::ZERO);
    }

    #[test]
    fn oversized_batch_is_refused() {
        let events = vec![good_event(); MAX_EVENTS_PER_BATCH + 1];
        let err = rows_from_batch(&identity(), 5, batch(events)).expect_err("too large");
        assert!(matches!(err, IngestError::BatchTooLarge { .. }));
    }
}

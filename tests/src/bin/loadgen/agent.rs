//! One simulated agent on the wire: its TLS client config, the Session
//! stream it opens, the batches it keeps until acknowledged (`Pending`,
//! `Encoded`), why a session ends (`SessionError`), and the `Agent` that
//! generates, sends, resends, heartbeats and reconnects with backoff.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use doorwatch_agent::tls::ClientTls;
use doorwatch_e2e::mix::AgentMix;
use doorwatch_process::clock;
use doorwatch_process::logging::error_chain;
use doorwatch_proto::codec::LeanCodec;
use doorwatch_proto::v1::{self, AgentMessage, CollectorMessage, agent_message, collector_message};
use doorwatch_proto::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use prost::Message as _;
use prost::bytes::Bytes;
use rand::Rng;
use rand::rngs::SmallRng;
use rustls::pki_types::ServerName;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::{AgentResult, Phase, Shared, Stats};

/// The Session RPC of `doorwatch.v1.AgentStream`.
const SESSION_PATH: &str = "/doorwatch.v1.AgentStream/Session";

/// First reconnect delay ceiling, and the largest.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// A session that lasted this long resets the backoff (an Ack does too).
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// With batches in flight and no Ack for this long, reconnect.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// TCP connect, TLS handshake, and the stream's response headers, each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a drained agent waits for the collector to end its stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued towards one stream (h2 flow control is behind it).
const SEND_QUEUE: usize = 8;
/// While a batch fills, due events are made at most this late, so their
/// timestamps stay close to when they were due without a wakeup per event.
const GENERATE_TICK: Duration = Duration::from_millis(100);

/// A client config with a certificate issued for `id`. Resumption keeps a
/// couple of sessions instead of rustls's default 256-entry cache, which
/// would cost tens of kilobytes per simulated agent.
pub(crate) fn client_config(
    shared: &Shared,
    id: &str,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pem = shared.issuer.issue(id, 1)?;
    let chain = doorwatch_tls::certs_from_pem("agent certificate", pem.cert_pem.as_bytes())?;
    let key = doorwatch_tls::key_from_pem("agent key", pem.key_pem.as_bytes())?;
    let config = doorwatch_tls::client_config_with(shared.roots.clone(), chain, key)?;
    let mut config = Arc::unwrap_or_clone(config);
    config.resumption = rustls::client::Resumption::in_memory_sessions(2);
    Ok(Arc::new(config))
}

/// A batch kept until an Ack covers it, encoded once: a resend sends the
/// same bytes, and an ack frees one buffer rather than every event's.
pub(crate) struct Pending {
    seq: u64,
    events: u64,
    message: Encoded,
    sent_at: Option<Instant>,
    sends: u32,
}

/// An `AgentMessage` already encoded. It goes on the wire as it is, so the
/// generator spends its CPU once per batch, not once per send.
#[derive(Debug, Clone, Default)]
struct Encoded(Bytes);

impl Encoded {
    fn of(message: &AgentMessage) -> Self {
        Self(Bytes::from(message.encode_to_vec()))
    }
}

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever sent, never received.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Why a session ended.
#[derive(Debug)]
enum SessionError {
    Connect(String),
    Refused(tonic::Status),
    Status(tonic::Status),
    Closed,
    AckTimeout,
    Stopped,
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Refused(s) => write!(f, "collector refused the stream: {s}"),
            Self::Status(s) => write!(f, "stream ended: {s}"),
            Self::Closed => f.write_str("collector closed the stream"),
            Self::AckTimeout => write!(f, "no acknowledgement for {ACK_TIMEOUT:?}"),
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

/// One simulated agent.
pub(crate) struct Agent {
    pub(crate) id: String,
    pub(crate) shared: Arc<Shared>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) phase: watch::Receiver<Phase>,
    pub(crate) mix: AgentMix,
    pub(crate) rng: SmallRng,
    pub(crate) jitter: SmallRng,
    pub(crate) gen_start: Instant,
    pub(crate) generated: u64,
    /// Where in its first inter-event interval this agent starts (0 to 1),
    /// so agents with under one event per second are not in lockstep.
    pub(crate) gen_phase: f64,
    /// When [`Agent::generate`] last ran.
    pub(crate) generated_at: Instant,
    pub(crate) buffer: Vec<v1::Event>,
    pub(crate) buffer_since: Instant,
    pub(crate) next_seq: u64,
    pub(crate) unacked: VecDeque<Pending>,
    pub(crate) backoff_attempt: u32,
    pub(crate) ever_connected: bool,
    pub(crate) result: AgentResult,
}

impl Agent {
    fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    fn done(&self) -> bool {
        self.phase() != Phase::Run && self.buffer.is_empty() && self.unacked.is_empty()
    }

    pub(crate) async fn run(mut self) -> AgentResult {
        loop {
            if self.done() || self.phase() == Phase::Stop {
                break;
            }
            let began = Instant::now();
            match self.session().await {
                Ok(()) => break,
                Err(SessionError::Stopped) => break,
                Err(e) => {
                    let stats = &self.shared.stats;
                    match e {
                        SessionError::Connect(_) | SessionError::Refused(_) => {
                            Stats::add(&stats.connect_failures, 1);
                        }
                        _ => Stats::add(&stats.stream_errors, 1),
                    }
                    tracing::debug!(agent_id = %self.id, error = %e, unacked_batches = self.unacked.len(), "session ended");
                }
            }
            if began.elapsed() >= HEALTHY_SESSION {
                self.backoff_attempt = 0;
            }
            let delay = self.next_backoff();
            if !self.pause(delay).await {
                break;
            }
        }
        self.result
    }

    /// Capped exponential backoff with full jitter (see [`backoff_delay`]).
    fn next_backoff(&mut self) -> Duration {
        let delay = backoff_delay(self.backoff_attempt, self.jitter.random::<f64>());
        self.backoff_attempt = self.backoff_attempt.saturating_add(1);
        delay
    }

    /// Waits `delay` while still generating. False if told to stop.
    async fn pause(&mut self, delay: Duration) -> bool {
        let wake = Instant::now() + delay;
        loop {
            let phase = self.phase();
            if phase == Phase::Stop {
                return false;
            }
            if Instant::now() >= wake {
                return true;
            }
            let generate_at = self.next_generation(phase);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => return true,
                _ = sleep_until_some(generate_at) => self.generate(phase),
                changed = self.phase.changed() => if changed.is_err() { return false },
            }
        }
    }

    /// One connection and stream: open it, deliver, and return Ok once
    /// drained and closed.
    async fn session(&mut self) -> Result<(), SessionError> {
        let (tx, rx) = mpsc::channel::<Encoded>(SEND_QUEUE);
        let hello = Encoded::of(&AgentMessage {
            body: Some(agent_message::Body::Hello(v1::Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "loadgen".into(),
                hostname: self.id.clone(),
                os: std::env::consts::OS.into(),
                local_ips: vec![self.mix.target().octets().to_vec()],
            })),
        });
        // The queue is empty, so this cannot fail.
        let _ = tx.try_send(hello);
        let open = open_stream(
            self.shared.address.clone(),
            self.shared.server_name.clone(),
            self.tls.clone(),
            rx,
        );
        tokio::pin!(open);
        let (_client, mut inbound) = loop {
            let phase = self.phase();
            if phase == Phase::Stop {
                return Err(SessionError::Stopped);
            }
            let generate_at = self.next_generation(phase);
            tokio::select! {
                opened = &mut open => break opened?,
                _ = sleep_until_some(generate_at) => self.generate(phase),
                changed = self.phase.changed() => if changed.is_err() { return Err(SessionError::Stopped) },
            }
        };

        let stats = &self.shared.stats;
        let now_connected = stats.connected.fetch_add(1, Ordering::Relaxed) + 1;
        stats
            .connected_peak
            .fetch_max(now_connected, Ordering::Relaxed);
        if self.ever_connected {
            Stats::add(&stats.reconnects, 1);
        } else {
            self.ever_connected = true;
            let ever = stats.ever_connected.fetch_add(1, Ordering::Relaxed) + 1;
            if ever == u64::from(self.shared.agents) {
                let ms = self.shared.started.elapsed().as_millis();
                stats.all_connected_ms.store(
                    u64::try_from(ms).unwrap_or(u64::MAX).max(1),
                    Ordering::Relaxed,
                );
                tracing::info!(
                    agents = self.shared.agents,
                    after_s = ms as f64 / 1000.0,
                    "every agent has connected"
                );
            }
        }
        tracing::debug!(agent_id = %self.id, unacked_batches = self.unacked.len(), "connected");
        let outcome = self.deliver(tx, &mut inbound).await;
        self.shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
        outcome
    }

    /// Sends batches and heartbeats, takes Acks, until drained or broken.
    async fn deliver(
        &mut self,
        tx: mpsc::Sender<Encoded>,
        inbound: &mut Streaming<CollectorMessage>,
    ) -> Result<(), SessionError> {
        let opened = Instant::now();
        let mut sent = 0usize;
        let mut throttled_until: Option<Instant> = None;
        let mut ack_deadline = Instant::now() + ACK_TIMEOUT;
        let heartbeat_every = self.shared.heartbeat;
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let phase = self.phase();
            if phase == Phase::Stop {
                return Err(SessionError::Stopped);
            }
            if self.done() {
                // Drained: end our side and let the collector end its own.
                drop(tx);
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                return Ok(());
            }
            let now = Instant::now();
            let throttled = throttled_until.filter(|until| *until > now);
            let can_send = sent < self.unacked.len() && throttled.is_none();
            let generate_at = self.next_generation(phase);
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Some(until) = self.on_message(message, &mut sent, &mut ack_deadline) {
                            throttled_until = Some(until);
                        }
                    }
                    Ok(None) => return Err(SessionError::Closed),
                    Err(status) => return Err(self.on_error_status(status)),
                },
                permit = tx.reserve(), if can_send => {
                    let Ok(permit) = permit else { return Err(SessionError::Closed) };
                    let pending = &mut self.unacked[sent];
                    if pending.sends > 0 {
                        Stats::add(&self.shared.stats.resent_batches, 1);
                    }
                    pending.sends += 1;
                    pending.sent_at = Some(Instant::now());
                    permit.send(pending.message.clone());
                    if sent == 0 {
                        ack_deadline = Instant::now() + ACK_TIMEOUT;
                    }
                    sent += 1;
                }
                _ = sleep_until_some(generate_at) => self.generate(phase),
                _ = sleep_until_some(throttled), if sent < self.unacked.len() => {}
                _ = heartbeat.tick() => {
                    let _ = tx.try_send(self.heartbeat_message(opened));
                }
                _ = tokio::time::sleep_until(ack_deadline), if sent > 0 => {
                    return Err(SessionError::AckTimeout);
                }
                changed = self.phase.changed() => if changed.is_err() { return Err(SessionError::Stopped) },
            }
        }
    }

    /// Handles one collector message; returns a pause if it was a Throttle.
    fn on_message(
        &mut self,
        message: CollectorMessage,
        sent: &mut usize,
        ack_deadline: &mut Instant,
    ) -> Option<Instant> {
        match message.body? {
            collector_message::Body::Ack(ack) => {
                let stats = &self.shared.stats;
                let mut events = 0;
                let mut batches = 0;
                while self
                    .unacked
                    .front()
                    .is_some_and(|p| p.seq <= ack.seq && p.sends > 0)
                {
                    let Some(done) = self.unacked.pop_front() else {
                        break;
                    };
                    if let Some(at) = done.sent_at {
                        let us = at.elapsed().as_micros();
                        self.result
                            .latencies_us
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    events += done.events;
                    batches += 1;
                    *sent = sent.saturating_sub(1);
                }
                Stats::add(&stats.acked, events);
                Stats::add(&stats.batches_acked, batches);
                *ack_deadline = Instant::now() + ACK_TIMEOUT;
                if batches > 0 {
                    self.backoff_attempt = 0;
                }
                None
            }
            collector_message::Body::Throttle(throttle) => {
                Stats::add(&self.shared.stats.throttles, 1);
                tracing::debug!(agent_id = %self.id, retry_after_ms = throttle.retry_after_ms, reason = %throttle.reason, "throttled");
                Some(Instant::now() + Duration::from_millis(u64::from(throttle.retry_after_ms)))
            }
            collector_message::Body::Policy(_) => None,
        }
    }

    /// INVALID_ARGUMENT means the collector will never take the oldest
    /// unacknowledged batch: that is a generator bug. Say so loudly and
    /// drop the batch, or delivery would stall on it for ever.
    fn on_error_status(&mut self, status: tonic::Status) -> SessionError {
        if status.code() == tonic::Code::InvalidArgument {
            let stats = &self.shared.stats;
            Stats::add(&stats.invalid_argument, 1);
            if self.unacked.front().is_some_and(|p| p.sends > 0)
                && let Some(bad) = self.unacked.pop_front()
            {
                Stats::add(&stats.refused_events, bad.events);
                tracing::error!(
                    agent_id = %self.id,
                    seq = bad.seq,
                    events = bad.events,
                    reason = %status.message(),
                    "GENERATOR BUG: the collector refused a batch as invalid; dropped it"
                );
            } else {
                tracing::error!(agent_id = %self.id, reason = %status.message(), "GENERATOR BUG: the collector refused the stream as invalid");
            }
        }
        SessionError::Status(status)
    }

    fn heartbeat_message(&self, opened: Instant) -> Encoded {
        let pending = self.unacked.iter().map(|p| p.events).sum::<u64>() + self.buffer.len() as u64;
        Encoded::of(&AgentMessage {
            body: Some(agent_message::Body::Heartbeat(v1::Heartbeat {
                pending_events: pending,
                uptime_seconds: opened.elapsed().as_secs(),
                agent_version: "loadgen".into(),
                ..Default::default()
            })),
        })
    }

    /// When [`Agent::generate`] has something to do next: the next event is
    /// due (checked at most every [`GENERATE_TICK`] while a batch fills),
    /// the batch is full, or its flush time has come. After generation
    /// stops, a partial batch still waits for its flush time, so the drain
    /// does not turn into every agent inserting at the same instant.
    fn next_generation(&self, phase: Phase) -> Option<Instant> {
        let flush_at = self.buffer_since + self.shared.flush;
        let rate = self.shared.rate_per_agent;
        if phase != Phase::Run || rate <= 0.0 {
            return (!self.buffer.is_empty()).then_some(flush_at);
        }
        let due_at = |n: u64| {
            self.gen_start + Duration::from_secs_f64(((n as f64 - self.gen_phase) / rate).max(0.0))
        };
        let next_due = due_at(self.generated + 1);
        if self.buffer.is_empty() {
            return Some(next_due);
        }
        let room = (self.shared.batch_max - self.buffer.len()) as u64;
        let next_check = next_due.max(self.generated_at + GENERATE_TICK);
        Some(flush_at.min(due_at(self.generated + room)).min(next_check))
    }

    /// Makes the events due by now and seals full or old batches.
    fn generate(&mut self, phase: Phase) {
        let now = Instant::now();
        self.generated_at = now;
        let rate = self.shared.rate_per_agent;
        if phase == Phase::Run && rate > 0.0 {
            // The epsilon keeps float rounding from waking us a hair early
            // for ever.
            let due = ((now - self.gen_start).as_secs_f64() * rate + self.gen_phase + 1e-6) as u64;
            let fresh = due.saturating_sub(self.generated);
            let now_ms = i64::try_from(clock::unix_now_ms()).unwrap_or(i64::MAX);
            for _ in 0..fresh {
                if self.buffer.is_empty() {
                    self.buffer_since = now;
                }
                let event = self.mix.next_event(&mut self.rng, now_ms);
                if self.shared.keep_ids
                    && let Ok(id) = <[u8; 16]>::try_from(event.id.as_slice())
                {
                    self.result.ids.push(id);
                }
                self.buffer.push(event);
                if self.buffer.len() >= self.shared.batch_max {
                    self.seal();
                }
            }
            self.generated += fresh;
            Stats::add(&self.shared.stats.generated, fresh);
        }
        if !self.buffer.is_empty() && now >= self.buffer_since + self.shared.flush {
            self.seal();
        }
    }

    /// Encodes the buffered events as the next batch and keeps it until
    /// acknowledged. The buffer's memory is reused for the next batch.
    fn seal(&mut self) {
        let seq = self.next_seq;
        let message = AgentMessage {
            body: Some(agent_message::Body::Batch(v1::EventBatch {
                seq,
                events: std::mem::take(&mut self.buffer),
            })),
        };
        let encoded = Encoded::of(&message);
        if let Some(agent_message::Body::Batch(batch)) = message.body {
            self.buffer = batch.events;
        }
        self.unacked.push_back(Pending {
            seq,
            events: self.buffer.len() as u64,
            message: encoded,
            sent_at: None,
            sends: 0,
        });
        self.buffer.clear();
        self.next_seq += 1;
    }
}

/// The reconnect delay after `attempt` failures, for `unit` drawn
/// uniformly from [0, 1): full jitter under min(cap, base·2ⁿ).
fn backoff_delay(attempt: u32, unit: f64) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// TCP, TLS and the Session stream, through the agent's own connector so
/// the TLS policy and timeouts are exactly the agents'.
async fn open_stream(
    address: String,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    requests: mpsc::Receiver<Encoded>,
) -> Result<(Grpc<Channel>, Streaming<CollectorMessage>), SessionError> {
    let channel = ClientTls::from_config(config, server_name)
        .connect(&address)
        .await
        .map_err(|e| SessionError::Connect(error_chain(&e)))?;
    let mut client = Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // The generated client's `session`, but for messages encoded already.
    let session = async {
        client
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
        let codec = LeanCodec::<Encoded, CollectorMessage>::default();
        let path = PathAndQuery::from_static(SESSION_PATH);
        client
            .streaming(
                tonic::Request::new(ReceiverStream::new(requests)),
                path,
                codec,
            )
            .await
    };
    let response = tokio::time::timeout(CONNECT_TIMEOUT, session)
        .await
        .map_err(|_| SessionError::Connect("no response to the stream within 10 s".into()))?
        .map_err(SessionError::Refused)?;
    Ok((client, response.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_250_ms_and_stops_at_10_s() {
        assert_eq!(backoff_delay(0, 0.999_999).as_millis(), 249);
        assert_eq!(backoff_delay(1, 0.5), Duration::from_millis(250));
        assert_eq!(backoff_delay(5, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_delay(6, 1.0), BACKOFF_CAP);
        assert_eq!(backoff_delay(u32::MAX, 1.0), BACKOFF_CAP);
        assert_eq!(backoff_delay(3, 0.0), Duration::ZERO);
    }
}

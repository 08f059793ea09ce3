//! The stream to the collector: connect over mutual TLS, send Hello, send
//! event batches, apply Policy, send heartbeats, and forget a batch only
//! when the collector's cumulative Ack covers it.
//!
//! Every batch goes to the on-disk [`Spool`] before it is sent, and stays
//! there until acknowledged; after every reconnect the unacknowledged
//! batches are resent from disk, in order, with their original sequence
//! numbers.
//! Reconnects wait a capped exponential backoff with full jitter, so a
//! campus of agents does not stampede a restarted collector.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use doorwatch_proto::v1::{self, AgentMessage, agent_message, collector_message};
use doorwatch_proto::{MAX_EVENTS_PER_BATCH, MAX_MESSAGE_BYTES};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::enroll::Renewal;
use crate::spool::Spool;
use crate::tls::ClientTls;

/// With batches in flight and no Ack for this long, reconnect.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// First and largest reconnect delay.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// A session that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// Longest pause a collector's Throttle can impose at once.
const MAX_THROTTLE: Duration = Duration::from_secs(60);

/// Counters shared by capture, detection and delivery; reported in
/// heartbeats.
#[derive(Debug, Default)]
pub struct Counters {
    pub packets_seen: AtomicU64,
    /// Events detection produced (delivered, pending or dropped).
    pub events_created: AtomicU64,
    pub decode_errors: AtomicU64,
    pub kernel_drops: AtomicU64,
    /// All dropped events; the four causes below add up to it.
    pub events_dropped: AtomicU64,
    pub dropped_spool_cap: AtomicU64,
    pub dropped_spool_error: AtomicU64,
    pub dropped_invalid: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub policy_version: AtomicU64,
}

impl Counters {
    /// Counts `n` events dropped for the reason `cause` names.
    pub fn dropped(&self, cause: &AtomicU64, n: u64) {
        cause.fetch_add(n, Ordering::Relaxed);
        self.events_dropped.fetch_add(n, Ordering::Relaxed);
    }
}

/// Capped exponential backoff with full jitter: the n-th delay is uniform
/// in [0, min(cap, base·2ⁿ)].
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn new() -> Self {
        Self { attempt: 0 }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay, drawing the jitter from `rng`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = BACKOFF_BASE
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_CAP);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(rng.random::<f64>())
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("collector refused the stream: {0}")]
    Refused(tonic::Status),
    #[error("stream ended: {0}")]
    Status(tonic::Status),
    #[error("collector closed the stream")]
    Closed,
    #[error("no acknowledgement for {0:?}")]
    AckTimeout(Duration),
    #[error("spool read failed")]
    Spool,
    #[error("certificate renewed; reconnecting with it")]
    Renewed,
}

/// The delivery task.
#[derive(Debug)]
pub struct Uplink {
    pub tls: ClientTls,
    pub address: String,
    pub hello: v1::Hello,
    pub heartbeat: Duration,
    pub events: mpsc::Receiver<v1::Event>,
    pub pending: Spool,
    pub policy: watch::Sender<Option<v1::Policy>>,
    pub counters: Arc<Counters>,
    pub started: Instant,
    /// Keeps the certificate current; `None` for hand-made certificates
    /// that are replaced by other means.
    renewal: Option<Renewal>,
    events_open: bool,
}

impl Uplink {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tls: ClientTls,
        address: String,
        hello: v1::Hello,
        heartbeat: Duration,
        events: mpsc::Receiver<v1::Event>,
        spool: Spool,
        policy: watch::Sender<Option<v1::Policy>>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            tls,
            address,
            hello,
            heartbeat,
            events,
            pending: spool,
            policy,
            counters,
            started: Instant::now(),
            renewal: None,
            events_open: true,
        }
    }

    /// Renews the certificate while running (see [`Renewal`]).
    pub fn with_renewal(mut self, renewal: Renewal) -> Self {
        self.renewal = Some(renewal);
        self
    }

    /// When the next renewal attempt is due, on the tokio clock.
    fn renewal_due(&self) -> Option<tokio::time::Instant> {
        let due = self.renewal.as_ref()?.due_at();
        let wait = due
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        Some(tokio::time::Instant::now() + wait)
    }

    /// Renews (or re-enrolls); on success the next connection uses the new
    /// certificate.
    async fn refresh_identity(&mut self) -> bool {
        let Some(renewal) = self.renewal.as_mut() else {
            return false;
        };
        let expired = renewal.expired();
        match renewal.refresh(&self.tls).await {
            Ok(tls) => {
                self.tls = tls;
                if expired {
                    tracing::warn!(
                        "certificate had expired; enrolled again with the token (this PC is a new agent)"
                    );
                } else {
                    tracing::info!("certificate renewed");
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_at = ?renewal.due_at(), "cannot renew the certificate");
                false
            }
        }
    }

    /// Runs until the event channel is closed and everything was delivered.
    /// The caller bounds how long it waits for that at shutdown.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new();
        loop {
            // An expired certificate cannot connect: enroll again first.
            if self.renewal.as_ref().is_some_and(Renewal::expired)
                && self
                    .renewal_due()
                    .is_some_and(|due| due <= tokio::time::Instant::now())
            {
                self.refresh_identity().await;
            }
            let began = Instant::now();
            match self.session().await {
                Ok(()) => return,
                Err(SessionError::Renewed) => continue,
                Err(e) => {
                    tracing::warn!(collector = %self.address, error = %e, pending_events = self.pending.events(), "collector stream down");
                }
            }
            if began.elapsed() >= HEALTHY_SESSION {
                backoff.reset();
            }
            let delay = backoff.next_delay(&mut rand::rng());
            tracing::info!(retry_in = ?delay, "reconnecting to collector");
            let wake = tokio::time::Instant::now() + delay;
            // Keep taking events while waiting, so capture never blocks.
            while self.events_open {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    event = self.events.recv() => self.take_events(event),
                }
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    fn take_events(&mut self, first: Option<v1::Event>) {
        let Some(first) = first else {
            self.events_open = false;
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_EVENTS_PER_BATCH {
            match self.events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let count = batch.len();
        match self.pending.append(batch) {
            Ok((_, 0)) => {}
            Ok((_, dropped)) => {
                self.counters
                    .dropped(&self.counters.dropped_spool_cap, dropped as u64);
                tracing::warn!(
                    dropped,
                    "spool over its size cap; dropped the oldest events"
                );
            }
            Err(e) => {
                self.counters
                    .dropped(&self.counters.dropped_spool_error, count as u64);
                tracing::error!(error = %e, events = count, "cannot write events to the spool; dropped them");
            }
        }
    }

    fn heartbeat_message(&self) -> AgentMessage {
        let c = &self.counters;
        AgentMessage {
            body: Some(agent_message::Body::Heartbeat(v1::Heartbeat {
                packets_seen: c.packets_seen.load(Ordering::Relaxed),
                kernel_drops: c.kernel_drops.load(Ordering::Relaxed),
                pending_events: self.pending.events() as u64,
                events_dropped: c.events_dropped.load(Ordering::Relaxed),
                policy_version: c.policy_version.load(Ordering::Relaxed),
                uptime_seconds: self.started.elapsed().as_secs(),
                agent_version: self.hello.agent_version.clone(),
                spool_bytes: self.pending.bytes(),
                dropped_spool_cap: c.dropped_spool_cap.load(Ordering::Relaxed),
                dropped_spool_error: c.dropped_spool_error.load(Ordering::Relaxed),
                dropped_invalid: c.dropped_invalid.load(Ordering::Relaxed),
                dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
                events_created: c.events_created.load(Ordering::Relaxed),
            })),
        }
    }

    async fn session(&mut self) -> Result<(), SessionError> {
        let channel = self.tls.connect(&self.address).await?;
        let mut client = v1::agent_stream_client::AgentStreamClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel::<AgentMessage>(32);
        let hello = AgentMessage {
            body: Some(agent_message::Body::Hello(self.hello.clone())),
        };
        // The channel is empty, so this cannot fail.
        let _ = tx.try_send(hello);
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .map_err(SessionError::Refused)?
            .into_inner();
        tracing::info!(collector = %self.address, pending_batches = self.pending.batches(), "connected to collector");

        let mut sent = 0usize;
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ack_deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        // A Throttle pauses new batches (never heartbeats or acks) until then.
        let mut paused_until = tokio::time::Instant::now();
        loop {
            let paused = tokio::time::Instant::now() < paused_until;
            let renewal_due = self.renewal_due();
            if !self.events_open && self.pending.batches() == 0 {
                return Ok(());
            }
            tokio::select! {
                message = inbound.message() => {
                    let body = match message {
                        Ok(Some(m)) => m.body,
                        Ok(None) => return Err(SessionError::Closed),
                        Err(status) => return Err(self.on_error_status(status)),
                    };
                    match body {
                        Some(collector_message::Body::Ack(ack)) => {
                            let removed = self.pending.ack(ack.seq);
                            sent = sent.saturating_sub(removed);
                            ack_deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
                            tracing::debug!(seq = ack.seq, "batch acknowledged");
                        }
                        Some(collector_message::Body::Policy(policy)) => {
                            tracing::info!(version = policy.version, "received policy");
                            let _ = self.policy.send(Some(policy));
                        }
                        Some(collector_message::Body::Throttle(t)) => {
                            let pause = Duration::from_millis(t.retry_after_ms.into()).min(MAX_THROTTLE);
                            paused_until = tokio::time::Instant::now() + pause;
                            // Waiting for acks while paused is the collector's doing.
                            ack_deadline = ack_deadline.max(paused_until + ACK_TIMEOUT);
                            tracing::warn!(pause_ms = pause.as_millis() as u64, reason = %t.reason, "collector asks to slow down");
                        }
                        None => {}
                    }
                }
                event = self.events.recv(), if self.events_open => self.take_events(event),
                _ = tokio::time::sleep_until(paused_until), if paused => {}
                permit = tx.reserve(), if sent < self.pending.batches() && !paused => {
                    let Ok(permit) = permit else { return Err(SessionError::Closed) };
                    let batch = match self.pending.get(sent) {
                        Ok(Some(batch)) => batch,
                        Ok(None) => continue,
                        Err(e) => {
                            // An unreadable batch would block delivery for
                            // good: drop it, count it, and carry on.
                            let lost = if sent == 0 { self.pending.pop_front() } else { 0 };
                            self.counters.dropped(&self.counters.dropped_spool_error, lost as u64);
                            tracing::error!(error = %e, "cannot read a batch back from the spool");
                            return Err(SessionError::Spool);
                        }
                    };
                    if sent == 0 {
                        ack_deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
                    }
                    permit.send(AgentMessage { body: Some(agent_message::Body::Batch(batch)) });
                    sent += 1;
                }
                _ = heartbeat.tick() => {
                    let _ = tx.try_send(self.heartbeat_message());
                }
                _ = tokio::time::sleep_until(ack_deadline), if sent > 0 => {
                    return Err(SessionError::AckTimeout(ACK_TIMEOUT));
                }
                _ = sleep_until_some(renewal_due) => {
                    if self.refresh_identity().await {
                        return Err(SessionError::Renewed);
                    }
                }
            }
        }
    }

    /// An error status ends the session. INVALID_ARGUMENT means the
    /// collector will never accept the oldest unacknowledged batch; keeping
    /// it would block delivery forever, so it is dropped and counted.
    fn on_error_status(&mut self, status: tonic::Status) -> SessionError {
        if status.code() == tonic::Code::InvalidArgument && self.pending.batches() > 0 {
            let dropped = self.pending.pop_front();
            self.counters
                .dropped(&self.counters.dropped_invalid, dropped as u64);
            tracing::error!(dropped, reason = %status.message(), "collector rejected a batch as invalid; dropped it");
        }
        SessionError::Status(status)
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..40).map(|_| b.next_delay(&mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= BACKOFF_CAP));
        assert!(delays[0] <= BACKOFF_BASE);
        let late = &delays[20..];
        let distinct: std::collections::HashSet<_> = late.iter().collect();
        assert!(distinct.len() > 15, "full jitter spreads the delays");
        b.reset();
        assert!(b.next_delay(&mut rng) <= BACKOFF_BASE);
    }
}

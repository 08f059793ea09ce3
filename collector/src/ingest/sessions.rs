//! Which stream is each agent's. Limits belong to the agent (the
//! certificate), not to a stream: an agent has one stream at a time (a
//! newer one replaces the older, which drains and ends), and one event
//! budget that outlives its streams, so neither a second stream nor a
//! reconnect buys more than the agent's rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::rate::RateLimit;

/// Every agent's current stream and event budget.
#[derive(Debug, Clone)]
pub struct AgentSessions {
    inner: Arc<Mutex<Inner>>,
    events_per_second: f64,
    burst_events: f64,
}

#[derive(Debug, Default)]
struct Inner {
    agents: HashMap<String, AgentEntry>,
    /// Streams begun since idle entries were last pruned.
    since_prune: usize,
}

#[derive(Debug)]
struct AgentEntry {
    rate: RateLimit,
    /// Which stream is current; each new one counts up.
    generation: u64,
    /// Tells the current stream when a newer one replaced it.
    current: watch::Sender<u64>,
    /// Whether a stream of this agent is open.
    open: bool,
}

/// Prune idle entries after this many new streams.
const PRUNE_EVERY: usize = 1024;

impl AgentSessions {
    /// Each agent gets `events_per_second` sustained, `burst_events` at once.
    pub fn new(events_per_second: f64, burst_events: f64) -> Self {
        Self {
            inner: Arc::default(),
            events_per_second,
            burst_events,
        }
    }

    /// Makes a new stream `agent_id`'s current one: an older stream of
    /// the same agent is told it was replaced. The budget carries over.
    pub fn begin(&self, agent_id: &str, now: Instant) -> AgentStream {
        let mut inner = self.lock();
        inner.since_prune += 1;
        if inner.since_prune >= PRUNE_EVERY {
            inner.since_prune = 0;
            self.prune(&mut inner, now);
        }
        let entry = inner
            .agents
            .entry(agent_id.to_owned())
            .or_insert_with(|| AgentEntry {
                rate: RateLimit::new(self.events_per_second, self.burst_events, now),
                generation: 0,
                current: watch::channel(0).0,
                open: false,
            });
        entry.generation += 1;
        entry.open = true;
        // An older stream sees the new generation and ends.
        entry.current.send_replace(entry.generation);
        AgentStream {
            sessions: self.clone(),
            agent_id: agent_id.to_owned(),
            generation: entry.generation,
            current: entry.current.subscribe(),
        }
    }

    /// The state; a panic elsewhere while holding it leaves it usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets agents without a stream whose budget has refilled: a fresh
    /// entry would be the same. Keeps the map to the agents seen lately.
    fn prune(&self, inner: &mut Inner, now: Instant) {
        let refill = if self.events_per_second > 0.0 {
            Duration::from_secs_f64(self.burst_events / self.events_per_second)
        } else {
            Duration::ZERO
        };
        inner
            .agents
            .retain(|_, entry| entry.open || entry.rate.idle_for(now) < refill);
    }

    /// Whether `agent_id` is remembered (for tests).
    #[cfg(test)]
    fn remembers(&self, agent_id: &str) -> bool {
        self.lock().agents.contains_key(agent_id)
    }
}

/// One stream's hold on its agent's budget; the stream is no longer the
/// agent's open one once this is dropped.
#[derive(Debug)]
pub struct AgentStream {
    sessions: AgentSessions,
    agent_id: String,
    generation: u64,
    current: watch::Receiver<u64>,
}

impl AgentStream {
    /// Takes `events` from the agent's budget; returns how long the
    /// stream must wait before going on (see [`RateLimit::take`]).
    pub fn take(&self, events: usize, now: Instant) -> Duration {
        match self.sessions.lock().agents.get_mut(&self.agent_id) {
            Some(entry) => entry.rate.take(events, now),
            // Pruned cannot happen while open; be strict anyway.
            None => Duration::from_secs(1),
        }
    }

    /// Returns once a newer stream of the same agent began.
    pub async fn replaced(&mut self) {
        let generation = self.generation;
        // The sender lives as long as the entry, which lives while this
        // stream is open; if it is gone, treat this stream as replaced.
        let _ = self
            .current
            .wait_for(|current| *current != generation)
            .await;
    }
}

impl Drop for AgentStream {
    fn drop(&mut self) {
        if let Some(entry) = self.sessions.lock().agents.get_mut(&self.agent_id)
            && entry.generation == self.generation
        {
            entry.open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_stream_shares_the_agents_budget() {
        let sessions = AgentSessions::new(100.0, 1000.0);
        let now = Instant::now();
        let first = sessions.begin("pc-1", now);
        assert_eq!(first.take(1000, now), Duration::ZERO);
        let second = sessions.begin("pc-1", now);
        assert!(
            second.take(100, now) > Duration::ZERO,
            "the burst was spent by the first stream"
        );
        let other = sessions.begin("pc-2", now);
        assert_eq!(
            other.take(1000, now),
            Duration::ZERO,
            "another agent has its own"
        );
    }

    #[test]
    fn a_reconnect_does_not_refill_the_budget() {
        let sessions = AgentSessions::new(100.0, 1000.0);
        let now = Instant::now();
        let first = sessions.begin("pc-1", now);
        assert_eq!(first.take(1000, now), Duration::ZERO);
        drop(first);
        let again = sessions.begin("pc-1", now + Duration::from_millis(10));
        assert!(again.take(100, now + Duration::from_millis(10)) > Duration::ZERO);
    }

    #[tokio::test]
    async fn a_newer_stream_replaces_the_older() {
        let sessions = AgentSessions::new(100.0, 1000.0);
        let now = Instant::now();
        let mut first = sessions.begin("pc-1", now);
        let mut second = sessions.begin("pc-1", now);
        tokio::time::timeout(Duration::from_secs(1), first.replaced())
            .await
            .expect("the older stream hears it was replaced");
        let still = tokio::time::timeout(Duration::from_millis(50), second.replaced()).await;
        assert!(still.is_err(), "the newest stream is not replaced");
        // The older stream ending does not close the newer one's entry.
        drop(first);
        let _third = sessions.begin("pc-1", now);
        tokio::time::timeout(Duration::from_secs(1), second.replaced())
            .await
            .expect("replaced in turn");
    }

    #[test]
    fn idle_agents_with_a_full_budget_are_forgotten() {
        let sessions = AgentSessions::new(100.0, 1000.0);
        let start = Instant::now();
        drop(sessions.begin("gone", start));
        let open = sessions.begin("open", start);
        let later = start + Duration::from_secs(60);
        for i in 0..PRUNE_EVERY {
            drop(sessions.begin(&format!("pc-{i}"), later));
        }
        assert!(!sessions.remembers("gone"), "refilled long ago: pruned");
        assert!(sessions.remembers("open"), "a stream is open: kept");
        drop(open);
    }
}

//! A token bucket: a burst, then a steady rate. Ingest holds each agent to
//! its event rate with it, enrollment each source address to its attempts,
//! and alerting each channel to its messages per minute.

use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}

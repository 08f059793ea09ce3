//! Retry delays that double up to a cap, for reconnecting to ClickHouse,
//! a collector or an identity provider without hammering it, and the one
//! loop that retries a start-up step until it works, fails for good, or
//! shutdown is asked for.

use std::fmt::Display;
use std::time::Duration;

use tokio::sync::watch;

/// Doubling delays from `first` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { next: first, max }
    }

    /// The delay to wait now; the one after is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// Runs `attempt` until it succeeds (`Ok(Some(value))`), fails with an
/// error `transient` calls lasting (`Err`), or shutdown is asked for while
/// waiting (`Ok(None)`). Each transient failure is logged as `what`, with
/// the delay until the next try.
pub async fn until_ready<T, E, F, Fut>(
    mut backoff: Backoff,
    mut attempt: F,
    transient: impl Fn(&E) -> bool,
    what: &'static str,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<T>, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match attempt().await {
            Ok(value) => return Ok(Some(value)),
            Err(e) if transient(&e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "{what}");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = crate::shutdown::stop_requested(&mut stop) => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(2));
        let delays: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 2000, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_and_stops_on_a_lasting_one_or_shutdown() {
        let (_tx, rx) = crate::shutdown::channel();
        let tries = std::cell::Cell::new(0);
        let ready = until_ready(
            Backoff::new(Duration::from_millis(10), Duration::from_millis(40)),
            || {
                tries.set(tries.get() + 1);
                let n = tries.get();
                async move { if n < 3 { Err("not yet") } else { Ok(n) } }
            },
            |_| true,
            "not ready",
            rx.clone(),
        )
        .await;
        assert_eq!(ready, Ok(Some(3)));
        let lasting: Result<Option<()>, &str> = until_ready(
            Backoff::new(Duration::ZERO, Duration::ZERO),
            || async { Err("bad") },
            |_| false,
            "x",
            rx,
        )
        .await;
        assert_eq!(lasting, Err("bad"));
        let (tx, rx) = crate::shutdown::channel();
        tx.send(true).expect("receiver alive");
        let stopped: Result<Option<()>, &str> = until_ready(
            Backoff::new(Duration::from_secs(60), Duration::from_secs(60)),
            || async { Err("down") },
            |_| true,
            "down",
            rx,
        )
        .await;
        assert_eq!(stopped, Ok(None));
    }
}

//! Shutdown: one signal (SIGTERM or Ctrl-C) turns into one `watch` flag
//! that every task of a binary waits on.

use tokio::sync::watch;

/// Waits for SIGTERM or Ctrl-C. Where SIGTERM cannot be watched, it says
/// so and waits for Ctrl-C alone.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A stop flag and its receiver: `true` once shutdown was asked for.
pub fn channel() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

/// Returns once shutdown was asked for, or the sender is gone.
pub async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Spawns the task that sets `stop` on the first SIGTERM or Ctrl-C.
pub fn stop_on_signal(stop: watch::Sender<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop.send(true);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_or_a_dropped_sender_ends_the_wait() {
        let (tx, mut rx) = channel();
        tx.send(true).expect("receiver alive");
        stop_requested(&mut rx).await;
        let (tx, mut rx) = channel();
        drop(tx);
        stop_requested(&mut rx).await;
    }
}

//! The capture loop: the body of the capture thread. It reads frames from
//! the capture socket (pnet is blocking, so it has an OS thread of its
//! own), decodes them, feeds the [`Stages`], runs their timers every
//! [`TICK_MS`], and picks up policies the uplink received.
//!
//! It owns the capture socket and nothing async: it must not block on the
//! uplink, and it stops when the shared stop flag is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use doorwatch_process::clock::unix_now_ms;
use doorwatch_proto::v1;
use tokio::sync::watch;

use super::stages::Stages;
use crate::capture::{Capture, CaptureError};
use crate::decode;

/// How often timers run in the detector.
pub const TICK_MS: u64 = 200;

/// The capture thread: read, decode, detect, hand events to the uplink.
pub struct CaptureLoop {
    capture: Capture,
    stages: Stages,
    policy: watch::Receiver<Option<v1::Policy>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for CaptureLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureLoop")
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl CaptureLoop {
    /// Runs until `stop` is set; policies arrive on `policy`.
    pub fn new(
        capture: Capture,
        stages: Stages,
        policy: watch::Receiver<Option<v1::Policy>>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            capture,
            stages,
            policy,
            stop,
        }
    }

    /// Captures until the stop flag is set, then closes every open episode
    /// and reports it.
    pub fn run(mut self) -> Result<(), CaptureError> {
        let mut last_tick = unix_now_ms();
        let mut packets = 0u64;
        let mut decode_errors = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let detector = &mut self.stages.detector;
            let mut monitor = self.stages.outbound.as_mut().map(|o| &mut o.monitor);
            self.capture.next_frames(&mut |frame, captured_ms| {
                packets += 1;
                match decode::ethernet(frame) {
                    Ok(Some(packet)) => {
                        detector.observe(&packet, captured_ms);
                        if let Some(m) = monitor.as_mut() {
                            m.observe(&packet, captured_ms);
                        }
                    }
                    Ok(None) => {}
                    Err(_) => decode_errors += 1,
                }
            })?;
            let now = unix_now_ms();
            if now.saturating_sub(last_tick) >= TICK_MS {
                last_tick = now;
                self.flush_counters(packets, decode_errors);
                (packets, decode_errors) = (0, 0);
                self.apply_policy();
                self.stages.detector.tick(now);
                self.stages.forward(now);
                self.stages.outbound_tick(now);
                self.stages.write_status(now, false);
            }
        }
        self.flush_counters(packets, decode_errors);
        self.stages.finish(unix_now_ms());
        let stats = self.stages.detector.stats();
        let counters = &self.stages.counters;
        tracing::info!(
            packets_seen = counters.packets_seen.load(Ordering::Relaxed),
            kernel_drops = counters.kernel_drops.load(Ordering::Relaxed),
            decode_errors = counters.decode_errors.load(Ordering::Relaxed),
            probation_evictions = stats.probation_evictions,
            tracked_evictions = stats.tracked_evictions,
            "capture stopped"
        );
        Ok(())
    }

    /// Applies a policy the uplink received since the last tick.
    fn apply_policy(&mut self) {
        if !self.policy.has_changed().unwrap_or(false) {
            return;
        }
        let Some(policy) = self.policy.borrow_and_update().clone() else {
            return;
        };
        self.stages.apply_policy(&policy);
    }

    /// Adds the capture thread's local counts to the shared counters.
    fn flush_counters(&self, packets: u64, decode_errors: u64) {
        let c = &self.stages.counters;
        c.packets_seen.fetch_add(packets, Ordering::Relaxed);
        c.decode_errors.fetch_add(decode_errors, Ordering::Relaxed);
        c.kernel_drops
            .fetch_add(self.capture.take_kernel_drops(), Ordering::Relaxed);
    }
}

//! Everything the capture thread does with a decoded packet after capture:
//! detection, outbound monitoring, the policy in force, the status file,
//! and handing events to the uplink's queue. Kept apart from the capture
//! socket so that it can be driven (and tested) with packets and reports
//! directly.
//!
//! It must not block: events go to the uplink with `try_send`, and a full
//! queue drops the event (counted), never waits.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use doorwatch_proto::v1;
use tokio::sync::mpsc;

use super::outbound_loop::OutboundLoop;
use super::policy;
use crate::detect::{Detector, DetectorConfig};
use crate::events::EventBuilder;
use crate::explain;
use crate::findings::{EpisodeReport, EpisodeState, Report};
use crate::outbound::{OutboundReport, inventory};
use crate::status::Status;
use crate::uplink::Counters;

/// Detection, outbound monitoring and delivery to the uplink's queue.
#[derive(Debug)]
pub struct Stages {
    pub(super) detector: Detector,
    /// Outbound accounting and anomalies; `None` when turned off.
    pub(super) outbound: Option<OutboundLoop>,
    /// What `doorwatch-agent status` shows, written every few seconds.
    pub(super) status: Status,
    status_path: PathBuf,
    status_written_ms: u64,
    /// Scan episodes already told to have reached a risky exposure.
    exposed_episodes: HashSet<u64>,
    /// The configured thresholds; a pushed policy overrides them.
    base: DetectorConfig,
    builder: EventBuilder,
    events: mpsc::Sender<v1::Event>,
    pub(super) counters: Arc<Counters>,
}

impl Stages {
    /// `detector` runs with the configured thresholds `base` until a policy
    /// arrives; events go to `events`.
    pub fn new(
        detector: Detector,
        outbound: Option<OutboundLoop>,
        status: Status,
        status_path: PathBuf,
        events: mpsc::Sender<v1::Event>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            base: detector.config().clone(),
            detector,
            outbound,
            status,
            status_path,
            status_written_ms: 0,
            exposed_episodes: HashSet::new(),
            builder: EventBuilder::default(),
            events,
            counters,
        }
    }

    /// Runs detection with `policy` merged over the configured thresholds.
    pub fn apply_policy(&mut self, policy: &v1::Policy) {
        self.detector.set_config(policy::merge(&self.base, policy));
        self.counters
            .policy_version
            .store(policy.version, Ordering::Relaxed);
        tracing::info!(version = policy.version, "applied policy");
    }

    /// Writes the status file every 5 s (or now, if `force`).
    pub fn write_status(&mut self, now: u64, force: bool) {
        if !force && now.saturating_sub(self.status_written_ms) < 5_000 {
            return;
        }
        self.status_written_ms = now;
        let c = &self.counters;
        self.status.updated_ms = now;
        self.status.packets_seen = c.packets_seen.load(Ordering::Relaxed);
        self.status.kernel_drops = c.kernel_drops.load(Ordering::Relaxed);
        self.status.events_created = c.events_created.load(Ordering::Relaxed);
        self.status.events_dropped = c.events_dropped.load(Ordering::Relaxed);
        if let Err(e) = self.status.write(&self.status_path) {
            tracing::debug!(error = %e, path = %self.status_path.display(), "cannot write the status file");
        }
    }

    /// Runs the outbound monitor's timers, reads procfs when it needs
    /// owners or the inventory is due, and hands its events on.
    pub fn outbound_tick(&mut self, now: u64) {
        let Some(o) = self.outbound.as_mut() else {
            return;
        };
        let mut events = o.tick(now);
        o.save_baseline(now, false);
        for risk in o.new_risks.drain(..) {
            self.status.record(now, "risky open port", &risk);
        }
        for report in o.monitor.drain_reports() {
            if let OutboundReport::Anomaly(a) = &report
                && a.state == EpisodeState::Detected
            {
                tracing::warn!(kind = ?a.kind, process = a.process.as_ref().map(|p| p.name.as_str()).unwrap_or("unknown"), explanation = %a.explanation, "outbound anomaly");
                self.status
                    .record(now, "suspicious traffic from this PC", &a.explanation);
            }
            events.push(self.builder.outbound_event(&report, now));
        }
        for event in events {
            self.send(event);
        }
    }

    /// Hands the detector's reports on as events.
    pub fn forward(&mut self, now: u64) {
        let reports: Vec<Report> = self.detector.drain_reports().collect();
        self.forward_reports(reports, now);
    }

    /// Hands `reports` on as events: marks the exposures scans reached,
    /// tells the log and the status file about new findings.
    pub fn forward_reports(&mut self, reports: Vec<Report>, now: u64) {
        for mut report in reports {
            if let Report::Scan(scan) = &mut report {
                self.mark_exposures(scan, now);
            }
            match &report {
                Report::Scan(scan) if scan.state == EpisodeState::Detected => {
                    tracing::info!(scanner = %scan.scanner, target = %scan.target, kinds = ?scan.kinds, ports = scan.ports_probed, "scan detected");
                    self.status
                        .record(now, "scan of this PC", &scan.explanation);
                }
                Report::Flood(flood) if flood.state == EpisodeState::Detected => {
                    tracing::warn!(target = %flood.target, sources = flood.sources, "flood detected");
                    self.status
                        .record(now, "flood against this PC", &flood.explanation);
                }
                Report::Knocks(knocks) => {
                    tracing::debug!(
                        knocks = knocks.knocks.len(),
                        unlisted = knocks.unlisted,
                        "single tries at closed ports"
                    );
                }
                _ => {}
            }
            let event = self.builder.event(&report, now);
            self.send(event);
        }
    }

    /// Queues one event for the uplink, counting it; a full queue drops it.
    fn send(&self, event: v1::Event) {
        self.counters.events_created.fetch_add(1, Ordering::Relaxed);
        if self.events.try_send(event).is_err() {
            self.counters.dropped(&self.counters.dropped_queue_full, 1);
            tracing::warn!("event queue full; dropped an event");
        }
    }

    /// Names the risky exposures of this PC (from the listening-port
    /// inventory) that a scan found open, which makes the episode high
    /// severity, and tells the log and status file once per episode.
    pub fn mark_exposures(&mut self, scan: &mut EpisodeReport, now: u64) {
        let Some(listeners) = self.outbound.as_ref().and_then(|o| o.listeners.as_deref()) else {
            return;
        };
        scan.exposed = inventory::exposures(listeners, scan.target, &scan.open_ports);
        let closed = scan.state == EpisodeState::Closed;
        if scan.exposed.is_empty() {
            if closed {
                self.exposed_episodes.remove(&scan.episode);
            }
            return;
        }
        scan.explanation = explain::scan(scan);
        if closed {
            self.exposed_episodes.remove(&scan.episode);
        } else if self.exposed_episodes.insert(scan.episode) {
            let ports: Vec<u16> = scan.exposed.iter().map(|e| e.port).collect();
            tracing::warn!(scanner = %scan.scanner, target = %scan.target, ?ports, "scan reached a risky open port");
            self.status
                .record(now, "scan reached a risky open port", &scan.explanation);
        }
    }

    /// Closes everything open (shutdown) and hands the closing reports on.
    pub fn finish(&mut self, now: u64) {
        self.detector.finish();
        self.forward(now);
        if let Some(o) = self.outbound.as_mut() {
            o.monitor.finish(now);
            o.save_baseline(now, true);
        }
        self.outbound_tick(now);
        self.write_status(now, true);
    }
}

#[cfg(test)]
#[path = "stages_tests.rs"]
mod tests;

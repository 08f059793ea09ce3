//! Outbound traffic: who on this PC sends what, where, and whether it looks
//! like malware. A pure state machine like the scan detector: decoded
//! packets and timestamps go in, with the socket owners that the runtime
//! reads from procfs (see [`crate::procfs`]); flow summaries and anomaly
//! reports come out. No I/O and no clock reads.
//!
//! - **Accounting** (`flows.rs`): bytes and packets each way per process,
//!   remote address, remote port and protocol, summarised every minute.
//! - **Anomalies** (`anomaly.rs`): an upload far above this PC's baseline;
//!   outbound scanning (many ports of one host, found by the scan detector
//!   with the roles reversed, or one port of many hosts); SMTP fan-out; a
//!   high share of failed connections.
//! - **Listening ports** (`inventory.rs`): what this PC exposes, with
//!   risky exposures named.
//!
//! A packet has no owner until the next procfs refresh has seen its socket,
//! so reports wait for [`Monitor::attribute`]: the runtime refreshes when
//! [`Monitor::needs_owners`] says so, then attributes, then drains.

//!
//! This file wires the parts into the [`Monitor`]; the thresholds live in
//! `config.rs`, the owner lookup in `owners.rs` and the anomaly report
//! types in [`crate::findings`] (re-exported here for the old paths).

mod anomaly;
mod config;
mod flows;
pub mod inventory;
mod owners;

use std::net::IpAddr;

pub use anomaly::Baseline;
pub use config::OutboundConfig;
pub use flows::{FlowMinute, FlowRow, ProcessRate};
pub use owners::{Owners, SharedProcess};

use crate::decode::Packet;
pub use crate::findings::{AnomalyKind, AnomalyReport};

/// What the monitor reports.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundReport {
    Flows(FlowMinute),
    Anomaly(AnomalyReport),
}

/// The outbound monitor of one PC.
#[derive(Debug)]
pub struct Monitor {
    local: Vec<IpAddr>,
    flows: flows::Flows,
    anomalies: anomaly::Anomalies,
    /// Reports made but not yet attributed.
    pending: Vec<OutboundReport>,
    ready: Vec<OutboundReport>,
}

impl Monitor {
    pub fn new(config: OutboundConfig, local: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut local: Vec<IpAddr> = local.into_iter().collect();
        local.sort_unstable();
        local.dedup();
        Self {
            anomalies: anomaly::Anomalies::new(config, local.clone()),
            flows: flows::Flows::default(),
            local,
            pending: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// What the upload baseline has learned, to keep across restarts.
    pub fn baseline(&self) -> Baseline {
        self.anomalies.baseline()
    }

    /// Starts from a baseline saved by an earlier run.
    pub fn restore_baseline(&mut self, learned: Baseline) {
        self.anomalies.restore_baseline(learned);
    }

    /// Feeds one packet seen at `now_ms`.
    pub fn observe(&mut self, packet: &Packet, now_ms: u64) {
        let src_local = self.local.contains(&packet.src);
        let dst_local = self.local.contains(&packet.dst);
        if src_local == dst_local {
            return;
        }
        self.flows.observe(packet, src_local, now_ms);
        self.anomalies.observe(packet, src_local, now_ms);
    }

    /// Advances time: closes minutes, runs the anomaly checks.
    pub fn tick(&mut self, now_ms: u64) {
        if let Some(minute) = self.flows.tick(now_ms) {
            self.pending.push(OutboundReport::Flows(minute));
        }
        let uploads = self.flows.uploads();
        for report in self.anomalies.tick(now_ms, &uploads) {
            self.pending.push(OutboundReport::Anomaly(report));
        }
    }

    /// Whether flows or reports wait for owners: the runtime should read
    /// procfs and call [`Monitor::attribute`].
    pub fn needs_owners(&self) -> bool {
        self.flows.has_unowned() || !self.pending.is_empty()
    }

    /// Names the owners of new flows, then readies the waiting reports.
    /// Returns how many new flows there were and how many got an owner.
    pub fn attribute(&mut self, owners: &dyn Owners) -> (usize, usize) {
        let counts = self.flows.attribute(owners);
        for mut report in self.pending.drain(..) {
            match &mut report {
                OutboundReport::Flows(minute) => self.flows.name_rows(minute),
                OutboundReport::Anomaly(anomaly) => {
                    if anomaly.process.is_none() {
                        anomaly.process = self.flows.main_sender(anomaly.remote, anomaly.port);
                    }
                    anomaly.explanation = crate::explain::outbound(anomaly);
                }
            }
            self.ready.push(report);
        }
        counts
    }

    /// Takes the attributed reports.
    pub fn drain_reports(&mut self) -> std::vec::Drain<'_, OutboundReport> {
        self.ready.drain(..)
    }

    /// Closes everything open now (shutdown): open anomalies and the
    /// current minute. Call [`Monitor::attribute`] afterwards.
    pub fn finish(&mut self, now_ms: u64) {
        if let Some(minute) = self.flows.finish(now_ms) {
            self.pending.push(OutboundReport::Flows(minute));
        }
        for report in self.anomalies.finish(now_ms) {
            self.pending.push(OutboundReport::Anomaly(report));
        }
    }

    /// Live send and receive rates per process over the last seconds, for
    /// `doorwatch-agent top`.
    pub fn rates(&self, now_ms: u64) -> Vec<ProcessRate> {
        self.flows.rates(now_ms)
    }
}

#[cfg(test)]
mod tests;

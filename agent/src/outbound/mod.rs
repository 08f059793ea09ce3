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

mod anomaly;
mod flows;
pub mod inventory;

use std::net::IpAddr;
use std::sync::Arc;

pub use anomaly::{AnomalyKind, AnomalyReport, Baseline};
pub use flows::{FlowMinute, FlowRow, ProcessRate};

use crate::decode::Packet;
use crate::procfs::{Process, Snapshot};

/// Thresholds of outbound detection. Defaults are documented in
/// `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundConfig {
    /// Sliding window over which uploads are summed.
    pub upload_window_ms: u64,
    /// Bytes to one destination within the window that are always worth a
    /// report, whatever the baseline.
    pub upload_min_bytes: u64,
    /// How many times this PC's usual rate (per hour of day) an upload
    /// must reach to be reported once the baseline exists.
    pub upload_baseline_factor: u64,
    /// Distinct hosts that refused or ignored connections to one port within
    /// `scan_window_ms`: worm-like scanning.
    pub scan_min_hosts: u32,
    /// Distinct ports of one host probed (net refused): the scan detector's
    /// threshold, with the roles reversed.
    pub scan_min_ports: u32,
    pub scan_window_ms: u64,
    /// Distinct hosts contacted on port 25 within `smtp_window_ms`.
    pub smtp_min_hosts: u32,
    pub smtp_window_ms: u64,
    /// Connections opened within `failed_window_ms`, and the share of them
    /// that failed (percent), that make a failed-connections anomaly.
    pub failed_min_attempts: u32,
    pub failed_min_percent: u32,
    pub failed_window_ms: u64,
    /// Quiet milliseconds that close an anomaly.
    pub idle_close_ms: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            upload_window_ms: 10 * 60_000,
            upload_min_bytes: 100 << 20,
            upload_baseline_factor: 10,
            scan_min_hosts: 20,
            scan_min_ports: 4,
            scan_window_ms: 60_000,
            smtp_min_hosts: 20,
            smtp_window_ms: 10 * 60_000,
            failed_min_attempts: 50,
            failed_min_percent: 50,
            failed_window_ms: 5 * 60_000,
            idle_close_ms: 10_000,
        }
    }
}

/// What the monitor reports.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundReport {
    Flows(FlowMinute),
    Anomaly(AnomalyReport),
}

/// Finds socket owners. Implemented by a procfs [`Snapshot`]; tests use
/// fakes.
pub trait Owners {
    /// The process owning this PC's socket `local_port` talking to
    /// `remote`:`remote_port` over `protocol` (6 or 17).
    fn owner(
        &self,
        protocol: u8,
        local: IpAddr,
        local_port: u16,
        remote: IpAddr,
        remote_port: u16,
    ) -> Option<Process>;
    /// The process sending raw packets (raw or packet sockets), if exactly
    /// one holds such sockets.
    fn raw_sender(&self) -> Option<Process>;
}

impl Owners for Snapshot {
    fn owner(
        &self,
        protocol: u8,
        local: IpAddr,
        local_port: u16,
        remote: IpAddr,
        remote_port: u16,
    ) -> Option<Process> {
        let protocol = match protocol {
            6 => crate::procfs::Protocol::Tcp,
            17 => crate::procfs::Protocol::Udp,
            _ => return None,
        };
        Snapshot::owner(
            self,
            protocol,
            std::net::SocketAddr::new(local, local_port),
            std::net::SocketAddr::new(remote, remote_port),
        )
        .cloned()
    }

    fn raw_sender(&self) -> Option<Process> {
        // The agent's own capture socket is a packet socket: never itself.
        let me = std::process::id();
        let mut names: Vec<&Process> = self.raw_owners.iter().filter(|p| p.pid != me).collect();
        names.sort_by_key(|p| p.pid);
        names.dedup_by_key(|p| p.pid);
        match names.as_slice() {
            [one] => Some((*one).clone()),
            _ => None,
        }
    }
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

/// A process shared between many flows.
pub type SharedProcess = Arc<Process>;

#[cfg(test)]
mod tests;

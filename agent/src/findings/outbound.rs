//! The report of an outbound anomaly (an upload far above the baseline,
//! outbound scanning, SMTP fan-out, failed connections). Plain data; the
//! outbound monitor fills it.

use std::net::IpAddr;

use super::scan::EpisodeState;
use crate::procfs::Process;

/// What an anomaly is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    UploadVolume,
    /// Many ports of one host (`remote` set) or one port of many hosts.
    Scan,
    SmtpFanout,
    FailedConnections,
}

/// One report of an outbound anomaly.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyReport {
    pub episode: u64,
    pub state: EpisodeState,
    pub kind: AnomalyKind,
    pub process: Option<Process>,
    /// The one remote host concerned, if there is one.
    pub remote: Option<IpAddr>,
    /// The one remote port concerned, or 0.
    pub port: u16,
    pub hosts: u32,
    pub ports: u32,
    pub bytes_out: u64,
    /// Usual bytes per hour at this hour of day; 0 before a baseline exists.
    pub baseline_per_hour: u64,
    pub attempts: u32,
    pub failed: u32,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub host_sample: Vec<IpAddr>,
    pub port_sample: Vec<u16>,
    /// The window the counts cover (for the explanation).
    pub window_ms: u64,
    pub explanation: String,
}

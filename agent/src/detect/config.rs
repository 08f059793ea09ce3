//! The detector's thresholds ([`DetectorConfig`]): a leaf that every part
//! of detection reads and none of them writes. No I/O; parsing and checking
//! the configuration file is `crate::config`'s job.

use std::collections::HashSet;
use std::net::IpAddr;

/// Detection thresholds. Defaults are documented in `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// Net refused first contacts (refused minus accepted) that decide a
    /// scan: the TRW decision threshold.
    pub scan_min_ports: u32,
    /// Distinct first-contact ports with no answer at all that also decide
    /// a scan (a PC whose firewall drops probes silently).
    pub blind_min_ports: u32,
    /// Distinct ports hit by stealth probes that decide a scan.
    pub stealth_min_ports: u32,
    /// Distinct unusual IP protocols that decide an IP-protocol scan.
    pub ip_proto_min: u32,
    /// Milliseconds of silence after which an episode is closed. Slow
    /// scans stretch this to four times their own probe interval.
    pub episode_idle_ms: u64,
    /// Milliseconds after which a source that was never decided is forgotten.
    pub undecided_idle_ms: u64,
    /// Least milliseconds between two reports of one active episode.
    pub update_interval_ms: u64,
    /// Memory for detection state, in bytes.
    pub memory_budget: usize,
    /// New sources per second towards one address that make a flood.
    pub flood_new_sources_per_sec: u32,
    /// Milliseconds between two reports of knocks (single tries at
    /// closed ports); 0 turns knock reports off.
    pub knock_report_ms: u64,
    /// Sources never reported (campus scanners, monitoring).
    pub allowlist: HashSet<IpAddr>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            scan_min_ports: 4,
            blind_min_ports: 25,
            stealth_min_ports: 4,
            ip_proto_min: 4,
            episode_idle_ms: 60_000,
            undecided_idle_ms: 15 * 60_000,
            update_interval_ms: 2_000,
            memory_budget: 16 << 20,
            flood_new_sources_per_sec: 1_000,
            knock_report_ms: 5_000,
            allowlist: HashSet::new(),
        }
    }
}

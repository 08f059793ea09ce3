//! The outbound monitor's thresholds ([`OutboundConfig`]): a leaf read by
//! every part of outbound monitoring. No I/O; the configuration file is
//! `crate::config`'s job.

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

//! `agent.toml`: what the agent watches, where it reports, and how it
//! decides. [`AgentConfig::load`] reads and parses; [`AgentConfig::validate`]
//! is pure and names the field at fault.

use doorwatch_process::secret::Secret;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::detect::DetectorConfig;
use crate::outbound::OutboundConfig;

/// The whole file. Unknown fields are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Network interface to watch, e.g. "eth0".
    pub interface: String,
    /// This PC's addresses. Empty: the interface's own addresses.
    #[serde(default)]
    pub local_ips: Vec<IpAddr>,
    /// The collector to report to.
    pub collector: CollectorConfig,
    /// Detection thresholds.
    #[serde(default)]
    pub detection: DetectionConfig,
    /// Delivery tuning.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Outbound traffic: accounting per process and anomaly thresholds.
    #[serde(default)]
    pub outbound: OutboundSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundSection {
    /// Account outbound traffic per process and look for anomalies.
    pub enabled: bool,
    /// Minutes over which uploads to one destination are summed.
    pub upload_window_minutes: u32,
    /// MiB to one destination within the window that are always reported.
    pub upload_min_mib: u32,
    /// Times this PC's usual hourly upload (per hour of day) that an
    /// upload must reach once the PC has a baseline.
    pub upload_baseline_factor: u32,
    /// Distinct hosts refusing or ignoring one port within a minute that
    /// make worm-like scanning.
    pub scan_min_hosts: u32,
    /// Distinct mail servers (port 25) within 10 minutes that make SMTP
    /// fan-out.
    pub smtp_min_hosts: u32,
    /// Connections within 5 minutes, and the percentage of them failing,
    /// that make a failed-connections anomaly.
    pub failed_min_attempts: u32,
    pub failed_min_percent: u32,
    /// Seconds between checks of the listening ports.
    pub inventory_seconds: u32,
}

impl Default for OutboundSection {
    fn default() -> Self {
        let d = OutboundConfig::default();
        Self {
            enabled: true,
            upload_window_minutes: (d.upload_window_ms / 60_000) as u32,
            upload_min_mib: (d.upload_min_bytes >> 20) as u32,
            upload_baseline_factor: d.upload_baseline_factor as u32,
            scan_min_hosts: d.scan_min_hosts,
            smtp_min_hosts: d.smtp_min_hosts,
            failed_min_attempts: d.failed_min_attempts,
            failed_min_percent: d.failed_min_percent,
            inventory_seconds: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// host:port of the collector (a DNS name or an IP).
    pub address: String,
    /// Name expected in the collector's certificate. Default: the host part
    /// of `address`.
    pub server_name: Option<String>,
    /// PEM bundle of the CA that signed the collector's certificate.
    pub ca: PathBuf,
    /// This agent's client certificate (PEM). Written by enrollment and
    /// renewal.
    pub cert: PathBuf,
    /// This agent's private key (PEM, mode 0600). Made on this PC by
    /// enrollment and renewal; it never leaves it.
    pub key: PathBuf,
    /// Bootstrap token (`doorwatch-collector token create`). When set, the
    /// agent enrolls by itself on first start, and again if its
    /// certificate has expired. Keep this file readable by root only.
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// Net refused first contacts (refused minus accepted ports) that make
    /// a scanner: the sequential test's decision threshold.
    pub scan_min_ports: u32,
    /// Distinct unanswered ports that also make a scanner (firewalled PC).
    pub blind_min_ports: u32,
    /// Distinct ports hit by stealth probes (FIN, NULL, Xmas, ACK, Maimon)
    /// that make a scanner.
    pub stealth_min_ports: u32,
    /// Distinct unusual IP protocols that make an IP-protocol scan.
    pub ip_proto_min: u32,
    /// Seconds without probes after which a scan episode is closed.
    pub episode_idle_seconds: u32,
    /// Least seconds between two updates of one ongoing scan.
    pub update_interval_seconds: u32,
    /// Memory for detection state, in MiB. A spoofed flood cannot push out
    /// real scanners; when full, the sources with least evidence go first.
    pub memory_budget_mib: u32,
    /// New source addresses per second towards one address of this PC that
    /// are reported as a flood.
    pub flood_new_sources_per_sec: u32,
    /// Seconds between two reports of single tries at closed ports
    /// ("knocks"), which the collector needs to see sweeps and botnets that
    /// try each PC only once. 0 turns them off.
    pub knock_report_seconds: u32,
    /// Sources never reported, e.g. the campus vulnerability scanner.
    pub allowlisted_sources: Vec<IpAddr>,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        let d = DetectorConfig::default();
        Self {
            scan_min_ports: d.scan_min_ports,
            blind_min_ports: d.blind_min_ports,
            stealth_min_ports: d.stealth_min_ports,
            ip_proto_min: d.ip_proto_min,
            episode_idle_seconds: (d.episode_idle_ms / 1000) as u32,
            update_interval_seconds: (d.update_interval_ms / 1000) as u32,
            memory_budget_mib: (d.memory_budget >> 20) as u32,
            flood_new_sources_per_sec: d.flood_new_sources_per_sec,
            knock_report_seconds: (d.knock_report_ms / 1000) as u32,
            allowlisted_sources: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Seconds between heartbeats.
    pub heartbeat_seconds: u32,
    /// Folder where events wait, on disk, until the collector has stored
    /// them (created with mode 0700).
    pub spool_dir: PathBuf,
    /// Size cap of the spool in MiB; beyond it the oldest events are
    /// dropped and counted in heartbeats.
    pub spool_max_mib: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            heartbeat_seconds: 30,
            spool_dir: PathBuf::from("/var/lib/doorwatch/spool"),
            spool_max_mib: 256,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub interface: String,
    pub local_ips: Vec<IpAddr>,
    pub collector_address: String,
    pub server_name: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub token: Option<Secret>,
    pub detector: DetectorConfig,
    pub heartbeat: Duration,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// `None` when outbound monitoring is off.
    pub outbound: Option<OutboundConfig>,
    pub inventory_every: Duration,
}

/// A configuration problem, naming the file or the field: the error type
/// every doorwatch binary shares.
pub use doorwatch_process::config::ConfigError;

fn invalid(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::invalid(field, problem)
}

impl AgentConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        doorwatch_process::config::load_toml(path)
    }

    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        if self.interface.trim().is_empty() {
            return Err(invalid("interface", "must name a network interface"));
        }
        let address = self.collector.address;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| invalid("collector.address", format!("{address:?} is not host:port")))?;
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(invalid(
                "collector.address",
                format!("{port:?} is not a port"),
            ));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("collector.address", "host is empty"));
        }
        let server_name = self
            .collector
            .server_name
            .unwrap_or_else(|| host.to_owned());
        if rustls::pki_types::ServerName::try_from(server_name.as_str()).is_err() {
            return Err(invalid(
                "collector.server_name",
                format!("{server_name:?} is not a DNS name or IP address"),
            ));
        }
        let token = match self.collector.token {
            Some(t) if t.trim().is_empty() => {
                return Err(invalid(
                    "collector.token",
                    "is empty; remove it or paste the token",
                ));
            }
            Some(t) => Some(Secret::from(t.trim())),
            None => None,
        };
        let d = self.detection;
        if d.scan_min_ports == 0 {
            return Err(invalid("detection.scan_min_ports", "must be at least 1"));
        }
        if d.blind_min_ports < d.scan_min_ports {
            return Err(invalid(
                "detection.blind_min_ports",
                "must be at least detection.scan_min_ports",
            ));
        }
        if d.episode_idle_seconds == 0 {
            return Err(invalid(
                "detection.episode_idle_seconds",
                "must be at least 1",
            ));
        }
        if d.stealth_min_ports == 0 {
            return Err(invalid("detection.stealth_min_ports", "must be at least 1"));
        }
        if d.ip_proto_min == 0 {
            return Err(invalid("detection.ip_proto_min", "must be at least 1"));
        }
        if !(1..=4096).contains(&d.memory_budget_mib) {
            return Err(invalid("detection.memory_budget_mib", "must be 1 to 4096"));
        }
        if d.flood_new_sources_per_sec < 10 {
            return Err(invalid(
                "detection.flood_new_sources_per_sec",
                "must be at least 10",
            ));
        }
        if self.delivery.heartbeat_seconds == 0 {
            return Err(invalid("delivery.heartbeat_seconds", "must be at least 1"));
        }
        if self.delivery.spool_max_mib < 4 {
            return Err(invalid("delivery.spool_max_mib", "must be at least 4"));
        }
        if self.delivery.spool_dir.as_os_str().is_empty() {
            return Err(invalid("delivery.spool_dir", "must name a folder"));
        }
        let o = &self.outbound;
        for (field, value, least) in [
            ("outbound.upload_window_minutes", o.upload_window_minutes, 1),
            ("outbound.upload_min_mib", o.upload_min_mib, 1),
            (
                "outbound.upload_baseline_factor",
                o.upload_baseline_factor,
                2,
            ),
            ("outbound.scan_min_hosts", o.scan_min_hosts, 3),
            ("outbound.smtp_min_hosts", o.smtp_min_hosts, 3),
            ("outbound.failed_min_attempts", o.failed_min_attempts, 5),
            ("outbound.inventory_seconds", o.inventory_seconds, 1),
        ] {
            if value < least {
                return Err(invalid(field, format!("must be at least {least}")));
            }
        }
        if !(1..=100).contains(&o.failed_min_percent) {
            return Err(invalid("outbound.failed_min_percent", "must be 1 to 100"));
        }
        let outbound = o.enabled.then(|| OutboundConfig {
            upload_window_ms: u64::from(o.upload_window_minutes) * 60_000,
            upload_min_bytes: u64::from(o.upload_min_mib) << 20,
            upload_baseline_factor: u64::from(o.upload_baseline_factor),
            scan_min_hosts: o.scan_min_hosts,
            smtp_min_hosts: o.smtp_min_hosts,
            failed_min_attempts: o.failed_min_attempts,
            failed_min_percent: o.failed_min_percent,
            ..OutboundConfig::default()
        });
        let inventory_every = Duration::from_secs(u64::from(o.inventory_seconds));
        Ok(ValidConfig {
            interface: self.interface,
            local_ips: self.local_ips,
            collector_address: address,
            server_name,
            ca: self.collector.ca,
            cert: self.collector.cert,
            key: self.collector.key,
            token,
            detector: DetectorConfig {
                scan_min_ports: d.scan_min_ports,
                blind_min_ports: d.blind_min_ports,
                stealth_min_ports: d.stealth_min_ports,
                ip_proto_min: d.ip_proto_min,
                episode_idle_ms: u64::from(d.episode_idle_seconds) * 1000,
                update_interval_ms: u64::from(d.update_interval_seconds) * 1000,
                memory_budget: (d.memory_budget_mib as usize) << 20,
                flood_new_sources_per_sec: d.flood_new_sources_per_sec,
                knock_report_ms: u64::from(d.knock_report_seconds) * 1000,
                allowlist: d.allowlisted_sources.into_iter().collect::<HashSet<_>>(),
                ..DetectorConfig::default()
            },
            heartbeat: Duration::from_secs(u64::from(self.delivery.heartbeat_seconds)),
            spool_dir: self.delivery.spool_dir,
            spool_max_bytes: u64::from(self.delivery.spool_max_mib) << 20,
            outbound,
            inventory_every,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        interface = "eth0"
        [collector]
        address = "collector.campus.example:4443"
        ca = "ca.pem"
        cert = "agent.pem"
        key = "agent.key"
    "#;

    fn check(text: &str) -> Result<ValidConfig, String> {
        AgentConfig::parse(text)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = check(GOOD).expect("valid");
        assert_eq!(config.server_name, "collector.campus.example");
        assert_eq!(config.detector, DetectorConfig::default());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (GOOD.replace(":4443", ""), "collector.address"),
            (GOOD.replace(":4443", ":0"), "collector.address"),
            (
                format!("{GOOD}[detection]\nscan_min_ports = 0\n"),
                "detection.scan_min_ports",
            ),
            (
                format!("{GOOD}[detection]\nscan_min_port = 3\n"),
                "scan_min_port",
            ),
            (
                GOOD.replace("interface = \"eth0\"", "interface = 7"),
                "interface",
            ),
            (GOOD.replace("interface = \"eth0\"", ""), "interface"),
            (
                format!("{GOOD}[delivery]\nheartbeat_seconds = 0\n"),
                "delivery.heartbeat_seconds",
            ),
        ];
        for (text, field) in cases {
            let err = check(&text).expect_err(field);
            assert!(err.contains(field), "{err:?} should name {field}");
        }
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/agent.toml");
        AgentConfig::load(Path::new(path))
            .expect("deploy/agent.toml parses")
            .validate()
            .expect("deploy/agent.toml is valid");
    }
}

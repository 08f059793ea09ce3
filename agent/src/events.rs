//! Turns detector reports into wire events: gives each event a fresh
//! UUIDv7 and each episode a stable one.

use std::collections::HashMap;
use std::net::IpAddr;

use doorwatch_proto::v1;

use crate::detect::{EpisodeReport, EpisodeState, ScanKind};

/// Keeps the episode → UUID mapping for open episodes.
#[derive(Debug, Default)]
pub struct EventBuilder {
    episodes: HashMap<u64, uuid::Uuid>,
}

impl EventBuilder {
    /// The wire event for `report`, created at `now_ms`.
    pub fn scan_event(&mut self, report: &EpisodeReport, now_ms: u64) -> v1::Event {
        let episode_id = *self
            .episodes
            .entry(report.episode)
            .or_insert_with(uuid::Uuid::now_v7);
        if report.state == EpisodeState::Closed {
            self.episodes.remove(&report.episode);
        }
        v1::Event {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            created_unix_ms: to_i64(now_ms),
            detail: Some(v1::event::Detail::Scan(v1::ScanDetected {
                episode_id: episode_id.as_bytes().to_vec(),
                state: match report.state {
                    EpisodeState::Detected => v1::EpisodeState::Detected,
                    EpisodeState::Active => v1::EpisodeState::Active,
                    EpisodeState::Closed => v1::EpisodeState::Closed,
                } as i32,
                scanner_ip: ip_bytes(report.scanner),
                target_ip: ip_bytes(report.target),
                scan_types: report
                    .kinds
                    .iter()
                    .map(|kind| match kind {
                        ScanKind::Syn => v1::ScanType::Syn as i32,
                    })
                    .collect(),
                ports_probed: report.ports_probed,
                port_sample: report.port_sample.iter().map(|&p| u32::from(p)).collect(),
                open_ports: report
                    .open_ports
                    .iter()
                    .take(1024)
                    .map(|&p| u32::from(p))
                    .collect(),
                probes: report.probes,
                first_seen_unix_ms: to_i64(report.first_seen_ms),
                last_seen_unix_ms: to_i64(report.last_seen_ms),
                confidence: u32::from(report.confidence),
                explanation: report.explanation.clone(),
            })),
        }
    }
}

fn to_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// 4 bytes for IPv4, 16 for IPv6, as the wire contract says.
pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

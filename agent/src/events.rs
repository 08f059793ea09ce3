//! Turns detector reports into wire events: gives each event a fresh
//! UUIDv7 and each episode a stable one.

use std::collections::HashMap;
use std::net::IpAddr;

use doorwatch_proto::v1;

use crate::detect::{EpisodeReport, EpisodeState, FloodReport, KnockReport, Report, ScanKind};

/// Most companions sent with one episode.
const MAX_COMPANIONS: usize = 64;

/// Keeps the episode → UUID mapping for open episodes.
#[derive(Debug, Default)]
pub struct EventBuilder {
    episodes: HashMap<u64, uuid::Uuid>,
}

impl EventBuilder {
    /// The wire event for `report`, created at `now_ms`.
    pub fn event(&mut self, report: &Report, now_ms: u64) -> v1::Event {
        let detail = match report {
            Report::Scan(scan) => {
                let episode_id = self.episode_id(scan.episode, scan.state);
                v1::event::Detail::Scan(scan_detail(scan, episode_id))
            }
            Report::Flood(flood) => {
                let episode_id = self.episode_id(flood.episode, flood.state);
                v1::event::Detail::Flood(flood_detail(flood, episode_id))
            }
            Report::Knocks(knocks) => v1::event::Detail::Knocks(knocks_detail(knocks)),
        };
        v1::Event {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            created_unix_ms: to_i64(now_ms),
            detail: Some(detail),
        }
    }

    fn episode_id(&mut self, episode: u64, state: EpisodeState) -> uuid::Uuid {
        let id = *self
            .episodes
            .entry(episode)
            .or_insert_with(uuid::Uuid::now_v7);
        if state == EpisodeState::Closed {
            self.episodes.remove(&episode);
        }
        id
    }
}

fn state(state: EpisodeState) -> i32 {
    let state = match state {
        EpisodeState::Detected => v1::EpisodeState::Detected,
        EpisodeState::Active => v1::EpisodeState::Active,
        EpisodeState::Closed => v1::EpisodeState::Closed,
    };
    state as i32
}

/// The wire value of a scan type.
pub fn scan_type(kind: ScanKind) -> v1::ScanType {
    match kind {
        ScanKind::Syn => v1::ScanType::Syn,
        ScanKind::Connect => v1::ScanType::Connect,
        ScanKind::Fin => v1::ScanType::Fin,
        ScanKind::Null => v1::ScanType::Null,
        ScanKind::Xmas => v1::ScanType::Xmas,
        ScanKind::Maimon => v1::ScanType::Maimon,
        ScanKind::Ack => v1::ScanType::Ack,
        ScanKind::Udp => v1::ScanType::Udp,
        ScanKind::IpProto => v1::ScanType::IpProto,
        ScanKind::Icmp => v1::ScanType::Icmp,
    }
}

fn scan_detail(report: &EpisodeReport, episode_id: uuid::Uuid) -> v1::ScanDetected {
    v1::ScanDetected {
        episode_id: episode_id.as_bytes().to_vec(),
        state: state(report.state),
        scanner_ip: ip_bytes(report.scanner),
        target_ip: ip_bytes(report.target),
        scan_types: report.kinds.iter().map(|&k| scan_type(k) as i32).collect(),
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
        companions: report
            .companions
            .iter()
            .take(MAX_COMPANIONS)
            .map(|&ip| ip_bytes(ip))
            .collect(),
        fragmented: report.fragmented,
    }
}

fn flood_detail(report: &FloodReport, episode_id: uuid::Uuid) -> v1::FloodDetected {
    v1::FloodDetected {
        episode_id: episode_id.as_bytes().to_vec(),
        state: state(report.state),
        target_ip: ip_bytes(report.target),
        ports: report.ports.iter().map(|&p| u32::from(p)).collect(),
        sources: report.sources,
        first_seen_unix_ms: to_i64(report.first_seen_ms),
        last_seen_unix_ms: to_i64(report.last_seen_ms),
        explanation: report.explanation.clone(),
    }
}

fn knocks_detail(report: &KnockReport) -> v1::KnocksSeen {
    v1::KnocksSeen {
        knocks: report
            .knocks
            .iter()
            .map(|k| v1::Knock {
                source_ip: ip_bytes(k.source),
                target_ip: ip_bytes(k.target),
                port: u32::from(k.port),
                protocol: u32::from(k.protocol),
                refused: k.refused,
                probes: k.probes,
                first_seen_unix_ms: to_i64(k.first_seen_ms),
                last_seen_unix_ms: to_i64(k.last_seen_ms),
            })
            .collect(),
        unlisted: report.unlisted,
        explanation: report.explanation.clone(),
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

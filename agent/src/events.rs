//! Turns detector reports into wire events: gives each event a fresh
//! UUIDv7 and each episode a stable one.

use std::collections::HashMap;
use std::net::IpAddr;

use doorwatch_proto::v1;

use crate::findings::{
    AnomalyKind, AnomalyReport, EpisodeReport, EpisodeState, FloodReport, KnockReport, Report,
    ScanKind, Severity,
};
use crate::outbound::inventory::Listener;
use crate::outbound::{FlowMinute, OutboundReport};
use crate::procfs::Process;

/// Most companions sent with one episode.
const MAX_COMPANIONS: usize = 64;
/// Most exposures one scan report lists.
const MAX_EXPOSED: usize = 64;

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

    /// The wire event for an outbound report, created at `now_ms`.
    pub fn outbound_event(&mut self, report: &OutboundReport, now_ms: u64) -> v1::Event {
        let detail = match report {
            OutboundReport::Flows(minute) => v1::event::Detail::Flows(flows_detail(minute)),
            OutboundReport::Anomaly(anomaly) => {
                // Outbound episodes number apart from scan episodes.
                let episode_id = self.episode_id(anomaly.episode | 1 << 63, anomaly.state);
                v1::event::Detail::Outbound(anomaly_detail(anomaly, episode_id))
            }
        };
        v1::Event {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            created_unix_ms: to_i64(now_ms),
            detail: Some(detail),
        }
    }
}

/// The wire event listing this PC's open ports.
pub fn listening_event(listeners: &[Listener], now_ms: u64) -> v1::Event {
    let listeners = listeners
        .iter()
        .map(|l| v1::Listener {
            protocol: u32::from(l.protocol),
            local_ip: ip_bytes(l.local),
            port: u32::from(l.port),
            process: l.process.as_ref().map(|p| v1::ProcessInfo {
                pid: p.pid,
                name: p.name.clone(),
                exe: p.exe.clone(),
                user: p.user.clone(),
            }),
            risk: l.risk.clone(),
        })
        .collect();
    v1::Event {
        id: uuid::Uuid::now_v7().as_bytes().to_vec(),
        created_unix_ms: to_i64(now_ms),
        detail: Some(v1::event::Detail::Listening(v1::ListeningPorts {
            listeners,
        })),
    }
}

impl EventBuilder {
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
        handshake_verified: report.handshake_verified,
        exposed: report
            .exposed
            .iter()
            .take(MAX_EXPOSED)
            .map(|e| v1::Exposure {
                protocol: u32::from(e.protocol),
                port: u32::from(e.port),
                process: e.process.clone(),
                risk: e.risk.clone(),
            })
            .collect(),
        severity: match report.severity() {
            Severity::Low => v1::Severity::Low,
            Severity::Medium => v1::Severity::Medium,
            Severity::High => v1::Severity::High,
        } as i32,
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

fn process_info(process: &Process) -> v1::ProcessInfo {
    v1::ProcessInfo {
        pid: process.pid,
        name: process.name.clone(),
        exe: process.exe.clone(),
        user: process.user.clone(),
    }
}

fn flows_detail(minute: &FlowMinute) -> v1::FlowSummary {
    v1::FlowSummary {
        minute_start_unix_ms: to_i64(minute.minute_start_ms),
        flows: minute
            .rows
            .iter()
            .map(|r| v1::Flow {
                process: r.process.as_ref().map(process_info),
                local_ip: ip_bytes(r.local),
                remote_ip: ip_bytes(r.remote),
                remote_port: u32::from(r.remote_port),
                protocol: u32::from(r.protocol),
                bytes_out: r.counts.bytes_out,
                bytes_in: r.counts.bytes_in,
                packets_out: r.counts.packets_out,
                packets_in: r.counts.packets_in,
                connections: r.counts.connections,
            })
            .collect(),
        unlisted_flows: minute.unlisted_rows,
        unlisted_bytes_out: minute.unlisted.bytes_out,
        unlisted_bytes_in: minute.unlisted.bytes_in,
    }
}

fn anomaly_detail(report: &AnomalyReport, episode_id: uuid::Uuid) -> v1::OutboundAnomaly {
    let kind = match report.kind {
        AnomalyKind::UploadVolume => v1::OutboundKind::UploadVolume,
        AnomalyKind::Scan => v1::OutboundKind::Scan,
        AnomalyKind::SmtpFanout => v1::OutboundKind::SmtpFanout,
        AnomalyKind::FailedConnections => v1::OutboundKind::FailedConnections,
    };
    v1::OutboundAnomaly {
        episode_id: episode_id.as_bytes().to_vec(),
        state: state(report.state),
        kind: kind as i32,
        process: report.process.as_ref().map(process_info),
        remote_ip: report.remote.map(ip_bytes).unwrap_or_default(),
        remote_port: u32::from(report.port),
        hosts: report.hosts,
        ports: report.ports,
        bytes_out: report.bytes_out,
        baseline_bytes_per_hour: report.baseline_per_hour,
        attempts: report.attempts,
        failed: report.failed,
        first_seen_unix_ms: to_i64(report.first_seen_ms),
        last_seen_unix_ms: to_i64(report.last_seen_ms),
        explanation: report.explanation.clone(),
        host_sample: report
            .host_sample
            .iter()
            .take(64)
            .map(|&ip| ip_bytes(ip))
            .collect(),
        port_sample: report
            .port_sample
            .iter()
            .take(64)
            .map(|&p| u32::from(p))
            .collect(),
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

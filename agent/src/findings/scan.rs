//! The report of a scan episode (one scanner against one address of this
//! PC) and the small rules that go with it: the scan-type names and an
//! episode's severity. Plain data; detection fills it.

use std::net::IpAddr;

/// How a scanner probed, named as nmap names its scan types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScanKind {
    Syn,
    Connect,
    Fin,
    Null,
    Xmas,
    Maimon,
    Ack,
    Udp,
    IpProto,
    Icmp,
}

impl ScanKind {
    pub const ALL: [ScanKind; 10] = [
        Self::Syn,
        Self::Connect,
        Self::Fin,
        Self::Null,
        Self::Xmas,
        Self::Maimon,
        Self::Ack,
        Self::Udp,
        Self::IpProto,
        Self::Icmp,
    ];

    /// The stored and printed name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Syn => "syn",
            Self::Connect => "connect",
            Self::Fin => "fin",
            Self::Null => "null",
            Self::Xmas => "xmas",
            Self::Maimon => "maimon",
            Self::Ack => "ack",
            Self::Udp => "udp",
            Self::IpProto => "ip_proto",
            Self::Icmp => "icmp",
        }
    }

    /// This kind's bit in a set of kinds kept as a `u16`.
    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Where an episode is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeState {
    Detected,
    Active,
    Closed,
}

/// One report of a scan episode: one scanner × one address of this PC.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeReport {
    /// Detector-local episode number, unique for the detector's life.
    pub episode: u64,
    pub state: EpisodeState,
    pub scanner: IpAddr,
    pub target: IpAddr,
    pub kinds: Vec<ScanKind>,
    /// Distinct TCP and UDP ports (and IP protocols, for -sO) probed.
    pub ports_probed: u32,
    /// Up to 64 probed ports, ascending.
    pub port_sample: Vec<u16>,
    /// Probed ports that answered as open, ascending.
    pub open_ports: Vec<u16>,
    pub probes: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// 0 to 100.
    pub confidence: u8,
    /// Other sources sending the same pattern at the same time (decoys).
    pub companions: Vec<IpAddr>,
    /// Probes arrived as IP fragments (nmap -f).
    pub fragmented: bool,
    /// The scanner completed a TCP handshake with this PC, acknowledging
    /// this PC's own sequence number: its address is not forged.
    pub handshake_verified: bool,
    /// Risky open ports of this PC the scan reached. The detector leaves
    /// this empty; the agent fills it from its listening-port inventory.
    pub exposed: Vec<Exposure>,
    pub explanation: String,
}

impl EpisodeReport {
    /// Low when nothing was open, medium when the scanner found open
    /// ports, high when it reached a risky exposure of this PC.
    pub fn severity(&self) -> Severity {
        if !self.exposed.is_empty() {
            Severity::High
        } else if !self.open_ports.is_empty() {
            Severity::Medium
        } else {
            Severity::Low
        }
    }
}

/// A risky open port of this PC that a scan reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    pub port: u16,
    /// The program listening, empty if unknown.
    pub process: String,
    /// Why it is risky, in plain words.
    pub risk: String,
}

/// How serious an episode is for this PC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
}

//! The evidence about one source probing one address of this PC, and the
//! rules that turn it into scan types.

use std::net::IpAddr;

use super::config::DetectorConfig;
use super::ports::PortSet;
use crate::decode::tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};
use crate::findings::ScanKind;

/// How low the hypothesis-test score may fall: a source with a long record
/// of accepted connections still turns into a scanner after a few more
/// refusals than a stranger would need.
const SCORE_FLOOR: i32 = -3;
/// Decoys start, and are still probing, within this many milliseconds of
/// the real scanner: nmap -D sends every probe from every decoy at once.
const DECOY_WINDOW_MS: u64 = 1_000;
/// Scheduling jitter allowed when deciding that two sources probe at once.
const DECOY_SLACK_MS: u64 = 50;

/// One probe, reduced to what detection needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact {
    /// A bare SYN; `raw` if it carries at most an MSS option, as
    /// raw-packet scanners send (operating systems send about 20 bytes).
    TcpSyn {
        port: u16,
        raw: bool,
    },
    /// Any other TCP packet not belonging to a connection this PC opened.
    TcpOther {
        port: u16,
        flags: u8,
    },
    Udp {
        port: u16,
    },
    /// The first fragment of a fragmented TCP or UDP probe.
    Fragment {
        protocol: u8,
        port: u16,
    },
    IcmpEcho,
    /// An echo request without data, as discovery scanners send.
    IcmpEmptyEcho,
    /// ICMP timestamp or address-mask request.
    IcmpInfo,
    /// A packet of an IP protocol other than TCP, UDP and ICMP.
    Protocol {
        protocol: u8,
    },
}

impl Contact {
    /// The port probed, if any.
    pub fn port(&self) -> Option<u16> {
        match *self {
            Self::TcpSyn { port, .. }
            | Self::TcpOther { port, .. }
            | Self::Udp { port }
            | Self::Fragment { port, .. } => Some(port),
            _ => None,
        }
    }

    /// Whether `other` probes the same thing (a retry).
    pub fn same_target(&self, other: &Contact) -> bool {
        match (self, other) {
            (Self::TcpSyn { port: a, .. }, Self::TcpSyn { port: b, .. }) => a == b,
            (Self::Udp { port: a }, Self::Udp { port: b }) => a == b,
            (Self::IcmpEcho, Self::IcmpEcho) => true,
            _ => false,
        }
    }

    /// Probes that ordinary traffic never sends: the source is tracked at
    /// once instead of waiting in probation.
    pub fn is_unusual(&self) -> bool {
        // A TcpOther contact is only ever made for proven stealth probes.
        matches!(
            self,
            Self::TcpOther { .. }
                | Self::Fragment { .. }
                | Self::IcmpEmptyEcho
                | Self::IcmpInfo
                | Self::Protocol { .. }
        )
    }

    /// Whether `what` answers this contact.
    pub fn answered_by(&self, what: Answered) -> bool {
        match (*self, what) {
            (Self::TcpSyn { port, .. }, Answered::Tcp(p)) => port == p,
            (Self::Fragment { protocol: 6, port }, Answered::Tcp(p)) => port == p,
            (Self::Udp { port }, Answered::Udp(p)) => port == p,
            (Self::Fragment { protocol: 17, port }, Answered::Udp(p)) => port == p,
            (Self::TcpOther { port, .. }, Answered::Tcp(p)) => port == p,
            _ => false,
        }
    }
}

/// What this PC answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    Tcp(u16),
    Udp(u16),
    Protocol(u8),
}

/// How it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// SYN-ACK, or a UDP reply: the port is open.
    Open,
    /// RST, or ICMP port or protocol unreachable.
    Refused,
}

/// The stealth scan a TCP flag combination belongs to, and whether the
/// flags alone prove it (`false`: only if this PC answers RST, because
/// ordinary connections send these flags too).
pub fn stealth_kind(flags: u8) -> Option<(ScanKind, bool)> {
    match flags & (FIN | SYN | RST | PSH | ACK | URG) {
        0 => Some((ScanKind::Null, true)),
        FIN => Some((ScanKind::Fin, true)),
        f if f == FIN | PSH | URG => Some((ScanKind::Xmas, true)),
        f if f == FIN | ACK => Some((ScanKind::Maimon, false)),
        ACK => Some((ScanKind::Ack, false)),
        _ => None,
    }
}

/// An open episode.
#[derive(Debug)]
pub struct Episode {
    pub id: u64,
    pub last_report_ms: u64,
    pub reported_probes: u64,
    pub companions: Vec<IpAddr>,
    /// Something other than the probe count changed since the last report.
    pub dirty: bool,
}

/// Evidence about one (source, address) pair.
#[derive(Debug, Default)]
pub struct Pair {
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub probes: u64,
    tcp: PortSet,
    udp: PortSet,
    tcp_answered: PortSet,
    udp_answered: PortSet,
    open_tcp: PortSet,
    open_udp: PortSet,
    /// Closed ports already reported as knocks.
    tcp_knocked: PortSet,
    udp_knocked: PortSet,
    tcp_refused: u32,
    udp_refused: u32,
    /// Refusals minus acceptances, floored: the TRW log-likelihood in
    /// units of one refusal.
    score: i32,
    stealth: PortSet,
    stealth_kinds: u16,
    protocols: [u64; 4],
    protocols_refused: u32,
    icmp_echo: bool,
    icmp_empty_echo: bool,
    icmp_info: bool,
    syn_raw: u32,
    syn_os: u32,
    half_open: bool,
    completed: bool,
    /// The source completed a TCP handshake with this PC, acknowledging
    /// this PC's sequence number: its address is not forged.
    pub handshake_verified: bool,
    pub fragmented: bool,
    pub episode: Option<Episode>,
    /// Set when this source is a decoy of that scanner's episode.
    pub companion_of: Option<IpAddr>,
}

impl Pair {
    pub fn new(first_seen_ms: u64) -> Self {
        Self {
            first_seen_ms,
            last_seen_ms: first_seen_ms,
            ..Self::default()
        }
    }

    pub fn add_probes(&mut self, n: u64) {
        self.probes += n;
    }

    /// Adds one probe.
    pub fn record(&mut self, contact: Contact, now: u64) {
        self.last_seen_ms = self.last_seen_ms.max(now);
        self.probes += 1;
        match contact {
            Contact::TcpSyn { port, raw } => {
                self.tcp.insert(port);
                if raw {
                    self.syn_raw += 1;
                } else {
                    self.syn_os += 1;
                }
            }
            Contact::TcpOther { port, flags } => self.tcp_other(port, flags),
            Contact::Udp { port } => {
                self.udp.insert(port);
            }
            Contact::Fragment { protocol, port } => {
                self.fragmented = true;
                if protocol == 6 {
                    self.tcp.insert(port);
                    self.syn_raw += 1;
                } else {
                    self.udp.insert(port);
                }
            }
            Contact::IcmpEcho => self.icmp_echo = true,
            Contact::IcmpEmptyEcho => self.icmp_empty_echo = true,
            Contact::IcmpInfo => self.icmp_info = true,
            Contact::Protocol { protocol } => {
                self.protocols[usize::from(protocol / 64)] |= 1 << (protocol % 64);
            }
        }
    }

    fn tcp_other(&mut self, port: u16, flags: u8) {
        if let Some((kind, _)) = stealth_kind(flags) {
            self.stealth.insert(port);
            self.stealth_kinds |= kind.bit();
        }
    }

    /// The scanner resets a port this PC answered open: a bare RST walks
    /// away half-open (SYN scan); RST+ACK closes a completed connection
    /// (connect scan).
    pub fn handshake_end(&mut self, port: u16, flags: u8) {
        if !self.open_tcp.contains(port) {
            return;
        }
        if flags & ACK == 0 {
            self.half_open = true;
        } else {
            self.completed = true;
        }
    }

    /// The source acknowledged this PC's SYN-ACK (see `handshake.rs`). An
    /// open episode reports it at its next update.
    pub fn verify_handshake(&mut self) {
        if !self.handshake_verified {
            self.handshake_verified = true;
            if let Some(episode) = self.episode.as_mut() {
                episode.dirty = true;
            }
        }
    }

    /// Applies this PC's answer. True if it answered one of our probes.
    pub fn answer(&mut self, what: Answered, answer: Answer) -> bool {
        match what {
            Answered::Tcp(port) => {
                if !self.tcp.contains(port) || !self.tcp_answered.insert(port) {
                    return false;
                }
                match answer {
                    Answer::Open => {
                        self.open_tcp.insert(port);
                        self.score = (self.score - 1).max(SCORE_FLOOR);
                    }
                    Answer::Refused => {
                        self.tcp_refused += 1;
                        self.score += 1;
                    }
                }
                true
            }
            Answered::Udp(port) => {
                if !self.udp.contains(port) || !self.udp_answered.insert(port) {
                    return false;
                }
                match answer {
                    Answer::Open => {
                        self.open_udp.insert(port);
                        self.score = (self.score - 1).max(SCORE_FLOOR);
                    }
                    Answer::Refused => {
                        self.udp_refused += 1;
                        self.score += 1;
                    }
                }
                true
            }
            Answered::Protocol(protocol) => {
                let seen = self.protocols[usize::from(protocol / 64)] & (1 << (protocol % 64)) != 0;
                if seen {
                    self.protocols_refused += 1;
                }
                seen
            }
        }
    }

    /// Re-applies an answer that arrived while the source was in probation.
    pub fn replay_answer(&mut self, contact: &Contact, answer: Option<Answer>) {
        let Some(answer) = answer else { return };
        let what = match *contact {
            Contact::TcpSyn { port, .. } | Contact::TcpOther { port, .. } => Answered::Tcp(port),
            Contact::Udp { port } => Answered::Udp(port),
            Contact::Fragment { protocol: 6, port } => Answered::Tcp(port),
            Contact::Fragment { port, .. } => Answered::Udp(port),
            _ => return,
        };
        self.answer(what, answer);
    }

    /// Tries at closed ports not reported as knocks yet, as (port,
    /// protocol, refused): TCP refused, or unanswered once the source has
    /// been quiet for `silent_after_ms`; UDP refused. At most `max`; the
    /// ones returned are marked reported.
    pub fn take_knocks(
        &mut self,
        now: u64,
        silent_after_ms: u64,
        max: usize,
    ) -> Vec<(u16, u8, bool)> {
        let quiet = now.saturating_sub(self.last_seen_ms) >= silent_after_ms;
        let mut knocks = Vec::new();
        for port in self.tcp.iter() {
            if knocks.len() >= max {
                break;
            }
            let refused = self.tcp_answered.contains(port);
            if self.open_tcp.contains(port) || (!refused && !quiet) {
                continue;
            }
            if self.tcp_knocked.insert(port) {
                knocks.push((port, 6, refused));
            }
        }
        for port in self.udp_answered.iter() {
            if knocks.len() >= max {
                break;
            }
            if !self.open_udp.contains(port) && self.udp_knocked.insert(port) {
                knocks.push((port, 17, true));
            }
        }
        knocks
    }

    fn unanswered(&self) -> u32 {
        (self.tcp.len() - self.tcp_answered.len()) + (self.udp.len() - self.udp_answered.len())
    }

    fn unusual_protocols(&self) -> u32 {
        let mut bits = self.protocols;
        for common in [1u8, 6, 17, 58] {
            bits[usize::from(common / 64)] &= !(1 << (common % 64));
        }
        bits.iter().map(|w| w.count_ones()).sum()
    }

    /// The scan types the evidence proves, as bits of [`ScanKind`]; 0 if
    /// none yet.
    pub fn kinds(&self, config: &DetectorConfig) -> u16 {
        let mut kinds = 0;
        let refused_enough = self.score >= config.scan_min_ports as i32;
        let blind = self.score >= 0 && self.unanswered() >= config.blind_min_ports;
        if refused_enough || blind {
            if self.tcp_refused > 0 || self.tcp.len() > self.tcp_answered.len() {
                // A scanner that walked away half-open used raw SYNs; one
                // that completed handshakes, or whose SYNs carry an
                // operating system's options, used connect().
                let connect = !self.half_open && (self.completed || self.syn_os > self.syn_raw);
                kinds |= if connect {
                    ScanKind::Connect.bit()
                } else {
                    ScanKind::Syn.bit()
                };
            }
            if self.udp_refused > 0 || self.udp.len() > self.udp_answered.len() {
                kinds |= ScanKind::Udp.bit();
            }
        }
        if self.stealth.len() >= config.stealth_min_ports {
            kinds |= self.stealth_kinds;
        }
        if self.unusual_protocols() >= config.ip_proto_min
            || self.protocols_refused >= config.ip_proto_min
        {
            kinds |= ScanKind::IpProto.bit();
        }
        // A ping alone is not a scan. Timestamp and address-mask requests,
        // and echo requests without data, are what discovery tools send
        // (nmap -sO's ICMP probe is an empty echo too: that is part of the
        // protocol scan).
        if self.icmp_info || (self.icmp_empty_echo && kinds & ScanKind::IpProto.bit() == 0) {
            kinds |= ScanKind::Icmp.bit();
        }
        kinds
    }

    /// A single number for "how much evidence": eviction keeps the most.
    pub fn evidence(&self) -> u32 {
        self.score.max(0) as u32
            + self.stealth.len()
            + self.unusual_protocols()
            + self.unanswered() / 4
    }

    pub fn confidence(&self, config: &DetectorConfig) -> u8 {
        let ratio = |have: u32, need: u32| f64::from(have) / f64::from(need.max(1));
        let strength = [
            ratio(self.score.max(0) as u32, config.scan_min_ports),
            ratio(self.unanswered(), config.blind_min_ports) * 0.8,
            ratio(self.stealth.len(), config.stealth_min_ports),
            ratio(
                self.unusual_protocols().max(self.protocols_refused),
                config.ip_proto_min,
            ),
            if self.icmp_info || self.icmp_empty_echo {
                1.0
            } else {
                0.0
            },
        ]
        .into_iter()
        .fold(0.0, f64::max);
        (50.0 + 20.0 * strength).min(99.0) as u8
    }

    /// Distinct ports probed, or distinct IP protocols for a protocol scan
    /// (whichever is larger: nmap -sO also sends a TCP and a UDP probe).
    pub fn ports_probed(&self) -> u32 {
        let ports = self.tcp.len() + self.udp.len() + self.stealth_only();
        let protocols = self.protocols.iter().map(|w| w.count_ones()).sum();
        ports.max(protocols)
    }

    /// Stealth ports not already counted as first contacts.
    fn stealth_only(&self) -> u32 {
        self.stealth.len() - self.stealth.overlap(&self.tcp)
    }

    pub fn port_sample(&self, max: usize) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .tcp
            .iter()
            .take(max)
            .chain(self.udp.iter().take(max))
            .chain(self.stealth.iter().take(max))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports.truncate(max);
        ports
    }

    pub fn open_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.open_tcp.iter().chain(self.open_udp.iter()).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Whether `other` probes like this pair at the same time (decoys).
    pub fn looks_like(&self, other: &Pair) -> bool {
        // Concurrent (their probing intervals intersect), not one scan after
        // another from a second address.
        let concurrent = other.first_seen_ms <= self.last_seen_ms + DECOY_SLACK_MS
            && self.first_seen_ms <= other.last_seen_ms + DECOY_SLACK_MS;
        if !concurrent || self.first_seen_ms.abs_diff(other.first_seen_ms) > DECOY_WINDOW_MS {
            return false;
        }
        let mine = self.tcp.len() + self.udp.len() + self.stealth.len();
        let theirs = other.tcp.len() + other.udp.len() + other.stealth.len();
        let smaller = mine.min(theirs);
        if smaller < 4 {
            return false;
        }
        let shared = self.tcp.overlap(&other.tcp)
            + self.udp.overlap(&other.udp)
            + self.stealth.overlap(&other.stealth);
        shared * 2 >= smaller
    }

    pub fn open_episode(&mut self, id: u64, now: u64) {
        self.episode = Some(Episode {
            id,
            last_report_ms: now,
            reported_probes: self.probes,
            companions: Vec::new(),
            dirty: false,
        });
    }

    /// Silence that closes this episode: slow scans get four of their own
    /// probe intervals, up to an hour.
    pub fn idle_timeout(&self, config: &DetectorConfig) -> u64 {
        let gap = if self.probes > 1 {
            (self.last_seen_ms - self.first_seen_ms) / (self.probes - 1)
        } else {
            0
        };
        config
            .episode_idle_ms
            .max(gap.saturating_mul(4))
            .min(3_600_000)
    }

    pub fn update_due(&self, now: u64, config: &DetectorConfig) -> bool {
        self.episode.as_ref().is_some_and(|e| {
            (e.dirty || self.probes > e.reported_probes)
                && now.saturating_sub(e.last_report_ms) >= config.update_interval_ms
        })
    }

    pub fn mark_reported(&mut self, now: u64) {
        let probes = self.probes;
        if let Some(e) = self.episode.as_mut() {
            e.last_report_ms = now;
            e.reported_probes = probes;
            e.dirty = false;
        }
    }

    pub fn heap_bytes(&self) -> usize {
        [
            &self.tcp,
            &self.udp,
            &self.tcp_answered,
            &self.udp_answered,
            &self.open_tcp,
            &self.open_udp,
            &self.stealth,
        ]
        .iter()
        .map(|s| s.heap_bytes())
        .sum::<usize>()
    }
}

//! Scan detection: a pure state machine. Decoded packets and their
//! timestamps go in, reports come out; no I/O and no clock reads. Live
//! capture, offline replay and benchmarks drive the same code.
//!
//! For every remote source probing one of this PC's addresses it keeps a
//! [`Pair`] of evidence and classifies it (see `pair.rs` for the rules):
//!
//! - **first-contact outcomes** (TCP SYN answered RST or SYN-ACK, UDP
//!   answered port-unreachable or a reply) feed a sequential hypothesis
//!   test in the style of TRW (Jung et al. 2004): each refused port is a
//!   step towards "scanner", each accepted one a step back, so a scan is
//!   decided after about four refused ports whatever its speed;
//! - **stealth probes** (FIN, NULL, Xmas, and ACK or FIN+ACK that this PC
//!   answered RST because no connection existed) are counted per port;
//! - **IP-protocol probes** and **ICMP discovery** probes are counted;
//! - **the PC's own knowledge**: replies to connections this PC opened are
//!   never probes, and ports it answered as open are the open doors found.
//!
//! State lives in a fixed memory budget. New sources enter a small
//! *probation* table (first in, first out); a source is promoted to the
//! tracked table once it touches a second port or sends anything unusual.
//! A spoofed-source flood (one probe per fake source) therefore churns
//! only probation and can never push out a real scanner, and it is
//! reported once, as a flood.
//!
//! Tries at closed ports by sources not reported as scanners here are
//! reported together every few seconds as *knocks* (see `knock.rs`): not
//! scans of this PC, but the stuff of campus-wide sweeps and botnets.

mod flood;
mod knock;
mod pair;
mod ports;

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;

use crate::decode::{Icmp, Packet, Transport, Unreachable, tcp_flags};
use crate::explain;
pub use flood::FloodReport;
pub use knock::{Knock, KnockReport, MAX_KNOCKS};
use pair::{Contact, Pair};
pub use ports::PortSet;

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

    fn bit(self) -> u16 {
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

/// What the detector reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Scan(EpisodeReport),
    Flood(FloodReport),
    Knocks(KnockReport),
}

/// Counters for heartbeats and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorStats {
    /// Sources in probation now.
    pub probation: usize,
    /// Sources tracked now.
    pub tracked: usize,
    /// Estimated bytes of state.
    pub bytes: usize,
    /// Probation entries pushed out to make room.
    pub probation_evictions: u64,
    /// Tracked sources pushed out to stay within the budget.
    pub tracked_evictions: u64,
}

/// A source in probation: one first contact so far.
#[derive(Debug, Clone, Copy)]
struct Probation {
    first_seen_ms: u64,
    last_seen_ms: u64,
    probes: u32,
    contact: Contact,
    /// This PC's answer to the contact, if one was seen.
    answer: Option<pair::Answer>,
    seq: u64,
    /// Already reported as a knock.
    knocked: bool,
}

/// Bytes one probation entry costs, with map and queue overhead.
const PROBATION_BYTES: usize = 160;
/// Fixed bytes of one tracked pair beyond its port sets.
const PAIR_BYTES: usize = 512;
/// Flows this PC opened that are remembered, to recognise their replies.
const OUTBOUND_FLOWS: usize = 65_536;
/// How long a flow this PC opened is remembered.
const OUTBOUND_FLOW_MS: u64 = 10 * 60_000;

type Key = (IpAddr, IpAddr);

/// A flow this PC opened: (protocol, remote, remote port, local port).
type FlowKey = (u8, IpAddr, u16, u16);

/// Hash maps keyed by addresses that attackers choose: a fast hasher with a
/// random per-process seed, so crafted addresses cannot force collisions.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Slots of the cache of ACK and FIN+ACK packets awaiting a possible RST.
const AMBIGUOUS_SLOTS: usize = 8192;

/// An ACK or FIN+ACK that reached a port with no connection shows itself
/// only by this PC's bare RST. Ordinary traffic sends these flags all the
/// time, so they wait in a fixed-size, direct-mapped cache (no allocation,
/// no per-source state) until a RST confirms one as a probe.
#[derive(Debug, Clone, Copy)]
struct Ambiguous {
    remote: IpAddr,
    remote_port: u16,
    local: IpAddr,
    local_port: u16,
    flags: u8,
}

/// The detector. Feed it with [`Detector::observe`] and
/// [`Detector::tick`]; take reports with [`Detector::drain_reports`].
#[derive(Debug)]
pub struct Detector {
    config: DetectorConfig,
    /// This PC's addresses: a handful, so a list beats a hash set.
    local: Vec<IpAddr>,
    ambiguous: Box<[Option<Ambiguous>]>,
    ambiguous_hasher: foldhash::fast::RandomState,
    probation: HashMap<Key, Probation>,
    probation_order: VecDeque<(Key, u64)>,
    probation_seq: u64,
    pairs: HashMap<Key, Pair>,
    outbound: HashMap<FlowKey, u64>,
    floods: flood::Floods,
    next_episode: u64,
    last_knock_report_ms: u64,
    reports: Vec<Report>,
    stats: DetectorStats,
}

impl Detector {
    /// A detector for a PC whose own addresses are `local`.
    pub fn new(config: DetectorConfig, local: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut local: Vec<IpAddr> = local.into_iter().collect();
        local.sort_unstable();
        local.dedup();
        Self {
            config,
            local,
            ambiguous: vec![None; AMBIGUOUS_SLOTS].into_boxed_slice(),
            ambiguous_hasher: foldhash::fast::RandomState::default(),
            probation: HashMap::default(),
            probation_order: VecDeque::new(),
            probation_seq: 0,
            pairs: HashMap::default(),
            outbound: HashMap::default(),
            floods: flood::Floods::default(),
            next_episode: 1,
            last_knock_report_ms: 0,
            reports: Vec::new(),
            stats: DetectorStats::default(),
        }
    }

    /// Replaces the thresholds (a pushed policy); tracked state is kept.
    pub fn set_config(&mut self, config: DetectorConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Current counters.
    pub fn stats(&self) -> DetectorStats {
        DetectorStats {
            probation: self.probation.len(),
            tracked: self.pairs.len(),
            bytes: self.bytes(),
            ..self.stats
        }
    }

    /// Takes the reports made so far.
    pub fn drain_reports(&mut self) -> std::vec::Drain<'_, Report> {
        self.reports.drain(..)
    }

    fn bytes(&self) -> usize {
        self.probation.len() * PROBATION_BYTES
            + self.pairs.values().map(Pair::heap_bytes).sum::<usize>()
            + self.pairs.len() * PAIR_BYTES
            + self.outbound.len() * 64
    }

    /// Most tracked pairs the budget could hold at their fixed cost alone.
    fn pair_capacity(&self) -> usize {
        (self.config.memory_budget * 3 / 4 / PAIR_BYTES).max(16)
    }

    fn probation_capacity(&self) -> usize {
        (self.config.memory_budget / 4 / PROBATION_BYTES).max(16)
    }

    /// Feeds one packet seen at `now_ms` (Unix milliseconds).
    pub fn observe(&mut self, packet: &Packet, now_ms: u64) {
        let src_local = self.local.contains(&packet.src);
        let dst_local = self.local.contains(&packet.dst);
        if src_local == dst_local {
            return;
        }
        if dst_local {
            self.inbound(packet, now_ms);
        } else {
            self.outbound(packet, now_ms);
        }
    }

    fn inbound(&mut self, packet: &Packet, now: u64) {
        let (scanner, target) = (packet.src, packet.dst);
        if self.config.allowlist.contains(&scanner) {
            return;
        }
        let contact = match packet.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
                options_len,
                ..
            } => {
                let syn_only = flags
                    & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST | tcp_flags::FIN)
                    == tcp_flags::SYN;
                let kind = pair::stealth_kind(flags);
                if flags & tcp_flags::RST != 0 {
                    // How a scanner leaves a port this PC answered open
                    // tells a SYN scan from a connect scan.
                    if let Some(pair) = self.pairs.get_mut(&(scanner, target)) {
                        pair.handshake_end(dst_port, flags);
                    }
                    return;
                }
                // Most traffic is established connections: leave them
                // before any lookup.
                if !syn_only && kind.is_none() {
                    return;
                }
                if self.is_reply(6, scanner, src_port, dst_port) {
                    return;
                }
                match kind {
                    _ if syn_only => Contact::TcpSyn {
                        port: dst_port,
                        raw: options_len <= 4,
                    },
                    Some((_, true)) => Contact::TcpOther {
                        port: dst_port,
                        flags,
                    },
                    _ => {
                        self.remember_ambiguous(Ambiguous {
                            remote: scanner,
                            remote_port: src_port,
                            local: target,
                            local_port: dst_port,
                            flags,
                        });
                        return;
                    }
                }
            }
            Transport::Udp { src_port, dst_port } => {
                if self.is_reply(17, scanner, src_port, dst_port) {
                    return;
                }
                Contact::Udp { port: dst_port }
            }
            Transport::Fragment {
                protocol,
                dst_port,
                src_port,
            } => match (dst_port, src_port) {
                (Some(port), Some(sport)) if protocol == 6 || protocol == 17 => {
                    if self.is_reply(protocol, scanner, sport, port) {
                        return;
                    }
                    Contact::Fragment { protocol, port }
                }
                // Later fragments carry nothing new; the first one counted.
                _ => return,
            },
            // An empty echo request is what discovery scanners send; ping
            // tools carry 32 to 56 bytes of data.
            Transport::Icmp(Icmp::EchoRequest { data_len: 0 }) => Contact::IcmpEmptyEcho,
            Transport::Icmp(Icmp::EchoRequest { .. }) => Contact::IcmpEcho,
            Transport::Icmp(Icmp::InfoRequest { .. }) => Contact::IcmpInfo,
            Transport::Icmp(_) => return,
            Transport::Other { protocol } => Contact::Protocol { protocol },
        };
        self.contact((scanner, target), contact, now);
    }

    fn ambiguous_slot(
        &self,
        remote: IpAddr,
        remote_port: u16,
        local: IpAddr,
        local_port: u16,
    ) -> usize {
        let mut h = self.ambiguous_hasher.build_hasher();
        (remote, remote_port, local, local_port).hash(&mut h);
        (std::hash::Hasher::finish(&h) as usize) % AMBIGUOUS_SLOTS
    }

    fn remember_ambiguous(&mut self, a: Ambiguous) {
        let slot = self.ambiguous_slot(a.remote, a.remote_port, a.local, a.local_port);
        self.ambiguous[slot] = Some(a);
    }

    /// The ACK or FIN+ACK that this PC's bare RST answers, if cached.
    fn take_ambiguous(
        &mut self,
        remote: IpAddr,
        remote_port: u16,
        local: IpAddr,
        local_port: u16,
    ) -> Option<u8> {
        let slot = self.ambiguous_slot(remote, remote_port, local, local_port);
        let a = self.ambiguous[slot]?;
        if (a.remote, a.remote_port, a.local, a.local_port)
            != (remote, remote_port, local, local_port)
        {
            return None;
        }
        self.ambiguous[slot] = None;
        Some(a.flags)
    }

    /// Whether an inbound packet belongs to a flow this PC opened.
    fn is_reply(&self, protocol: u8, remote: IpAddr, remote_port: u16, local_port: u16) -> bool {
        self.outbound
            .contains_key(&(protocol, remote, remote_port, local_port))
    }

    fn contact(&mut self, key: Key, contact: Contact, now: u64) {
        if let Some(pair) = self.pairs.get_mut(&key) {
            pair.record(contact, now);
            self.decide(key, now);
            return;
        }
        if let Some(entry) = self.probation.get_mut(&key) {
            entry.last_seen_ms = now;
            entry.probes += 1;
            // Same single contact again (a retry): stay in probation.
            if entry.contact.same_target(&contact) && !contact.is_unusual() {
                return;
            }
            let entry = *entry;
            self.probation.remove(&key);
            self.promote(key, entry, Some(contact), now);
            return;
        }
        // A new source.
        self.floods.new_source(key.1, contact.port(), now);
        if contact.is_unusual() {
            let entry = Probation {
                first_seen_ms: now,
                last_seen_ms: now,
                probes: 1,
                contact,
                answer: None,
                seq: 0,
                knocked: false,
            };
            self.promote(key, entry, None, now);
            return;
        }
        self.admit(key, contact, now);
    }

    fn admit(&mut self, key: Key, contact: Contact, now: u64) {
        while self.probation.len() >= self.probation_capacity() {
            let Some((old, seq)) = self.probation_order.pop_front() else {
                break;
            };
            if self.probation.get(&old).is_some_and(|e| e.seq == seq) {
                self.probation.remove(&old);
                self.stats.probation_evictions += 1;
            }
        }
        self.probation_seq += 1;
        let seq = self.probation_seq;
        self.probation.insert(
            key,
            Probation {
                first_seen_ms: now,
                last_seen_ms: now,
                probes: 1,
                contact,
                answer: None,
                seq,
                knocked: false,
            },
        );
        self.probation_order.push_back((key, seq));
        // The queue holds stale entries for removed keys; compact it when
        // it grows well past the table.
        if self.probation_order.len() > 2 * self.probation_capacity() {
            let live = &self.probation;
            self.probation_order
                .retain(|(k, s)| live.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    fn promote(&mut self, key: Key, entry: Probation, next: Option<Contact>, now: u64) {
        let mut pair = Pair::new(entry.first_seen_ms);
        pair.record(entry.contact, entry.last_seen_ms);
        pair.add_probes(u64::from(entry.probes.saturating_sub(1)));
        pair.replay_answer(&entry.contact, entry.answer);
        if let Some(contact) = next {
            pair.record(contact, now);
        }
        self.pairs.insert(key, pair);
        // The full budget check walks every pair, so it runs on each tick;
        // here only the cheap count guards against a burst of promotions
        // between ticks.
        if self.pairs.len() >= self.pair_capacity() {
            self.enforce_budget();
        }
        self.decide(key, now);
    }

    fn outbound(&mut self, packet: &Packet, now: u64) {
        let (target, remote) = (packet.src, packet.dst);
        let key = (remote, target);
        match packet.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
                ..
            } => {
                let syn_ack = tcp_flags::SYN | tcp_flags::ACK;
                if flags & syn_ack == tcp_flags::SYN {
                    // This PC opens a connection: its replies are not probes.
                    self.remember_flow((6, remote, dst_port, src_port), now);
                    return;
                }
                if flags & (tcp_flags::RST | tcp_flags::ACK) == tcp_flags::RST
                    && let Some(probe) = self.take_ambiguous(remote, dst_port, target, src_port)
                {
                    // A bare RST: this PC refused an ACK or FIN+ACK that
                    // belonged to no connection. That was a probe.
                    self.contact(
                        key,
                        Contact::TcpOther {
                            port: src_port,
                            flags: probe,
                        },
                        now,
                    );
                    return;
                }
                let answer = if flags & syn_ack == syn_ack {
                    pair::Answer::Open
                } else if flags & tcp_flags::RST != 0 {
                    pair::Answer::Refused
                } else {
                    return;
                };
                self.answer(key, pair::Answered::Tcp(src_port), answer, now);
            }
            Transport::Udp { src_port, dst_port } => {
                // Either this PC's own request or its answer to a probe.
                let answered =
                    self.answer(key, pair::Answered::Udp(src_port), pair::Answer::Open, now);
                if !answered {
                    self.remember_flow((17, remote, dst_port, src_port), now);
                }
            }
            Transport::Icmp(Icmp::Unreachable {
                reason,
                quoted: Some(quoted),
            }) if quoted.src == remote => {
                let answered = match (reason, quoted.protocol, quoted.dst_port) {
                    (Unreachable::Port, 17, Some(port)) => pair::Answered::Udp(port),
                    (Unreachable::Protocol, protocol, _) => pair::Answered::Protocol(protocol),
                    _ => return,
                };
                self.answer(key, answered, pair::Answer::Refused, now);
            }
            _ => {}
        }
    }

    /// Applies this PC's answer to a probe; false if nothing was waiting
    /// for it.
    fn answer(&mut self, key: Key, what: pair::Answered, answer: pair::Answer, now: u64) -> bool {
        if let Some(pair) = self.pairs.get_mut(&key) {
            let used = pair.answer(what, answer);
            if used {
                self.decide(key, now);
            }
            return used;
        }
        if let Some(entry) = self.probation.get_mut(&key)
            && entry.answer.is_none()
            && entry.contact.answered_by(what)
        {
            entry.answer = Some(answer);
            return true;
        }
        false
    }

    fn remember_flow(&mut self, flow: FlowKey, now: u64) {
        if self.outbound.len() >= OUTBOUND_FLOWS && !self.outbound.contains_key(&flow) {
            self.outbound
                .retain(|_, seen| now.saturating_sub(*seen) < OUTBOUND_FLOW_MS / 4);
            if self.outbound.len() >= OUTBOUND_FLOWS {
                return;
            }
        }
        self.outbound.insert(flow, now);
    }

    /// Opens an episode once the evidence is enough, or folds the pair into
    /// a concurrent episode as a decoy companion.
    fn decide(&mut self, key: Key, now: u64) {
        let config = &self.config;
        let Some(pair) = self.pairs.get(&key) else {
            return;
        };
        if pair.episode.is_some() || pair.companion_of.is_some() {
            return;
        }
        if pair.kinds(config) == 0 {
            return;
        }
        // Decoys: another source already reported against the same address,
        // starting at about the same time, probing the same ports.
        let lead = self
            .pairs
            .iter()
            .filter(|(k, p)| k.1 == key.1 && **k != key && p.episode.is_some())
            .find(|(_, p)| p.looks_like(pair))
            .map(|(k, _)| *k);
        if let Some(lead) = lead {
            if let Some(p) = self.pairs.get_mut(&key) {
                p.companion_of = Some(lead.0);
            }
            if let Some(p) = self.pairs.get_mut(&lead)
                && let Some(episode) = p.episode.as_mut()
                && !episode.companions.contains(&key.0)
            {
                episode.companions.push(key.0);
                episode.dirty = true;
            }
            return;
        }
        let id = self.next_episode;
        self.next_episode += 1;
        if let Some(pair) = self.pairs.get_mut(&key) {
            pair.open_episode(id, now);
            let report = report(key, pair, EpisodeState::Detected, &self.config);
            self.reports.push(Report::Scan(report));
        }
    }

    /// Advances time: sends due updates, closes idle episodes and floods,
    /// forgets idle sources.
    pub fn tick(&mut self, now: u64) {
        let config = &self.config;
        let reports = &mut self.reports;
        self.pairs.retain(|&key, pair| {
            if pair.episode.is_none() {
                return now.saturating_sub(pair.last_seen_ms) < config.undecided_idle_ms;
            }
            if now.saturating_sub(pair.last_seen_ms) >= pair.idle_timeout(config) {
                reports.push(Report::Scan(report(
                    key,
                    pair,
                    EpisodeState::Closed,
                    config,
                )));
                return false;
            }
            if pair.update_due(now, config) {
                pair.mark_reported(now);
                reports.push(Report::Scan(report(
                    key,
                    pair,
                    EpisodeState::Active,
                    config,
                )));
            }
            true
        });
        if config.knock_report_ms > 0
            && now.saturating_sub(self.last_knock_report_ms) >= config.knock_report_ms
        {
            self.last_knock_report_ms = now;
            self.report_knocks(now);
        }
        let config = &self.config;
        let undecided = config.undecided_idle_ms;
        self.probation
            .retain(|_, e| now.saturating_sub(e.last_seen_ms) < undecided);
        self.outbound
            .retain(|_, seen| now.saturating_sub(*seen) < OUTBOUND_FLOW_MS);
        self.floods
            .tick(now, config, &mut self.next_episode, &mut self.reports);
        self.enforce_budget();
    }

    /// Reports the tries at closed ports, since the last report, of
    /// sources not reported as scanners. Each knock is reported once; an
    /// address under a flood gets none listed.
    fn report_knocks(&mut self, now: u64) {
        let mut knocks = Vec::new();
        for (&(source, target), entry) in self.probation.iter_mut() {
            if entry.knocked {
                continue;
            }
            let Some(knock) = knock::of(source, target, entry, now) else {
                continue;
            };
            entry.knocked = true;
            if !self.floods.busy(target, &self.config) {
                knocks.push(knock);
            }
        }
        // Sources tracked but not decided: their refused tries so far.
        for (&(source, target), pair) in self.pairs.iter_mut() {
            if pair.episode.is_some() || pair.companion_of.is_some() {
                continue;
            }
            let tries = pair.take_knocks(now, knock::SILENT_AFTER_MS, knock::MAX_PER_SOURCE);
            if tries.is_empty() || self.floods.busy(target, &self.config) {
                continue;
            }
            knocks.extend(tries.into_iter().map(|(port, protocol, refused)| Knock {
                source,
                target,
                port,
                protocol,
                refused,
                probes: 1,
                first_seen_ms: pair.first_seen_ms,
                last_seen_ms: pair.last_seen_ms,
            }));
        }
        if let Some(report) = knock::report(knocks) {
            self.reports.push(Report::Knocks(report));
        }
    }

    /// Closes every open episode and flood now (shutdown, end of a replay).
    pub fn finish(&mut self) {
        let config = &self.config;
        for (&key, pair) in &self.pairs {
            if pair.episode.is_some() {
                self.reports.push(Report::Scan(report(
                    key,
                    pair,
                    EpisodeState::Closed,
                    config,
                )));
            }
        }
        self.report_knocks(u64::MAX);
        self.pairs.clear();
        self.probation.clear();
        self.probation_order.clear();
        self.floods.finish(&mut self.reports);
    }

    /// Keeps tracked state within the budget: first forgets undecided
    /// sources with the least evidence, then closes the oldest episodes
    /// (reporting them, never silently).
    fn enforce_budget(&mut self) {
        let budget = self.config.memory_budget;
        let mut bytes = self.bytes();
        if bytes <= budget && self.pairs.len() < self.pair_capacity() {
            return;
        }
        let mut victims: Vec<(Key, bool, u32, u64)> = self
            .pairs
            .iter()
            .map(|(k, p)| (*k, p.episode.is_some(), p.evidence(), p.last_seen_ms))
            .collect();
        victims.sort_by_key(|&(_, has_episode, evidence, last)| (has_episode, evidence, last));
        let target_pairs = self.pair_capacity() * 9 / 10;
        for (key, _, _, _) in victims {
            if bytes <= budget * 9 / 10 && self.pairs.len() <= target_pairs {
                break;
            }
            if let Some(pair) = self.pairs.remove(&key) {
                bytes = bytes.saturating_sub(pair.heap_bytes() + PAIR_BYTES);
                self.stats.tracked_evictions += 1;
                if pair.episode.is_some() {
                    self.reports.push(Report::Scan(report(
                        key,
                        &pair,
                        EpisodeState::Closed,
                        &self.config,
                    )));
                }
            }
        }
    }
}

fn report(
    (scanner, target): Key,
    pair: &Pair,
    state: EpisodeState,
    config: &DetectorConfig,
) -> EpisodeReport {
    let kinds = pair.kinds(config);
    let mut report = EpisodeReport {
        episode: pair.episode.as_ref().map_or(0, |e| e.id),
        state,
        scanner,
        target,
        kinds: ScanKind::ALL
            .into_iter()
            .filter(|k| kinds & k.bit() != 0)
            .collect(),
        ports_probed: pair.ports_probed(),
        port_sample: pair.port_sample(64),
        open_ports: pair.open_ports(),
        probes: pair.probes,
        first_seen_ms: pair.first_seen_ms,
        last_seen_ms: pair.last_seen_ms,
        confidence: pair.confidence(config),
        companions: pair
            .episode
            .as_ref()
            .map(|e| e.companions.clone())
            .unwrap_or_default(),
        fragmented: pair.fragmented,
        exposed: Vec::new(),
        explanation: String::new(),
    };
    report.explanation = explain::scan(&report);
    report
}

#[cfg(test)]
mod tests;

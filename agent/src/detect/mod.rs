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

//!
//! This file wires the parts together and owns the [`Detector`] state; the
//! thresholds live in `config.rs`, the report types in [`crate::findings`]
//! (re-exported here for the old paths). It must not do I/O or read clocks.

mod ambiguous;
mod config;
mod episode;
mod flood;
mod handshake;
mod knock;
mod pair;
mod ports;
mod probation;

use std::collections::VecDeque;
use std::net::IpAddr;

use crate::decode::{Icmp, Packet, Transport, Unreachable, tcp_flags};
pub use crate::findings::{
    EpisodeReport, EpisodeState, Exposure, FloodReport, Knock, KnockReport, MAX_KNOCKS, Report,
    ScanKind, Severity,
};
use ambiguous::{Ambiguous, AmbiguousCache};
pub use config::DetectorConfig;
use episode::report;
use handshake::Handshakes;
use pair::{Contact, Pair};
pub use ports::PortSet;
use probation::Probation;

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

/// The detector. Feed it with [`Detector::observe`] and
/// [`Detector::tick`]; take reports with [`Detector::drain_reports`].
#[derive(Debug)]
pub struct Detector {
    config: DetectorConfig,
    /// This PC's addresses: a handful, so a list beats a hash set.
    local: Vec<IpAddr>,
    ambiguous: AmbiguousCache,
    probation: HashMap<Key, Probation>,
    probation_order: VecDeque<(Key, u64)>,
    probation_seq: u64,
    pairs: HashMap<Key, Pair>,
    outbound: HashMap<FlowKey, u64>,
    handshakes: Handshakes,
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
            ambiguous: AmbiguousCache::new(),
            probation: HashMap::default(),
            probation_order: VecDeque::new(),
            probation_seq: 0,
            pairs: HashMap::default(),
            outbound: HashMap::default(),
            handshakes: Handshakes::default(),
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
            + self.handshakes.len() * handshake::ENTRY_BYTES
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
                ack,
                ..
            } => {
                if flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::ACK
                    && !self.handshakes.is_empty()
                    && self.handshakes.acknowledged(
                        &(scanner, src_port, target, dst_port),
                        ack,
                        now,
                    )
                {
                    self.handshake_verified((scanner, target));
                }
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
                        self.ambiguous.remember(Ambiguous {
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

    /// The source of `key` completed a TCP handshake with this PC: its
    /// address is its own.
    fn handshake_verified(&mut self, key: Key) {
        if let Some(pair) = self.pairs.get_mut(&key) {
            pair.verify_handshake();
        } else if let Some(entry) = self.probation.get_mut(&key) {
            entry.handshake_verified = true;
        }
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
                handshake_verified: false,
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
                handshake_verified: false,
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
        if entry.handshake_verified {
            pair.verify_handshake();
        }
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
                seq,
                ..
            } => {
                let syn_ack = tcp_flags::SYN | tcp_flags::ACK;
                if flags & syn_ack == tcp_flags::SYN {
                    // This PC opens a connection: its replies are not probes.
                    self.remember_flow((6, remote, dst_port, src_port), now);
                    return;
                }
                if flags & (tcp_flags::RST | tcp_flags::ACK) == tcp_flags::RST
                    && let Some(probe) = self.ambiguous.take(remote, dst_port, target, src_port)
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
                let watched = self.answer(key, pair::Answered::Tcp(src_port), answer, now);
                if watched && answer == pair::Answer::Open {
                    self.handshakes
                        .answered((remote, dst_port, target, src_port), seq, now);
                }
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
        self.handshakes.expire(now);
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

#[cfg(test)]
mod tests;

//! Scan detection: a pure state machine. Decoded packets and their
//! timestamps go in, episode reports come out; no I/O, no clock reads.
//! Live capture, offline replay and benchmarks drive the same code.
//!
//! What it detects today: TCP SYN scans against this PC. A source becomes a
//! scanner once this PC has refused (answered RST to) its first-contact
//! SYNs on `scan_min_ports` distinct ports, or once it has sent first-contact
//! SYNs to `blind_min_ports` distinct ports with no answer seen (a firewalled
//! PC). Ports that answered SYN-ACK are the open doors the scanner found.
//!
//! One scanner × one target × a span of time is an *episode*. It is
//! reported when detected, again at most every `update_interval` while its
//! counts grow, and finally when it has been idle for `episode_idle`.
//!
//! Memory is bounded: at most `max_tracked_sources` (scanner, target) pairs
//! are tracked; further new pairs are counted in
//! [`Detector::untracked_probes`] and ignored until room frees up.

use std::collections::HashMap;
use std::collections::HashSet;
use std::net::IpAddr;

use crate::decode::{Packet, Transport, tcp_flags};
use crate::explain;

/// Detection thresholds. Defaults are documented in `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// Distinct ports refused by this PC before a source is called a scanner.
    pub scan_min_ports: u32,
    /// Distinct unanswered first-contact ports that also make a scanner.
    pub blind_min_ports: u32,
    /// Milliseconds of silence after which an episode is closed.
    pub episode_idle_ms: u64,
    /// Least milliseconds between two reports of one active episode.
    pub update_interval_ms: u64,
    /// Most (source, target) pairs tracked at once.
    pub max_tracked_sources: usize,
    /// Sources never reported (campus scanners, monitoring).
    pub allowlist: HashSet<IpAddr>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            scan_min_ports: 5,
            blind_min_ports: 25,
            episode_idle_ms: 60_000,
            update_interval_ms: 2_000,
            max_tracked_sources: 16_384,
            allowlist: HashSet::new(),
        }
    }
}

/// How a scanner probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScanKind {
    Syn,
}

/// Where an episode is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeState {
    Detected,
    Active,
    Closed,
}

/// One report of an episode.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeReport {
    /// Detector-local episode number, unique for the detector's life.
    pub episode: u64,
    pub state: EpisodeState,
    pub scanner: IpAddr,
    pub target: IpAddr,
    pub kinds: Vec<ScanKind>,
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
    pub explanation: String,
}

/// Most ports kept in a report's sample.
const PORT_SAMPLE: usize = 64;
/// Ports kept in a small list before switching to a 8 KiB bitmap.
const SMALL_SET: usize = 32;

/// A set of ports: a short sorted list, or a bitmap once it grows.
#[derive(Debug, Clone)]
enum PortSet {
    Small(Vec<u16>),
    Bitmap { bits: Box<[u64; 1024]>, len: u32 },
}

impl Default for PortSet {
    fn default() -> Self {
        Self::Small(Vec::new())
    }
}

impl PortSet {
    /// Adds `port`; true if it was new.
    fn insert(&mut self, port: u16) -> bool {
        match self {
            Self::Small(list) => match list.binary_search(&port) {
                Ok(_) => false,
                Err(at) if list.len() < SMALL_SET => {
                    list.insert(at, port);
                    true
                }
                Err(_) => {
                    let mut bits = Box::new([0u64; 1024]);
                    for &p in list.iter() {
                        bits[usize::from(p) / 64] |= 1 << (p % 64);
                    }
                    let len = list.len() as u32;
                    *self = Self::Bitmap { bits, len };
                    self.insert(port)
                }
            },
            Self::Bitmap { bits, len } => {
                let (word, bit) = (usize::from(port) / 64, port % 64);
                let new = bits[word] & (1 << bit) == 0;
                if new {
                    bits[word] |= 1 << bit;
                    *len += 1;
                }
                new
            }
        }
    }

    fn contains(&self, port: u16) -> bool {
        match self {
            Self::Small(list) => list.binary_search(&port).is_ok(),
            Self::Bitmap { bits, .. } => bits[usize::from(port) / 64] & (1 << (port % 64)) != 0,
        }
    }

    fn len(&self) -> u32 {
        match self {
            Self::Small(list) => list.len() as u32,
            Self::Bitmap { len, .. } => *len,
        }
    }

    /// The lowest `max` ports, ascending.
    fn sample(&self, max: usize) -> Vec<u16> {
        match self {
            Self::Small(list) => list.iter().copied().take(max).collect(),
            Self::Bitmap { bits, .. } => (0..=u16::MAX)
                .filter(|&p| bits[usize::from(p) / 64] & (1 << (p % 64)) != 0)
                .take(max)
                .collect(),
        }
    }
}

/// What we know about one source probing one local address.
#[derive(Debug, Default)]
struct SourceState {
    first_seen_ms: u64,
    last_seen_ms: u64,
    probes: u64,
    /// Ports that received a first-contact SYN.
    probed: PortSet,
    /// Probed ports this PC refused (RST).
    refused: PortSet,
    /// Probed ports this PC answered SYN-ACK: open.
    open: PortSet,
    episode: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    id: u64,
    last_report_ms: u64,
    reported_probes: u64,
}

/// The detector. Feed it with [`Detector::observe`] and
/// [`Detector::tick`]; take reports with [`Detector::drain_reports`].
#[derive(Debug)]
pub struct Detector {
    config: DetectorConfig,
    local: HashSet<IpAddr>,
    sources: HashMap<(IpAddr, IpAddr), SourceState>,
    next_episode: u64,
    reports: Vec<EpisodeReport>,
    untracked_probes: u64,
}

impl Detector {
    /// A detector for a PC whose own addresses are `local`.
    pub fn new(config: DetectorConfig, local: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            config,
            local: local.into_iter().collect(),
            sources: HashMap::new(),
            next_episode: 1,
            reports: Vec::new(),
            untracked_probes: 0,
        }
    }

    /// Replaces the thresholds (a pushed policy); tracked state is kept.
    pub fn set_config(&mut self, config: DetectorConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Probes ignored because the state table was full.
    pub fn untracked_probes(&self) -> u64 {
        self.untracked_probes
    }

    /// (source, target) pairs tracked now.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// Takes the reports made so far.
    pub fn drain_reports(&mut self) -> std::vec::Drain<'_, EpisodeReport> {
        self.reports.drain(..)
    }

    /// Feeds one packet seen at `now_ms` (Unix milliseconds).
    pub fn observe(&mut self, packet: &Packet, now_ms: u64) {
        let Transport::Tcp {
            src_port,
            dst_port,
            flags,
        } = packet.transport
        else {
            return;
        };
        let inbound = self.local.contains(&packet.dst) && !self.local.contains(&packet.src);
        let outbound = self.local.contains(&packet.src) && !self.local.contains(&packet.dst);
        let syn_only = flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST | tcp_flags::FIN)
            == tcp_flags::SYN;
        if inbound && syn_only {
            self.on_probe(packet.src, packet.dst, dst_port, now_ms);
        } else if outbound {
            let key = (packet.dst, packet.src);
            let Some(state) = self.sources.get_mut(&key) else {
                return;
            };
            if !state.probed.contains(src_port) {
                return;
            }
            if flags & tcp_flags::RST != 0 {
                state.refused.insert(src_port);
            } else if flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK {
                state.open.insert(src_port);
            }
            self.decide(key, now_ms);
        }
    }

    fn on_probe(&mut self, scanner: IpAddr, target: IpAddr, port: u16, now_ms: u64) {
        if self.config.allowlist.contains(&scanner) {
            return;
        }
        let key = (scanner, target);
        if !self.sources.contains_key(&key) && self.sources.len() >= self.config.max_tracked_sources
        {
            self.untracked_probes += 1;
            return;
        }
        let state = self.sources.entry(key).or_insert_with(|| SourceState {
            first_seen_ms: now_ms,
            ..SourceState::default()
        });
        state.last_seen_ms = state.last_seen_ms.max(now_ms);
        state.probes += 1;
        state.probed.insert(port);
        self.decide(key, now_ms);
    }

    /// Opens an episode once the evidence is enough.
    fn decide(&mut self, key: (IpAddr, IpAddr), now_ms: u64) {
        let Some(state) = self.sources.get_mut(&key) else {
            return;
        };
        if state.episode.is_some() {
            return;
        }
        let refused = state.refused.len();
        let unanswered = state.probed.len() - refused - state.open.len();
        if refused < self.config.scan_min_ports && unanswered < self.config.blind_min_ports {
            return;
        }
        let id = self.next_episode;
        self.next_episode += 1;
        state.episode = Some(Episode {
            id,
            last_report_ms: now_ms,
            reported_probes: state.probes,
        });
        let report = report(key, state, EpisodeState::Detected, &self.config);
        self.reports.push(report);
    }

    /// Advances time: sends due updates and closes idle episodes.
    pub fn tick(&mut self, now_ms: u64) {
        let config = &self.config;
        let reports = &mut self.reports;
        self.sources.retain(|&key, state| {
            let idle = now_ms.saturating_sub(state.last_seen_ms) >= config.episode_idle_ms;
            let Some(episode) = &mut state.episode else {
                return !idle;
            };
            if idle {
                reports.push(report(key, state, EpisodeState::Closed, config));
                return false;
            }
            if state.probes > episode.reported_probes
                && now_ms.saturating_sub(episode.last_report_ms) >= config.update_interval_ms
            {
                episode.last_report_ms = now_ms;
                episode.reported_probes = state.probes;
                reports.push(report(key, state, EpisodeState::Active, config));
            }
            true
        });
    }

    /// Closes every open episode now (agent shutdown, end of a replay).
    pub fn finish(&mut self) {
        let config = &self.config;
        for (&key, state) in &self.sources {
            if state.episode.is_some() {
                self.reports
                    .push(report(key, state, EpisodeState::Closed, config));
            }
        }
        self.sources.clear();
    }
}

fn report(
    (scanner, target): (IpAddr, IpAddr),
    state: &SourceState,
    episode_state: EpisodeState,
    config: &DetectorConfig,
) -> EpisodeReport {
    let open_ports = state.open.sample(usize::from(u16::MAX) + 1);
    let refused = state.refused.len();
    // More refusals beyond the threshold make a mistake less likely.
    let confidence = (60 + 5 * refused.saturating_sub(config.scan_min_ports)).min(99) as u8;
    let mut report = EpisodeReport {
        episode: state.episode.as_ref().map_or(0, |e| e.id),
        state: episode_state,
        scanner,
        target,
        kinds: vec![ScanKind::Syn],
        ports_probed: state.probed.len(),
        port_sample: state.probed.sample(PORT_SAMPLE),
        open_ports,
        probes: state.probes,
        first_seen_ms: state.first_seen_ms,
        last_seen_ms: state.last_seen_ms,
        confidence,
        explanation: String::new(),
    };
    report.explanation = explain::scan(&report);
    report
}

#[cfg(test)]
mod tests;

//! Outbound anomalies: an upload far above this PC's baseline, outbound
//! scanning, SMTP fan-out and failed connections. Each is an episode:
//! reported when detected, and again with final counts when it has been
//! quiet for `idle_close_ms`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use super::config::OutboundConfig;
use super::flows::Upload;
use crate::decode::{Packet, Transport, tcp_flags};
use crate::detect::{Detector, DetectorConfig};
use crate::findings::{AnomalyKind, AnomalyReport, EpisodeState, Report};
use crate::procfs::Process;

/// An outbound TCP connection with no answer for this long has failed.
const ATTEMPT_TIMEOUT_MS: u64 = 3_000;
/// Pending connection attempts remembered at once.
const MAX_ATTEMPTS: usize = 65_536;
/// Hosts remembered per port, and ports tracked, for fan-out checks.
const MAX_HOSTS: usize = 4_096;
const MAX_PORTS: usize = 1_024;
/// Hosts and ports listed in one report.
const SAMPLE: usize = 64;

/// What the upload baseline has learned: kept across agent restarts (see
/// [`crate::state_file`]) so that a reboot does not reset a PC to "no usual
/// amount yet".
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    /// The hour being counted (Unix hours) and the bytes sent in it so far.
    pub hour: u64,
    pub sent_this_hour: u64,
    /// Usual bytes sent per hour, per hour of day (UTC); `None` until seen.
    pub per_hour_of_day: [Option<u64>; 24],
}

/// What one open anomaly is about: kind, process id, remote, port.
type EpisodeKey = (AnomalyKind, Option<u32>, Option<IpAddr>, u16);

#[derive(Debug)]
struct Open {
    report: AnomalyReport,
    last_active_ms: u64,
}

#[derive(Debug)]
struct UploadTrack {
    process: Option<Process>,
    /// (minute, bytes) newest last.
    minutes: VecDeque<(u64, u64)>,
    total: u64,
    first_ms: u64,
    last_ms: u64,
}

/// (local port, remote, remote port) of a connection this PC opened.
type AttemptKey = (u16, IpAddr, u16);

#[derive(Debug)]
pub struct Anomalies {
    config: OutboundConfig,
    uploads: HashMap<(Option<u32>, IpAddr, u16), UploadTrack>,
    /// Bytes this PC sent in the current hour, and the hour.
    hour: (u64, u64),
    /// Usual bytes per hour, per hour of day (UTC); `None` until seen.
    baseline: [Option<u64>; 24],
    attempts: HashMap<AttemptKey, u64>,
    /// Per remote port: hosts that refused or ignored a connection, with
    /// when.
    failed_hosts: HashMap<u16, HashMap<IpAddr, u64>>,
    smtp_hosts: HashMap<IpAddr, u64>,
    /// (when, failed) of each resolved connection attempt.
    outcomes: VecDeque<(u64, bool)>,
    /// The scan detector with the roles reversed: this PC as the scanner.
    reversed: Detector,
    reversed_episodes: HashMap<u64, EpisodeKey>,
    open: HashMap<EpisodeKey, Open>,
    next_episode: u64,
    reports: Vec<AnomalyReport>,
}

impl Anomalies {
    pub fn new(config: OutboundConfig, local: Vec<IpAddr>) -> Self {
        let reversed = Detector::new(
            DetectorConfig {
                scan_min_ports: config.scan_min_ports,
                knock_report_ms: 0,
                flood_new_sources_per_sec: u32::MAX,
                memory_budget: 4 << 20,
                ..DetectorConfig::default()
            },
            local,
        );
        Self {
            config,
            uploads: HashMap::new(),
            hour: (0, 0),
            baseline: [None; 24],
            attempts: HashMap::new(),
            failed_hosts: HashMap::new(),
            smtp_hosts: HashMap::new(),
            outcomes: VecDeque::new(),
            reversed,
            reversed_episodes: HashMap::new(),
            open: HashMap::new(),
            next_episode: 1,
            reports: Vec::new(),
        }
    }

    pub fn observe(&mut self, packet: &Packet, outgoing: bool, now: u64) {
        // The reversed detector sees this PC where a remote scanner would
        // be: swap the addresses, keep the ports. It gets this PC's probes
        // and the answers to them only, so traffic that remote hosts start
        // (a forged-source flood included) costs it nothing.
        if Self::reversed_wants(packet, outgoing) {
            self.reversed.observe(
                &Packet {
                    src: packet.dst,
                    dst: packet.src,
                    ..*packet
                },
                now,
            );
        }
        if outgoing {
            // Everything this PC sends counts towards its hourly baseline.
            self.hour.1 += u64::from(packet.ip_len);
        }
        let Transport::Tcp {
            src_port,
            dst_port,
            flags,
            ..
        } = packet.transport
        else {
            return;
        };
        if outgoing {
            if flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
                if dst_port == 25 && self.smtp_hosts.len() < MAX_HOSTS {
                    self.smtp_hosts.insert(packet.dst, now);
                }
                if self.attempts.len() < MAX_ATTEMPTS {
                    self.attempts
                        .entry((src_port, packet.dst, dst_port))
                        .or_insert(now);
                }
            }
            return;
        }
        let key = (dst_port, packet.src, src_port);
        let syn_ack = tcp_flags::SYN | tcp_flags::ACK;
        let failed = if flags & syn_ack == syn_ack {
            false
        } else if flags & tcp_flags::RST != 0 {
            true
        } else {
            return;
        };
        if self.attempts.remove(&key).is_some() {
            self.outcome(packet.src, src_port, failed, now);
        }
    }

    /// This PC's probes (a SYN, a UDP datagram, an unusual protocol) and
    /// remote answers to probes (SYN-ACK, RST, ICMP).
    fn reversed_wants(packet: &Packet, outgoing: bool) -> bool {
        match packet.transport {
            Transport::Tcp { flags, .. } => {
                let syn_ack = tcp_flags::SYN | tcp_flags::ACK;
                if outgoing {
                    flags & (syn_ack | tcp_flags::RST) == tcp_flags::SYN
                } else {
                    flags & syn_ack == syn_ack || flags & tcp_flags::RST != 0
                }
            }
            Transport::Udp { .. } => outgoing,
            Transport::Icmp(_) => !outgoing,
            Transport::Fragment { .. } | Transport::Other { .. } => outgoing,
        }
    }

    fn outcome(&mut self, remote: IpAddr, port: u16, failed: bool, now: u64) {
        self.outcomes.push_back((now, failed));
        if self.outcomes.len() > 100_000 {
            self.outcomes.pop_front();
        }
        if failed {
            if !self.failed_hosts.contains_key(&port) && self.failed_hosts.len() >= MAX_PORTS {
                return;
            }
            let hosts = self.failed_hosts.entry(port).or_default();
            if hosts.len() < MAX_HOSTS || hosts.contains_key(&remote) {
                hosts.insert(remote, now);
            }
        }
    }

    /// Runs the checks; returns the reports made.
    pub fn tick(&mut self, now: u64, uploads: &[Upload]) -> Vec<AnomalyReport> {
        self.roll_hour(now);
        self.check_uploads(now, uploads);
        self.expire_attempts(now);
        self.check_fanout(now);
        self.check_failed(now);
        self.check_reversed(now);
        self.close_idle(now);
        std::mem::take(&mut self.reports)
    }

    pub fn finish(&mut self, now: u64) -> Vec<AnomalyReport> {
        self.reversed.finish();
        self.check_reversed(now);
        let open: Vec<EpisodeKey> = self.open.keys().copied().collect();
        for key in open {
            self.close(key, now);
        }
        std::mem::take(&mut self.reports)
    }

    /// What the baseline has learned so far.
    pub fn baseline(&self) -> Baseline {
        Baseline {
            hour: self.hour.0,
            sent_this_hour: self.hour.1,
            per_hour_of_day: self.baseline,
        }
    }

    /// Starts from a baseline learned earlier. The hour it was counting is
    /// folded in at the next hour change, as if the agent had run on.
    pub fn restore_baseline(&mut self, learned: Baseline) {
        self.hour = (learned.hour, learned.sent_this_hour);
        self.baseline = learned.per_hour_of_day;
    }

    fn roll_hour(&mut self, now: u64) {
        let hour = now / 3_600_000;
        if self.hour.0 == 0 {
            self.hour.0 = hour;
            return;
        }
        if hour == self.hour.0 {
            return;
        }
        let slot = (self.hour.0 % 24) as usize;
        let seen = self.hour.1;
        // Exponential moving average per hour of day: recent days count
        // most, one odd day moves it by a third.
        self.baseline[slot] = Some(match self.baseline[slot] {
            None => seen,
            Some(old) => (old * 2 + seen) / 3,
        });
        self.hour = (hour, 0);
    }

    fn upload_threshold(&self, now: u64) -> (u64, u64) {
        let slot = ((now / 3_600_000) % 24) as usize;
        let baseline = self.baseline[slot].unwrap_or(0);
        let scaled = baseline
            .saturating_mul(self.config.upload_baseline_factor)
            .saturating_mul(self.config.upload_window_ms)
            / 3_600_000;
        (self.config.upload_min_bytes.max(scaled), baseline)
    }

    fn check_uploads(&mut self, now: u64, uploads: &[Upload]) {
        let minute = now / 60_000;
        for upload in uploads {
            let pid = upload.process.as_ref().map(|p| p.pid);
            let track = self
                .uploads
                .entry((pid, upload.remote, upload.remote_port))
                .or_insert_with(|| UploadTrack {
                    process: upload.process.clone(),
                    minutes: VecDeque::new(),
                    total: 0,
                    first_ms: now,
                    last_ms: now,
                });
            track.total += upload.bytes;
            track.last_ms = now;
            match track.minutes.back_mut() {
                Some((m, bytes)) if *m == minute => *bytes += upload.bytes,
                _ => track.minutes.push_back((minute, upload.bytes)),
            }
        }
        let (threshold, baseline) = self.upload_threshold(now);
        let window_minutes = self.config.upload_window_ms.div_ceil(60_000);
        let mut due = Vec::new();
        for (&(pid, remote, port), track) in &mut self.uploads {
            while track
                .minutes
                .front()
                .is_some_and(|(m, _)| m + window_minutes <= minute)
            {
                track.minutes.pop_front();
            }
            let key = (AnomalyKind::UploadVolume, pid, Some(remote), port);
            if let Some(open) = self.open.get_mut(&key) {
                open.report.bytes_out = track.total;
                open.report.last_seen_ms = track.last_ms;
                open.last_active_ms = track.last_ms;
                continue;
            }
            let in_window: u64 = track.minutes.iter().map(|(_, b)| b).sum();
            if in_window >= threshold {
                due.push((
                    key,
                    track.process.clone(),
                    track.total,
                    track.first_ms,
                    track.last_ms,
                ));
            }
        }
        for (key, process, total, first, last) in due {
            let report = AnomalyReport {
                process,
                remote: key.2,
                port: key.3,
                hosts: 1,
                bytes_out: total,
                baseline_per_hour: baseline,
                first_seen_ms: first,
                last_seen_ms: last,
                window_ms: self.config.upload_window_ms,
                ..self.blank(AnomalyKind::UploadVolume, now)
            };
            self.start(key, report, last);
        }
        let keep = self.config.upload_window_ms;
        let open = &self.open;
        self.uploads.retain(|&(pid, remote, port), t| {
            open.contains_key(&(AnomalyKind::UploadVolume, pid, Some(remote), port))
                || now.saturating_sub(t.last_ms) < keep
        });
    }

    fn expire_attempts(&mut self, now: u64) {
        let expired: Vec<AttemptKey> = self
            .attempts
            .iter()
            .filter(|(_, since)| now.saturating_sub(**since) >= ATTEMPT_TIMEOUT_MS)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.attempts.remove(&key);
            self.outcome(key.1, key.2, true, now);
        }
    }

    fn check_fanout(&mut self, now: u64) {
        let window = self.config.scan_window_ms;
        self.failed_hosts.retain(|_, hosts| {
            hosts.retain(|_, seen| now.saturating_sub(*seen) < window);
            !hosts.is_empty()
        });
        let min_hosts = self.config.scan_min_hosts as usize;
        let ports: Vec<(u16, Vec<(IpAddr, u64)>)> = self
            .failed_hosts
            .iter()
            .filter(|(_, hosts)| hosts.len() >= min_hosts)
            .map(|(port, hosts)| (*port, hosts.iter().map(|(h, t)| (*h, *t)).collect()))
            .collect();
        for (port, hosts) in ports {
            self.grow_or_start((AnomalyKind::Scan, None, None, port), &hosts, now, window);
        }
        let smtp_window = self.config.smtp_window_ms;
        self.smtp_hosts
            .retain(|_, seen| now.saturating_sub(*seen) < smtp_window);
        if self.smtp_hosts.len() >= self.config.smtp_min_hosts as usize {
            let hosts: Vec<(IpAddr, u64)> = self.smtp_hosts.iter().map(|(h, t)| (*h, *t)).collect();
            self.grow_or_start(
                (AnomalyKind::SmtpFanout, None, None, 25),
                &hosts,
                now,
                smtp_window,
            );
        }
    }

    /// Opens a fan-out anomaly over `hosts` (with when each was last
    /// tried), or updates the open one.
    fn grow_or_start(&mut self, key: EpisodeKey, hosts: &[(IpAddr, u64)], now: u64, window: u64) {
        let last = hosts.iter().map(|h| h.1).max().unwrap_or(now);
        if let Some(open) = self.open.get_mut(&key) {
            let report = &mut open.report;
            if last > report.last_seen_ms {
                let known: HashSet<IpAddr> = report.host_sample.iter().copied().collect();
                for (h, _) in hosts.iter().filter(|h| !known.contains(&h.0)) {
                    if report.host_sample.len() < SAMPLE {
                        report.host_sample.push(*h);
                    }
                }
                report.hosts = report.hosts.max(hosts.len() as u32);
                report.last_seen_ms = last;
                open.last_active_ms = last;
            }
            return;
        }
        let mut sample: Vec<IpAddr> = hosts.iter().take(SAMPLE).map(|h| h.0).collect();
        sample.sort_unstable();
        let report = AnomalyReport {
            port: key.3,
            hosts: hosts.len() as u32,
            ports: 1,
            port_sample: vec![key.3],
            host_sample: sample,
            first_seen_ms: hosts.iter().map(|h| h.1).min().unwrap_or(now),
            last_seen_ms: last,
            window_ms: window,
            ..self.blank(key.0, now)
        };
        self.start(key, report, now);
    }

    fn check_failed(&mut self, now: u64) {
        let window = self.config.failed_window_ms;
        while self
            .outcomes
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) >= window)
        {
            self.outcomes.pop_front();
        }
        let attempts = self.outcomes.len() as u32;
        let failed = self.outcomes.iter().filter(|(_, f)| *f).count() as u32;
        let key = (AnomalyKind::FailedConnections, None, None, 0);
        if let Some(open) = self.open.get_mut(&key) {
            if failed > open.report.failed {
                open.report.failed = failed.max(open.report.failed);
                open.report.attempts = attempts.max(open.report.attempts);
                open.report.last_seen_ms = now;
                open.last_active_ms = now;
            }
            return;
        }
        // A scan already explains its failures.
        let scanning = self.open.keys().any(|k| k.0 == AnomalyKind::Scan);
        if scanning
            || attempts < self.config.failed_min_attempts
            || u64::from(failed) * 100
                < u64::from(attempts) * u64::from(self.config.failed_min_percent)
        {
            return;
        }
        let report = AnomalyReport {
            attempts,
            failed,
            first_seen_ms: self.outcomes.front().map_or(now, |o| o.0),
            last_seen_ms: now,
            window_ms: window,
            ..self.blank(AnomalyKind::FailedConnections, now)
        };
        self.start(key, report, now);
    }

    /// Scans of one host by this PC, as the reversed detector found them.
    fn check_reversed(&mut self, now: u64) {
        self.reversed.tick(now);
        let reports: Vec<Report> = self.reversed.drain_reports().collect();
        for report in reports {
            let Report::Scan(scan) = report else { continue };
            // Reversed: the "scanner" is the host this PC probed.
            let victim = scan.scanner;
            let update = |r: &mut AnomalyReport| {
                r.ports = scan.ports_probed;
                r.port_sample = scan.port_sample.clone();
                r.last_seen_ms = scan.last_seen_ms;
                r.attempts = u32::try_from(scan.probes).unwrap_or(u32::MAX);
            };
            match self.reversed_episodes.get(&scan.episode).copied() {
                Some(key) => {
                    if let Some(open) = self.open.get_mut(&key) {
                        update(&mut open.report);
                        open.last_active_ms = now;
                    }
                    if scan.state == EpisodeState::Closed {
                        self.reversed_episodes.remove(&scan.episode);
                        self.close(key, now);
                    }
                }
                None => {
                    let key = (AnomalyKind::Scan, None, Some(victim), 0);
                    let mut report = AnomalyReport {
                        remote: Some(victim),
                        hosts: 1,
                        host_sample: vec![victim],
                        first_seen_ms: scan.first_seen_ms,
                        window_ms: scan.last_seen_ms.saturating_sub(scan.first_seen_ms),
                        ..self.blank(AnomalyKind::Scan, now)
                    };
                    update(&mut report);
                    self.reversed_episodes.insert(scan.episode, key);
                    if !self.open.contains_key(&key) {
                        self.start(key, report, now);
                    }
                    if scan.state == EpisodeState::Closed {
                        self.reversed_episodes.remove(&scan.episode);
                        self.close(key, now);
                    }
                }
            }
        }
    }

    fn blank(&self, kind: AnomalyKind, now: u64) -> AnomalyReport {
        AnomalyReport {
            episode: 0,
            state: EpisodeState::Detected,
            kind,
            process: None,
            remote: None,
            port: 0,
            hosts: 0,
            ports: 0,
            bytes_out: 0,
            baseline_per_hour: 0,
            attempts: 0,
            failed: 0,
            first_seen_ms: now,
            last_seen_ms: now,
            host_sample: Vec::new(),
            port_sample: Vec::new(),
            window_ms: 0,
            explanation: String::new(),
        }
    }

    fn start(&mut self, key: EpisodeKey, mut report: AnomalyReport, now: u64) {
        report.episode = self.next_episode;
        self.next_episode += 1;
        report.state = EpisodeState::Detected;
        self.reports.push(report.clone());
        self.open.insert(
            key,
            Open {
                report,
                last_active_ms: now,
            },
        );
    }

    fn close(&mut self, key: EpisodeKey, _now: u64) {
        // What the episode counted is reported: a new episode of the same
        // kind starts from nothing, never from the same evidence.
        match (key.0, key.2) {
            (AnomalyKind::UploadVolume, Some(remote)) => {
                self.uploads.remove(&(key.1, remote, key.3));
            }
            (AnomalyKind::Scan, None) => {
                self.failed_hosts.remove(&key.3);
            }
            (AnomalyKind::SmtpFanout, _) => self.smtp_hosts.clear(),
            (AnomalyKind::FailedConnections, _) => self.outcomes.clear(),
            _ => {}
        }
        if let Some(mut open) = self.open.remove(&key) {
            open.report.state = EpisodeState::Closed;
            self.reports.push(open.report);
        }
    }

    fn close_idle(&mut self, now: u64) {
        let idle = self.config.idle_close_ms;
        let reversed: HashSet<EpisodeKey> = self.reversed_episodes.values().copied().collect();
        let quiet: Vec<EpisodeKey> = self
            .open
            .iter()
            .filter(|(k, o)| !reversed.contains(k) && now.saturating_sub(o.last_active_ms) >= idle)
            .map(|(k, _)| *k)
            .collect();
        for key in quiet {
            self.close(key, now);
        }
    }
}

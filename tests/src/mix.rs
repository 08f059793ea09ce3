//! A realistic mix of agent events, for the load generator and for
//! benchmarks that want the same rows.
//!
//! Pure: every random choice comes from the caller's rng and every time
//! from the caller's clock, so one seed and one sequence of times always
//! give the same events. No I/O, no clock reads.
//!
//! What a campus PC reports, roughly: mostly scan reports, each episode a
//! `detected` report, some `active` updates and a `closed` report sharing
//! one episode id; scanners in 198.18.0.0/15 (outside the namespace LAN,
//! 198.18.0.0/24) and the PC in 198.19.0.0/16;
//! SYN scans above all; port counts from 10 to 65,535 with a heavy tail
//! (nmap's default 1,000 and a full `-p-` are common); 0 to 3 open ports;
//! sometimes decoys; and about 4 % flood reports. Every event passes the
//! collector's validation (`rows_from_batch`).

use std::net::Ipv4Addr;

use doorwatch_agent::explain::thousands;
use doorwatch_proto::MAX_PORT_SAMPLE;
use doorwatch_proto::v1::{self, EpisodeState, ScanType};
use rand::Rng;

/// Share of events that are flood reports.
pub const FLOOD_SHARE: f64 = 0.04;
/// Scan episodes one simulated PC keeps open at once.
const MAX_OPEN_EPISODES: usize = 4;
/// Explanations are this long, in bytes (they are ASCII).
pub const EXPLANATION_MIN: usize = 120;
pub const EXPLANATION_MAX: usize = 250;

/// Ports that answer on campus PCs, with the words help-desk staff use.
const SERVICES: &[(u32, &str)] = &[
    (22, "remote login"),
    (25, "mail"),
    (53, "name service"),
    (80, "web"),
    (135, "Windows RPC"),
    (139, "old file sharing"),
    (443, "secure web"),
    (445, "file sharing"),
    (3306, "database"),
    (3389, "remote desktop"),
    (5900, "remote screen"),
    (8080, "web proxy"),
];

/// The address of simulated PC number `index` in 198.19.0.0/16 (distinct
/// for the first 65,024 PCs, then repeating).
pub fn agent_ipv4(index: u32) -> Ipv4Addr {
    let host = index % (256 * 254);
    let third = u8::try_from(host / 254).unwrap_or(0);
    let fourth = u8::try_from(host % 254 + 1).unwrap_or(1);
    Ipv4Addr::new(198, 19, third, fourth)
}

/// One PC's stream of reports: the episodes it has open, so successive
/// reports of an episode share its id and their counts grow.
#[derive(Debug, Clone)]
pub struct AgentMix {
    target: Ipv4Addr,
    open: Vec<Episode>,
    flood: Option<Flood>,
}

#[derive(Debug, Clone)]
struct Episode {
    id: [u8; 16],
    scanner: Ipv4Addr,
    scan_types: Vec<i32>,
    /// Ports probed by the time the scan ends.
    ports_total: u32,
    ports_probed: u32,
    /// Share of probes that were retries, in percent.
    retry_percent: u32,
    open_ports: Vec<u32>,
    first_seen_ms: i64,
    confidence: u32,
    companions: Vec<Vec<u8>>,
    fragmented: bool,
    reports: u32,
}

#[derive(Debug, Clone)]
struct Flood {
    id: [u8; 16],
    ports: Vec<u32>,
    sources: u64,
    first_seen_ms: i64,
    reports: u32,
}

impl AgentMix {
    /// A PC at `target` with nothing open yet.
    pub fn new(target: Ipv4Addr) -> Self {
        Self {
            target,
            open: Vec::new(),
            flood: None,
        }
    }

    /// The PC's address, the target of every report.
    pub fn target(&self) -> Ipv4Addr {
        self.target
    }

    /// The next report, made at `now_ms` (Unix milliseconds).
    pub fn next_event(&mut self, rng: &mut impl Rng, now_ms: i64) -> v1::Event {
        let detail = if rng.random_bool(FLOOD_SHARE) {
            v1::event::Detail::Flood(self.flood_report(rng, now_ms))
        } else {
            v1::event::Detail::Scan(self.scan_report(rng, now_ms))
        };
        v1::Event {
            id: uuid_v7(rng, now_ms).to_vec(),
            created_unix_ms: now_ms,
            detail: Some(detail),
        }
    }

    fn scan_report(&mut self, rng: &mut impl Rng, now_ms: i64) -> v1::ScanDetected {
        let continue_one = !self.open.is_empty()
            && (self.open.len() >= MAX_OPEN_EPISODES || rng.random_bool(0.55));
        if !continue_one {
            let episode = Episode::new(rng, self.target, now_ms);
            let report = episode.report(rng, self.target, EpisodeState::Detected, now_ms);
            self.open.push(episode);
            return report;
        }
        let index = rng.random_range(0..self.open.len());
        let episode = &mut self.open[index];
        episode.reports += 1;
        let closing = episode.ports_probed == episode.ports_total
            || episode.reports >= 5
            || rng.random_bool(0.45);
        if closing {
            let mut episode = self.open.swap_remove(index);
            episode.ports_probed = episode.ports_total;
            return episode.report(rng, self.target, EpisodeState::Closed, now_ms);
        }
        let left = episode.ports_total - episode.ports_probed;
        let step = (f64::from(left) * rng.random_range(0.3..0.8)) as u32;
        episode.ports_probed += step.clamp(1, left);
        episode.report(rng, self.target, EpisodeState::Active, now_ms)
    }

    fn flood_report(&mut self, rng: &mut impl Rng, now_ms: i64) -> v1::FloodDetected {
        let (state, flood) = match self.flood.take() {
            None => {
                let mut ports: Vec<u32> = (0..rng.random_range(1..=3))
                    .map(|_| SERVICES[rng.random_range(0..SERVICES.len())].0)
                    .collect();
                ports.sort_unstable();
                ports.dedup();
                let flood = Flood {
                    id: uuid_v7(rng, now_ms),
                    ports,
                    sources: rng.random_range(1_000..5_000),
                    first_seen_ms: now_ms - rng.random_range(1_000..3_000),
                    reports: 1,
                };
                (EpisodeState::Detected, flood)
            }
            Some(mut flood) => {
                flood.reports += 1;
                flood.sources += rng.random_range(1_000..50_000);
                if flood.reports >= 4 || rng.random_bool(0.4) {
                    (EpisodeState::Closed, flood)
                } else {
                    (EpisodeState::Active, flood)
                }
            }
        };
        let secs = (now_ms - flood.first_seen_ms).max(0) / 1000 + 1;
        let ports: Vec<String> = flood.ports.iter().map(|p| service_name(*p)).collect();
        let mut text = format!(
            "{} different addresses opened connections to this PC ({}) on {} within {secs} s.",
            thousands(flood.sources),
            self.target,
            ports.join(", "),
        );
        let tail = if state == EpisodeState::Closed {
            " The flood has stopped."
        } else {
            " The sender addresses are almost certainly forged."
        };
        text.push_str(tail);
        let report = v1::FloodDetected {
            episode_id: flood.id.to_vec(),
            state: state as i32,
            target_ip: self.target.octets().to_vec(),
            ports: flood.ports.clone(),
            sources: flood.sources,
            first_seen_unix_ms: flood.first_seen_ms,
            last_seen_unix_ms: now_ms.max(flood.first_seen_ms),
            explanation: fit_explanation(text),
        };
        if state != EpisodeState::Closed {
            self.flood = Some(flood);
        }
        report
    }
}

impl Episode {
    fn new(rng: &mut impl Rng, target: Ipv4Addr, now_ms: i64) -> Self {
        let ports_total = ports_total(rng);
        let detected_at = (f64::from(ports_total) * rng.random_range(0.1..0.5)) as u32;
        let open_count = match rng.random_range(0..100) {
            0..50 => 0,
            50..80 => 1,
            80..95 => 2,
            _ => 3,
        };
        let mut open_ports: Vec<u32> = (0..open_count)
            .map(|_| SERVICES[rng.random_range(0..SERVICES.len())].0)
            .collect();
        open_ports.sort_unstable();
        open_ports.dedup();
        let companions = if rng.random_bool(0.03) {
            (0..rng.random_range(1..=5))
                .map(|_| scanner_ip(rng, target).octets().to_vec())
                .collect()
        } else {
            Vec::new()
        };
        Self {
            id: uuid_v7(rng, now_ms),
            scanner: scanner_ip(rng, target),
            scan_types: scan_types(rng),
            ports_total,
            ports_probed: detected_at.clamp(10, ports_total),
            retry_percent: rng.random_range(0..30),
            open_ports,
            first_seen_ms: now_ms - rng.random_range(200..3_000),
            confidence: rng.random_range(60..=100),
            companions,
            fragmented: rng.random_bool(0.02),
            reports: 1,
        }
    }

    fn report(
        &self,
        rng: &mut impl Rng,
        target: Ipv4Addr,
        state: EpisodeState,
        now_ms: i64,
    ) -> v1::ScanDetected {
        let last_seen_ms = now_ms.max(self.first_seen_ms);
        // Remote desktop, file sharing and proxy ports found open are the
        // PC's risky exposures.
        let exposed: Vec<u32> = self
            .open_ports
            .iter()
            .copied()
            .filter(|p| matches!(p, 445 | 3389 | 8080))
            .collect();
        v1::ScanDetected {
            episode_id: self.id.to_vec(),
            state: state as i32,
            scanner_ip: self.scanner.octets().to_vec(),
            target_ip: target.octets().to_vec(),
            scan_types: self.scan_types.clone(),
            ports_probed: self.ports_probed,
            port_sample: port_sample(rng, self.ports_probed, self.ports_total),
            open_ports: self.open_ports.clone(),
            probes: u64::from(self.ports_probed)
                + u64::from(self.ports_probed) * u64::from(self.retry_percent) / 100,
            first_seen_unix_ms: self.first_seen_ms,
            last_seen_unix_ms: last_seen_ms,
            confidence: self.confidence,
            explanation: self.explain(target, state, last_seen_ms),
            companions: self.companions.clone(),
            fragmented: self.fragmented,
            // connect() completes a handshake on every open port it finds.
            handshake_verified: !self.open_ports.is_empty()
                && self.scan_types.contains(&(v1::ScanType::Connect as i32)),
            exposed: exposed
                .iter()
                .map(|&port| v1::Exposure {
                    protocol: 6,
                    port,
                    process: String::new(),
                    risk: "a port attackers want most".to_owned(),
                })
                .collect(),
            severity: if !exposed.is_empty() {
                v1::Severity::High
            } else if self.open_ports.is_empty() {
                v1::Severity::Low
            } else {
                v1::Severity::Medium
            } as i32,
        }
    }

    /// Plain words, as the agent writes them for help-desk staff.
    fn explain(&self, target: Ipv4Addr, state: EpisodeState, last_seen_ms: i64) -> String {
        let secs = (last_seen_ms - self.first_seen_ms) / 1000 + 1;
        let kind = self
            .scan_types
            .iter()
            .map(|t| scan_type_words(*t))
            .collect::<Vec<_>>()
            .join(" and ");
        let ports = thousands(u64::from(self.ports_probed));
        let mut text = if state == EpisodeState::Closed {
            format!(
                "{} tried {ports} ports on this PC ({target}) over {secs} s with a {kind} scan and has stopped.",
                self.scanner
            )
        } else {
            format!(
                "{} has tried {ports} ports on this PC ({target}) in {secs} s with a {kind} scan.",
                self.scanner
            )
        };
        text.push_str(&match self.open_ports.as_slice() {
            [] => " None of them was open.".to_owned(),
            [one] => format!(" 1 of them was open: {}.", service_name(*one)),
            many => format!(
                " {} of them were open: {}.",
                many.len(),
                many.iter()
                    .map(|p| service_name(*p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
        if !self.companions.is_empty() {
            text.push_str(&format!(
                " It hid among {} decoy addresses.",
                self.companions.len()
            ));
        }
        fit_explanation(text)
    }
}

/// Adds advice while it fits, so every explanation is 120 to 250 bytes.
fn fit_explanation(mut text: String) -> String {
    const ADVICE: [&str; 2] = [
        " If nobody on campus is testing this PC, tell the IT help desk.",
        " Scanners look for open doors before they try to break in.",
    ];
    for advice in ADVICE {
        if text.len() + advice.len() <= EXPLANATION_MAX {
            text.push_str(advice);
        }
    }
    while text.len() < EXPLANATION_MIN {
        text.push_str(" No action is needed from the user.");
    }
    // The parts above are ASCII, so any byte index is a character boundary.
    text.truncate(EXPLANATION_MAX);
    text
}

/// Final port counts: nmap's default 1,000 and a full sweep are common,
/// the rest follow a heavy tail from 10 up.
fn ports_total(rng: &mut impl Rng) -> u32 {
    match rng.random_range(0..100) {
        0..30 => 1_000,
        30..35 => 65_535,
        _ => {
            // Pareto with shape 0.9 from 10 ports: a few huge, most small.
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            let ports = 10.0 * u.powf(-1.0 / 0.9);
            ports.min(65_535.0) as u32
        }
    }
}

/// Up to 64 distinct probed ports, ascending. Scans of up to 1,024 ports
/// stay among the well-known ones.
fn port_sample(rng: &mut impl Rng, probed: u32, total: u32) -> Vec<u32> {
    let highest = if total <= 1_024 { 1_024 } else { 65_535 };
    let want = (probed as usize).min(MAX_PORT_SAMPLE);
    let mut sample: Vec<u32> = Vec::with_capacity(want);
    while sample.len() < want {
        sample.extend((sample.len()..want).map(|_| rng.random_range(1..=highest)));
        sample.sort_unstable();
        sample.dedup();
    }
    sample
}

/// Mostly SYN; sometimes connect, UDP or a stealth scan; now and then two.
fn scan_types(rng: &mut impl Rng) -> Vec<i32> {
    let first = match rng.random_range(0..100) {
        0..70 => ScanType::Syn,
        70..80 => ScanType::Connect,
        80..88 => ScanType::Udp,
        88..91 => ScanType::Fin,
        91..94 => ScanType::Xmas,
        94..97 => ScanType::Null,
        _ => ScanType::Ack,
    };
    let mut types = vec![first as i32];
    if matches!(first, ScanType::Syn | ScanType::Connect) && rng.random_bool(0.05) {
        types.push(ScanType::Udp as i32);
    }
    types
}

fn scan_type_words(value: i32) -> &'static str {
    match ScanType::try_from(value) {
        Ok(ScanType::Syn) => "SYN",
        Ok(ScanType::Connect) => "connect",
        Ok(ScanType::Udp) => "UDP",
        Ok(ScanType::Fin) => "FIN",
        Ok(ScanType::Xmas) => "Xmas",
        Ok(ScanType::Null) => "NULL",
        Ok(ScanType::Ack) => "ACK",
        _ => "port",
    }
}

/// A scanner in 198.18.0.0/15 that is not the PC itself, nor in
/// 198.18.0.0/24: that is the namespace campus's LAN (`netns`), whose real
/// scanners must not share a sweep's /24 with simulated ones when both run
/// in one test.
fn scanner_ip(rng: &mut impl Rng, target: Ipv4Addr) -> Ipv4Addr {
    loop {
        let ip = Ipv4Addr::new(
            198,
            rng.random_range(18..=19),
            rng.random(),
            rng.random_range(1..=254),
        );
        if ip != target && ip.octets()[..3] != [198, 18, 0] {
            return ip;
        }
    }
}

fn service_name(port: u32) -> String {
    match SERVICES.iter().find(|(p, _)| *p == port) {
        Some((_, name)) => format!("{port} ({name})"),
        None => port.to_string(),
    }
}

/// A UUIDv7 for `now_ms` whose random part comes from `rng`.
fn uuid_v7(rng: &mut impl Rng, now_ms: i64) -> [u8; 16] {
    let random: [u8; 10] = rng.random();
    let millis = u64::try_from(now_ms).unwrap_or(0);
    *uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .as_bytes()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use doorwatch_collector::ingest::rows_from_batch;
    use doorwatch_collector::trust::identity::AgentIdentity;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    const NOW_MS: i64 = 1_764_000_000_000;

    fn events(seed: u64, n: usize) -> Vec<v1::Event> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut mix = AgentMix::new(agent_ipv4(7));
        (0..n)
            .map(|i| mix.next_event(&mut rng, NOW_MS + i as i64 * 37))
            .collect()
    }

    #[test]
    fn every_event_passes_the_collectors_validation() {
        let identity = AgentIdentity {
            agent_id: "lg-00007".into(),
        };
        let all = events(1, 20_000);
        for (seq, chunk) in all.chunks(1_000).enumerate() {
            let batch = v1::EventBatch {
                seq: seq as u64 + 1,
                events: chunk.to_vec(),
            };
            if let Err(e) = rows_from_batch(&identity, 1_764_000_000, batch) {
                panic!("generated batch refused: {e}");
            }
        }
    }

    #[test]
    fn the_mix_looks_like_a_campus() {
        let all = events(2, 20_000);
        let floods = all
            .iter()
            .filter(|e| matches!(e.detail, Some(v1::event::Detail::Flood(_))))
            .count();
        let share = floods as f64 / all.len() as f64;
        assert!((0.03..=0.05).contains(&share), "flood share {share}");

        let mut syn = 0;
        let mut states: HashMap<Vec<u8>, Vec<i32>> = HashMap::new();
        for event in &all {
            let Some(v1::event::Detail::Scan(scan)) = &event.detail else {
                continue;
            };
            if scan.scan_types.contains(&(ScanType::Syn as i32)) {
                syn += 1;
            }
            assert!((10..=65_535).contains(&scan.ports_probed));
            assert!(scan.probes >= u64::from(scan.ports_probed));
            assert!(scan.port_sample.len() <= MAX_PORT_SAMPLE);
            assert!(
                scan.port_sample.windows(2).all(|w| w[0] < w[1]),
                "ascending and distinct"
            );
            assert!(scan.open_ports.len() <= 3);
            assert!(scan.last_seen_unix_ms >= scan.first_seen_unix_ms);
            assert!(
                scan.scanner_ip[0] == 198 && (18..=19).contains(&scan.scanner_ip[1]),
                "scanner in 198.18.0.0/15"
            );
            assert_eq!(scan.target_ip, vec![198, 19, 0, 8]);
            let len = scan.explanation.len();
            assert!(
                (EXPLANATION_MIN..=EXPLANATION_MAX).contains(&len),
                "{len}: {}",
                scan.explanation
            );
            states
                .entry(scan.episode_id.clone())
                .or_default()
                .push(scan.state);
        }
        assert!(syn * 100 / (all.len() - floods) > 60, "mostly SYN");
        let detected = EpisodeState::Detected as i32;
        let closed = EpisodeState::Closed as i32;
        for reports in states.values() {
            assert_eq!(reports[0], detected, "an episode starts detected");
            if let Some(i) = reports.iter().position(|s| *s == closed) {
                assert_eq!(i, reports.len() - 1, "nothing after closed");
            }
        }
        assert!(
            states.values().any(|r| r.len() >= 3),
            "episodes get updates"
        );
    }

    #[test]
    fn same_seed_same_events() {
        assert_eq!(events(3, 500), events(3, 500));
        assert_ne!(events(3, 50), events(4, 50));
    }

    #[test]
    fn agent_addresses_are_distinct_and_in_range() {
        let a: std::collections::HashSet<Ipv4Addr> = (0..20_000).map(agent_ipv4).collect();
        assert_eq!(a.len(), 20_000);
        assert!(
            a.iter()
                .all(|ip| ip.octets()[..2] == [198, 19] && ip.octets()[3] != 0)
        );
    }
}

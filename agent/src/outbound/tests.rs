use super::*;
use crate::decode::{Packet, Transport};
use crate::findings::EpisodeState;
use crate::procfs::Process;

const PC: &str = "198.18.0.10";
const SYN: u8 = tcp_flags::SYN;
const SYN_ACK: u8 = tcp_flags::SYN | tcp_flags::ACK;
const ACK: u8 = tcp_flags::ACK;
const RST_ACK: u8 = tcp_flags::RST | tcp_flags::ACK;

use crate::decode::tcp_flags;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("literal")
}

fn process(pid: u32, name: &str) -> Process {
    Process {
        pid,
        name: name.into(),
        exe: format!("/usr/bin/{name}"),
        user: "alice".into(),
    }
}

/// Owners as procfs would give them: sockets by local port, and maybe one
/// raw-packet sender.
#[derive(Default)]
struct FakeOwners {
    by_port: HashMap<u16, Process>,
    raw: Option<Process>,
}

use std::collections::HashMap;

impl Owners for FakeOwners {
    fn owner(&self, _: u8, _: IpAddr, local_port: u16, _: IpAddr, _: u16) -> Option<Process> {
        self.by_port.get(&local_port).cloned()
    }
    fn raw_sender(&self) -> Option<Process> {
        self.raw.clone()
    }
}

struct Pc {
    m: Monitor,
    owners: FakeOwners,
    now: u64,
    reports: Vec<OutboundReport>,
}

impl Pc {
    fn new() -> Self {
        Self {
            m: Monitor::new(OutboundConfig::default(), [ip(PC)]),
            owners: FakeOwners::default(),
            now: 1_764_000_000_000,
            reports: Vec::new(),
        }
    }

    fn tcp(
        &mut self,
        out: bool,
        remote: &str,
        local_port: u16,
        remote_port: u16,
        flags: u8,
        len: u32,
    ) {
        let (src, dst, src_port, dst_port) = if out {
            (ip(PC), ip(remote), local_port, remote_port)
        } else {
            (ip(remote), ip(PC), remote_port, local_port)
        };
        self.m.observe(
            &Packet {
                src,
                dst,
                ip_len: len,
                transport: Transport::Tcp {
                    src_port,
                    dst_port,
                    seq: 0,
                    ack: 0,
                    flags,
                    window: 1024,
                    options_len: 20,
                },
            },
            self.now,
        );
    }

    /// Time passes in 200 ms ticks, with an owner refresh when asked for.
    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 200;
            self.m.tick(self.now);
            if self.m.needs_owners() {
                self.m.attribute(&self.owners);
            }
            self.reports.extend(self.m.drain_reports());
        }
    }

    fn anomalies(&self) -> Vec<&AnomalyReport> {
        self.reports
            .iter()
            .filter_map(|r| match r {
                OutboundReport::Anomaly(a) => Some(a),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_big_upload_is_one_episode_naming_the_process_with_exact_bytes() {
    let mut pc = Pc::new();
    pc.owners.by_port.insert(50_000, process(4242, "curl"));
    pc.tcp(true, "198.18.0.50", 50_000, 8000, SYN, 60);
    pc.tcp(false, "198.18.0.50", 50_000, 8000, SYN_ACK, 60);
    let mut sent = 60u64;
    for i in 0..150_000u32 {
        pc.tcp(true, "198.18.0.50", 50_000, 8000, ACK, 1500);
        sent += 1500;
        if i % 1000 == 0 {
            pc.tcp(false, "198.18.0.50", 50_000, 8000, ACK, 52);
            pc.advance(20);
        }
    }
    pc.advance(15_000);
    let anomalies = pc.anomalies();
    let uploads: Vec<_> = anomalies
        .iter()
        .filter(|a| a.kind == AnomalyKind::UploadVolume)
        .collect();
    assert_eq!(uploads.len(), 2, "detected, then closed: {anomalies:#?}");
    let last = uploads[1];
    assert_eq!(last.state, EpisodeState::Closed);
    assert_eq!(last.bytes_out, sent);
    assert_eq!(last.remote, Some(ip("198.18.0.50")));
    assert_eq!(last.port, 8000);
    assert_eq!(last.process.as_ref().map(|p| p.name.as_str()), Some("curl"));
    assert!(
        last.explanation
            .starts_with("curl (pid 4242, user alice) sent 225 MB to 198.18.0.50:8000"),
        "{}",
        last.explanation
    );
    assert_eq!(anomalies.len(), 2, "nothing but the upload: {anomalies:#?}");
    // The minute summaries add up to the same bytes.
    pc.m.finish(pc.now);
    pc.m.attribute(&pc.owners);
    pc.reports.extend(pc.m.drain_reports());
    let summed: u64 = pc
        .reports
        .iter()
        .filter_map(|r| match r {
            OutboundReport::Flows(f) => {
                Some(f.rows.iter().map(|r| r.counts.bytes_out).sum::<u64>())
            }
            _ => None,
        })
        .sum();
    assert_eq!(summed, sent);
}

#[test]
fn probing_many_ports_of_one_host_is_an_outbound_scan_by_the_raw_sender() {
    let mut pc = Pc::new();
    pc.owners.raw = Some(process(77, "nmap"));
    for port in 1..=100 {
        pc.tcp(true, "198.18.0.11", 40_000, port, SYN, 44);
        pc.tcp(false, "198.18.0.11", 40_000, port, RST_ACK, 40);
    }
    pc.advance(70_000);
    let anomalies = pc.anomalies();
    let scans: Vec<_> = anomalies
        .iter()
        .filter(|a| a.kind == AnomalyKind::Scan)
        .collect();
    assert!(!scans.is_empty(), "{anomalies:#?}");
    let last = scans[scans.len() - 1];
    assert_eq!(last.remote, Some(ip("198.18.0.11")));
    assert_eq!(last.ports, 100);
    assert_eq!(last.process.as_ref().map(|p| p.name.as_str()), Some("nmap"));
    assert!(
        last.explanation.contains("probed 100 ports of 198.18.0.11"),
        "{}",
        last.explanation
    );
}

#[test]
fn one_port_on_many_hosts_is_worm_like_scanning() {
    let mut pc = Pc::new();
    pc.owners.by_port.insert(40_000, process(99, "worm"));
    for host in 1..=30 {
        pc.tcp(true, &format!("198.18.3.{host}"), 40_000, 445, SYN, 60);
    }
    pc.advance(5_000);
    let anomalies = pc.anomalies();
    let worm: Vec<_> = anomalies
        .iter()
        .filter(|a| a.kind == AnomalyKind::Scan && a.remote.is_none())
        .collect();
    assert_eq!(worm.len(), 1, "{anomalies:#?}");
    assert_eq!((worm[0].port, worm[0].hosts), (445, 30));
    assert_eq!(
        worm[0].process.as_ref().map(|p| p.name.as_str()),
        Some("worm")
    );
}

#[test]
fn mail_to_many_servers_is_smtp_fanout() {
    let mut pc = Pc::new();
    for host in 1..=24u16 {
        let local = 41_000 + host;
        pc.owners.by_port.insert(local, process(555, "spambot"));
        let remote = format!("198.18.4.{host}");
        pc.tcp(true, &remote, local, 25, SYN, 60);
        pc.tcp(false, &remote, local, 25, SYN_ACK, 60);
        pc.tcp(true, &remote, local, 25, ACK, 1200);
    }
    pc.advance(2_000);
    let anomalies = pc.anomalies();
    let spam: Vec<_> = anomalies
        .iter()
        .filter(|a| a.kind == AnomalyKind::SmtpFanout)
        .collect();
    assert_eq!(spam.len(), 1, "{anomalies:#?}");
    assert_eq!(spam[0].hosts, 24);
    assert!(spam[0].explanation.contains("spambot"));
}

#[test]
fn mostly_failing_connections_are_reported() {
    let mut pc = Pc::new();
    for i in 0..60u16 {
        let remote = format!("198.18.5.{}", i + 1);
        pc.tcp(true, &remote, 42_000 + i, 1000 + i % 5, SYN, 60);
        pc.tcp(false, &remote, 42_000 + i, 1000 + i % 5, RST_ACK, 40);
    }
    pc.advance(2_000);
    let anomalies = pc.anomalies();
    let failed: Vec<_> = anomalies
        .iter()
        .filter(|a| a.kind == AnomalyKind::FailedConnections)
        .collect();
    assert_eq!(failed.len(), 1, "{anomalies:#?}");
    assert_eq!((failed[0].attempts, failed[0].failed), (60, 60));
}

#[test]
fn browsing_raises_nothing_and_is_summarised_per_process() {
    let mut pc = Pc::new();
    for i in 0..40u16 {
        let local = 43_000 + i;
        pc.owners.by_port.insert(local, process(300, "firefox"));
        let remote = format!("198.18.6.{}", i % 8 + 1);
        pc.tcp(true, &remote, local, 443, SYN, 60);
        pc.tcp(false, &remote, local, 443, SYN_ACK, 60);
        for _ in 0..20 {
            pc.tcp(true, &remote, local, 443, ACK, 600);
            pc.tcp(false, &remote, local, 443, ACK, 1500);
        }
        pc.advance(1_000);
    }
    pc.advance(70_000);
    assert!(pc.anomalies().is_empty(), "{:#?}", pc.anomalies());
    let minutes: Vec<&FlowMinute> = pc
        .reports
        .iter()
        .filter_map(|r| match r {
            OutboundReport::Flows(f) => Some(f),
            _ => None,
        })
        .collect();
    assert!(!minutes.is_empty());
    let rows: Vec<&FlowRow> = minutes.iter().flat_map(|m| &m.rows).collect();
    assert!(
        rows.iter()
            .all(|r| r.process.as_ref().is_some_and(|p| p.name == "firefox"))
    );
    let out: u64 = rows.iter().map(|r| r.counts.bytes_out).sum();
    assert_eq!(out, 40 * (60 + 20 * 600));
    // Rows are per destination, not per connection.
    assert!(rows.len() <= 16, "{}", rows.len());
}

#[test]
fn a_closed_fanout_does_not_reopen_on_the_same_hosts() {
    let mut pc = Pc::new();
    for host in 1..=24u16 {
        let remote = format!("198.18.4.{host}");
        pc.tcp(true, &remote, 41_000 + host, 25, SYN, 60);
        pc.tcp(false, &remote, 41_000 + host, 25, SYN_ACK, 60);
    }
    pc.advance(60_000);
    let spam: Vec<_> = pc
        .anomalies()
        .into_iter()
        .filter(|a| a.kind == AnomalyKind::SmtpFanout)
        .map(|a| a.state)
        .collect();
    assert_eq!(spam, vec![EpisodeState::Detected, EpisodeState::Closed]);
}

impl Pc {
    /// This PC's port 50000 opens a connection to `remote`:443 and sends
    /// `megabytes` at once.
    fn upload(&mut self, remote: &str, megabytes: u32) {
        self.tcp(true, remote, 50_000, 443, SYN, 60);
        for _ in 0..megabytes {
            self.tcp(true, remote, 50_000, 443, ACK, 1_000_000);
        }
    }

    /// Where each upload anomaly detected so far went.
    fn uploads_detected(&self) -> Vec<Option<IpAddr>> {
        self.anomalies()
            .into_iter()
            .filter(|a| a.kind == AnomalyKind::UploadVolume && a.state == EpisodeState::Detected)
            .map(|a| a.remote)
            .collect()
    }
}

#[test]
fn an_upload_is_judged_against_this_pcs_usual_amount_for_the_hour() {
    let mut pc = Pc::new();
    pc.owners.by_port.insert(50_000, process(1, "backup"));
    // Start at a whole hour; every day at this hour the PC uploads 2 GB.
    pc.now -= pc.now % 3_600_000;
    let day = 24 * 3_600_000;
    for _ in 0..3 {
        let hour_start = pc.now;
        pc.upload("198.18.0.60", 2_000);
        pc.advance(2_000);
        // Quiet for the rest of the day, a tick per minute.
        while pc.now < hour_start + day {
            pc.now += 60_000;
            pc.m.tick(pc.now);
        }
        pc.m.attribute(&pc.owners);
        pc.reports.extend(pc.m.drain_reports());
    }
    // The first day had no baseline yet: 2 GB was reported then. Since,
    // 2 GB at this hour is usual.
    assert_eq!(pc.uploads_detected().len(), 1, "{:#?}", pc.anomalies());
    // The agent restarts: what it learned comes back from its file.
    let saved = serde_json::to_string(&pc.m.baseline()).expect("baseline as JSON");
    pc.m = Monitor::new(OutboundConfig::default(), [ip(PC)]);
    pc.m.restore_baseline(serde_json::from_str(&saved).expect("baseline from JSON"));
    // 300 MB at this busy hour is nothing to report.
    pc.upload("198.18.0.61", 300);
    pc.advance(15_000);
    assert_eq!(
        pc.uploads_detected().len(),
        1,
        "300 MB at a busy hour is usual"
    );
    // The same 300 MB at an hour that is usually quiet is reported.
    pc.now += 6 * 3_600_000;
    pc.m.tick(pc.now);
    pc.upload("198.18.0.62", 300);
    pc.advance(15_000);
    let uploads = pc.uploads_detected();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert_eq!(uploads[1], Some(ip("198.18.0.62")));
}

#[test]
fn a_forged_source_flood_costs_no_flows() {
    let mut pc = Pc::new();
    for i in 0..100_000u32 {
        let [_, b, c, d] = i.to_be_bytes();
        let spoofed = format!("100.{b}.{c}.{d}");
        pc.tcp(false, &spoofed, 80, 1024, SYN, 40);
        pc.tcp(true, &spoofed, 80, 1024, RST_ACK, 40);
    }
    pc.advance(61_000);
    assert!(!pc.m.needs_owners(), "nothing to name");
    let minutes: Vec<&FlowMinute> = pc
        .reports
        .iter()
        .filter_map(|r| match r {
            OutboundReport::Flows(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(minutes.len(), 1);
    assert!(
        minutes[0].rows.is_empty(),
        "no flow rows for forged sources"
    );
    assert_eq!(
        minutes[0].unlisted.bytes_in,
        100_000 * 40,
        "but every byte counted"
    );
    assert_eq!(minutes[0].unlisted.bytes_out, 100_000 * 40);
    assert!(pc.anomalies().is_empty(), "{:#?}", pc.anomalies());
}

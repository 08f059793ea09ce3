use super::*;
use crate::decode::{self, Packet, Transport};
use crate::pcap;

const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/nmap-mixed.pcap");

fn ip(text: &str) -> IpAddr {
    text.parse().expect("literal")
}

const PC: &str = "198.18.0.10";

fn tcp(src: &str, dst: &str, src_port: u16, dst_port: u16, flags: u8) -> Packet {
    Packet {
        src: ip(src),
        dst: ip(dst),
        transport: Transport::Tcp {
            src_port,
            dst_port,
            flags,
        },
    }
}

const SYN: u8 = tcp_flags::SYN;
const SYN_ACK: u8 = tcp_flags::SYN | tcp_flags::ACK;
const RST_ACK: u8 = tcp_flags::RST | tcp_flags::ACK;
const ACK: u8 = tcp_flags::ACK;

fn detector() -> Detector {
    Detector::new(DetectorConfig::default(), [ip(PC)])
}

/// A scanner probing `ports` on the PC, each refused unless in `open`.
fn scan(
    d: &mut Detector,
    scanner: &str,
    ports: impl IntoIterator<Item = u16>,
    open: &[u16],
    t0: u64,
) -> u64 {
    let mut t = t0;
    for port in ports {
        d.observe(&tcp(scanner, PC, 40000, port, SYN), t);
        let answer = if open.contains(&port) {
            SYN_ACK
        } else {
            RST_ACK
        };
        d.observe(&tcp(PC, scanner, port, 40000, answer), t);
        t += 1;
    }
    t
}

#[test]
fn real_nmap_syn_scan_from_pcap_is_detected_with_its_open_port() {
    let mut d = Detector::new(DetectorConfig::default(), [ip(PC), ip("fd00:d00::10")]);
    for record in pcap::Reader::new(FIXTURE).expect("header") {
        let record = record.expect("record");
        if let Ok(Some(packet)) = decode::ethernet(record.data) {
            d.observe(&packet, record.unix_ms);
        }
    }
    d.finish();
    let reports: Vec<_> = d.drain_reports().collect();
    let closed = reports
        .iter()
        .find(|r| r.state == EpisodeState::Closed && r.scanner == ip("198.18.0.2"))
        .expect("closed IPv4 episode");
    assert_eq!(closed.kinds, vec![ScanKind::Syn]);
    assert_eq!(closed.target, ip(PC));
    // nmap -sS -p 75-85, plus -f -p 81 whose fragments carry no port.
    assert_eq!(closed.ports_probed, 11);
    assert_eq!(closed.port_sample, (75..=85).collect::<Vec<u16>>());
    assert_eq!(closed.open_ports, vec![80]);
    assert!(
        closed.explanation.contains("80 (web)"),
        "{}",
        closed.explanation
    );
}

#[test]
fn five_refused_ports_make_a_scan() {
    let mut d = detector();
    scan(&mut d, "198.18.1.1", 1..=4, &[], 0);
    assert_eq!(
        d.drain_reports().count(),
        0,
        "four refusals are not yet a scan"
    );
    scan(&mut d, "198.18.1.1", 5..=5, &[], 10);
    let reports: Vec<_> = d.drain_reports().collect();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].state, EpisodeState::Detected);
    assert_eq!(reports[0].ports_probed, 5);
}

#[test]
fn episode_is_updated_while_active_then_closed_when_idle() {
    let mut d = detector();
    let t = scan(&mut d, "198.18.1.1", 1..=10, &[22], 0);
    d.tick(t + 100);
    let first: Vec<_> = d.drain_reports().collect();
    assert_eq!(
        first.len(),
        1,
        "only the detection, no update before the interval"
    );
    let t = scan(&mut d, "198.18.1.1", 11..=1000, &[22], 2_500);
    d.tick(t);
    let update: Vec<_> = d.drain_reports().collect();
    assert_eq!(update.len(), 1);
    assert_eq!(update[0].state, EpisodeState::Active);
    assert_eq!(update[0].ports_probed, 1000);
    assert_eq!(update[0].episode, first[0].episode);
    d.tick(t + 1_000);
    assert_eq!(d.drain_reports().count(), 0, "no new probes, no update");
    d.tick(t + 60_000);
    let closed: Vec<_> = d.drain_reports().collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].state, EpisodeState::Closed);
    assert_eq!(closed[0].port_sample.len(), 64);
    assert_eq!(d.tracked_sources(), 0);
}

#[test]
fn busy_server_on_open_ports_is_not_a_scan() {
    let mut d = detector();
    let mut t = 0;
    for client in 0..300u16 {
        let src = format!("198.18.{}.{}", 2 + client / 250, 1 + client % 250);
        for port in [80, 443] {
            d.observe(&tcp(&src, PC, 30000 + client, port, SYN), t);
            d.observe(&tcp(PC, &src, port, 30000 + client, SYN_ACK), t);
            d.observe(&tcp(&src, PC, 30000 + client, port, ACK), t);
            t += 3;
        }
    }
    d.tick(t + 120_000);
    assert_eq!(d.drain_reports().count(), 0);
}

#[test]
fn browser_making_many_outbound_connections_is_not_a_scan() {
    let mut d = detector();
    for i in 0..500u16 {
        let server = ["198.18.9.1", "198.18.9.2", "198.18.9.3"][usize::from(i % 3)];
        d.observe(&tcp(PC, server, 50000 + i, 443, SYN), u64::from(i));
        d.observe(&tcp(server, PC, 443, 50000 + i, SYN_ACK), u64::from(i));
    }
    d.tick(1_000_000);
    assert_eq!(d.drain_reports().count(), 0);
}

#[test]
fn app_retrying_a_closed_port_is_not_a_scan() {
    let mut d = detector();
    for attempt in 0..3 {
        d.observe(
            &tcp("198.18.1.1", PC, 40000 + attempt, 5432, SYN),
            u64::from(attempt) * 1000,
        );
        d.observe(
            &tcp(PC, "198.18.1.1", 5432, 40000 + attempt, RST_ACK),
            u64::from(attempt) * 1000,
        );
    }
    d.tick(1_000_000);
    assert_eq!(d.drain_reports().count(), 0);
}

#[test]
fn allowlisted_scanner_is_never_reported() {
    let mut config = DetectorConfig::default();
    config.allowlist.insert(ip("198.18.200.5"));
    let mut d = Detector::new(config, [ip(PC)]);
    scan(&mut d, "198.18.200.5", 1..=100, &[], 0);
    d.finish();
    assert_eq!(d.drain_reports().count(), 0);
}

#[test]
fn state_table_is_bounded() {
    let config = DetectorConfig {
        max_tracked_sources: 100,
        ..DetectorConfig::default()
    };
    let mut d = Detector::new(config, [ip(PC)]);
    for i in 0..1000u32 {
        let src = IpAddr::from([198, 19, (i / 250) as u8, (i % 250) as u8 + 1]);
        d.observe(
            &Packet {
                src,
                dst: ip(PC),
                transport: Transport::Tcp {
                    src_port: 1,
                    dst_port: 80,
                    flags: SYN,
                },
            },
            u64::from(i),
        );
    }
    assert_eq!(d.tracked_sources(), 100);
    assert_eq!(d.untracked_probes(), 900);
}

#[test]
fn firewalled_pc_still_sees_a_blind_scan() {
    let mut d = detector();
    for port in 1..=25 {
        d.observe(&tcp("198.18.1.1", PC, 40000, port, SYN), u64::from(port));
    }
    let reports: Vec<_> = d.drain_reports().collect();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].ports_probed, 25);
}

#[test]
fn port_set_switches_to_bitmap_without_losing_ports() {
    let mut set = PortSet::default();
    let ports: Vec<u16> = (0..=u16::MAX).step_by(7).collect();
    for &p in ports.iter().rev() {
        assert!(set.insert(p));
    }
    assert!(!set.insert(0));
    assert_eq!(set.len(), 9363);
    assert_eq!(set.sample(3), vec![0, 7, 14]);
}

use super::*;
use crate::decode::{self, Icmp, Packet, Quoted, Transport, Unreachable};
use crate::pcap;

const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/nmap-mixed.pcap");
const PC: &str = "198.18.0.10";
const PC6: &str = "fd00:d00::10";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("literal")
}

const SYN: u8 = tcp_flags::SYN;
const SYN_ACK: u8 = tcp_flags::SYN | tcp_flags::ACK;
const RST: u8 = tcp_flags::RST;
const RST_ACK: u8 = tcp_flags::RST | tcp_flags::ACK;
const ACK: u8 = tcp_flags::ACK;
const FIN: u8 = tcp_flags::FIN;
const XMAS: u8 = tcp_flags::FIN | tcp_flags::PSH | tcp_flags::URG;
const FIN_ACK: u8 = tcp_flags::FIN | tcp_flags::ACK;

/// A small test driver around the detector.
struct Pc {
    d: Detector,
    addr: IpAddr,
    now: u64,
    reports: Vec<Report>,
}

impl Pc {
    fn new() -> Self {
        Self::with(DetectorConfig::default(), PC)
    }

    fn with(config: DetectorConfig, addr: &str) -> Self {
        Self {
            d: Detector::new(config, [ip(PC), ip(PC6)]),
            addr: ip(addr),
            now: 1_764_000_000_000,
            reports: Vec::new(),
        }
    }

    fn see(&mut self, src: IpAddr, dst: IpAddr, transport: Transport) {
        self.d.observe(
            &Packet {
                src,
                dst,
                ip_len: 60,
                transport,
            },
            self.now,
        );
    }

    fn tcp_in(&mut self, from: &str, sport: u16, dport: u16, flags: u8, options_len: u8) {
        self.tcp_in_acking(from, sport, dport, flags, options_len, 0);
    }

    /// An inbound TCP packet whose acknowledgment number is `ack`.
    fn tcp_in_acking(
        &mut self,
        from: &str,
        sport: u16,
        dport: u16,
        flags: u8,
        options_len: u8,
        ack: u32,
    ) {
        let t = Transport::Tcp {
            src_port: sport,
            dst_port: dport,
            seq: 0,
            ack,
            flags,
            window: 1024,
            options_len,
        };
        self.see(ip(from), self.addr, t);
    }

    fn tcp_out(&mut self, to: &str, sport: u16, dport: u16, flags: u8) {
        self.tcp_out_numbered(to, sport, dport, flags, 0);
    }

    /// An outbound TCP packet whose sequence number is `seq`.
    fn tcp_out_numbered(&mut self, to: &str, sport: u16, dport: u16, flags: u8, seq: u32) {
        let t = Transport::Tcp {
            src_port: sport,
            dst_port: dport,
            seq,
            ack: 0,
            flags,
            window: 0,
            options_len: 0,
        };
        self.see(self.addr, ip(to), t);
    }

    /// A raw SYN probe answered as a Linux PC would: SYN-ACK if open, else RST.
    fn syn_probe(&mut self, from: &str, port: u16, open: bool) {
        self.tcp_in(from, 40000, port, SYN, 4);
        self.tcp_out(from, port, 40000, if open { SYN_ACK } else { RST_ACK });
        if open {
            self.tcp_in(from, 40000, port, RST, 0);
        }
    }

    fn udp_probe(&mut self, from: &str, port: u16) {
        self.see(
            ip(from),
            self.addr,
            Transport::Udp {
                src_port: 50000,
                dst_port: port,
            },
        );
        let quoted = Quoted {
            src: ip(from),
            dst: self.addr,
            protocol: 17,
            src_port: Some(50000),
            dst_port: Some(port),
        };
        self.see(
            self.addr,
            ip(from),
            Transport::Icmp(Icmp::Unreachable {
                reason: Unreachable::Port,
                quoted: Some(quoted),
            }),
        );
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.d.tick(self.now);
        self.reports.extend(self.d.drain_reports());
    }

    fn finish(&mut self) -> Vec<Report> {
        self.d.tick(self.now);
        self.d.finish();
        self.reports.extend(self.d.drain_reports());
        std::mem::take(&mut self.reports)
    }

    fn scans(&mut self) -> Vec<EpisodeReport> {
        self.reports.extend(self.d.drain_reports());
        self.reports
            .iter()
            .filter_map(|r| match r {
                Report::Scan(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// Final state of each scan episode (closing everything first).
    fn final_scans(&mut self) -> Vec<EpisodeReport> {
        self.finish()
            .into_iter()
            .filter_map(|r| match r {
                Report::Scan(s) if s.state == EpisodeState::Closed => Some(s),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn real_nmap_capture_is_classified_with_open_port_and_fragments() {
    let scans: Vec<EpisodeReport> = replay(FIXTURE, &[PC, PC6])
        .into_iter()
        .filter_map(|r| match r {
            Report::Scan(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(scans.len(), 1, "one scanner, one episode: {scans:#?}");
    let scan = &scans[0];
    assert_eq!(scan.scanner, ip("198.18.0.2"));
    assert_eq!(scan.target, ip(PC));
    for kind in [ScanKind::Syn, ScanKind::Udp] {
        assert!(
            scan.kinds.contains(&kind),
            "{kind:?} missing from {:?}",
            scan.kinds
        );
    }
    assert_eq!(scan.open_ports, vec![80]);
    assert!(scan.fragmented, "nmap -f probe seen");
    assert!(scan.port_sample.starts_with(&[53, 75, 76]));
    assert!(
        scan.explanation.contains("80 (web)"),
        "{}",
        scan.explanation
    );
    // The IPv6 scanner probed 3 ports and found one open: not enough to
    // call it a scan.
}

#[test]
fn fast_syn_scan_is_decided_within_five_closed_ports() {
    let mut pc = Pc::new();
    for port in 1..=3 {
        pc.syn_probe("198.51.100.7", port, false);
    }
    assert!(pc.scans().is_empty(), "three refusals are not yet a scan");
    pc.syn_probe("198.51.100.7", 4, false);
    let scans = pc.scans();
    assert_eq!(scans.len(), 1);
    assert_eq!(scans[0].state, EpisodeState::Detected);
    assert_eq!(scans[0].kinds, vec![ScanKind::Syn]);
}

#[test]
fn every_tcp_scan_type_is_named_over_ipv4_and_ipv6() {
    let cases: Vec<(&str, u8, u8, bool, ScanKind)> = vec![
        ("fin", FIN, 0, false, ScanKind::Fin),
        ("null", 0, 0, false, ScanKind::Null),
        ("xmas", XMAS, 0, false, ScanKind::Xmas),
        ("maimon", FIN_ACK, 0, true, ScanKind::Maimon),
        ("ack", ACK, 0, true, ScanKind::Ack),
    ];
    for addr in [PC, PC6] {
        let scanner = if addr == PC {
            "198.51.100.7"
        } else {
            "2001:db8::7"
        };
        for (name, flags, options, needs_rst, kind) in &cases {
            let mut pc = Pc::with(DetectorConfig::default(), addr);
            for port in 1..=10 {
                pc.tcp_in(scanner, 40000, port, *flags, *options);
                // A Linux PC answers these with RST on closed ports.
                pc.tcp_out(scanner, port, 40000, RST);
            }
            let scans = pc.final_scans();
            assert_eq!(scans.len(), 1, "{name} over {addr}");
            assert_eq!(scans[0].kinds, vec![*kind], "{name} over {addr}");
            assert_eq!(scans[0].ports_probed, 10, "{name} over {addr}");
            let _ = needs_rst;
        }
    }
}

#[test]
fn connect_scan_is_told_from_syn_scan() {
    let mut pc = Pc::new();
    for port in 1..=30u16 {
        let open = port == 22;
        // An OS connect(): about 20 bytes of options.
        pc.tcp_in("198.51.100.7", 40000 + port, port, SYN, 20);
        pc.tcp_out(
            "198.51.100.7",
            port,
            40000 + port,
            if open { SYN_ACK } else { RST_ACK },
        );
        if open {
            pc.tcp_in("198.51.100.7", 40000 + port, port, ACK, 0);
            pc.tcp_in("198.51.100.7", 40000 + port, port, RST_ACK, 0);
        }
    }
    let scans = pc.final_scans();
    assert_eq!(scans.len(), 1);
    assert_eq!(scans[0].kinds, vec![ScanKind::Connect]);
    assert_eq!(scans[0].open_ports, vec![22]);
}

/// A scan of ports 1 to 30 from `from` where port 22 is open and this PC
/// answers it with sequence number 7000; `third` is what the scanner
/// sends after the SYN-ACK (flags, acknowledgment number), if anything.
fn scan_with_one_open_port(pc: &mut Pc, from: &str, third: &[(u8, u32)]) {
    for port in 1..=30u16 {
        let open = port == 22;
        pc.tcp_in(from, 40000 + port, port, SYN, 20);
        if !open {
            pc.tcp_out(from, port, 40000 + port, RST_ACK);
            continue;
        }
        pc.tcp_out_numbered(from, port, 40000 + port, SYN_ACK, 7000);
        for &(flags, ack) in third {
            pc.tcp_in_acking(from, 40000 + port, port, flags, 0, ack);
        }
    }
}

#[test]
fn only_a_handshake_that_acknowledges_this_pcs_answer_verifies_the_scanner() {
    // connect(): the scanner's stack acknowledges 7000 + 1, then resets.
    let mut pc = Pc::new();
    scan_with_one_open_port(&mut pc, "198.51.100.7", &[(ACK, 7001), (RST_ACK, 7001)]);
    let scans = pc.final_scans();
    assert!(scans[0].handshake_verified, "{:?}", scans[0]);
    assert!(
        scans[0].explanation.contains("completed a connection"),
        "{}",
        scans[0].explanation
    );

    // A SYN scan walks away half-open: nothing proves the address.
    let mut pc = Pc::new();
    scan_with_one_open_port(&mut pc, "198.51.100.8", &[(RST, 0)]);
    let scans = pc.final_scans();
    assert!(!scans[0].handshake_verified);
    assert!(!scans[0].explanation.contains("completed a connection"));

    // A forger who cannot see this PC's SYN-ACK guesses the number.
    let mut pc = Pc::new();
    let guesses: Vec<(u8, u32)> = (0..200).map(|g| (ACK, g * 7919)).collect();
    scan_with_one_open_port(&mut pc, "198.51.100.9", &guesses);
    assert!(!pc.final_scans()[0].handshake_verified);
}

#[test]
fn a_handshake_before_the_scan_is_decided_still_counts() {
    // The open port comes first, while the source is still in probation.
    let mut pc = Pc::new();
    pc.tcp_in("198.51.100.7", 40022, 22, SYN, 20);
    pc.tcp_out_numbered("198.51.100.7", 22, 40022, SYN_ACK, u32::MAX);
    pc.tcp_in_acking("198.51.100.7", 40022, 22, ACK, 0, 0);
    for port in 23..=40u16 {
        pc.tcp_in("198.51.100.7", 40000 + port, port, SYN, 20);
        pc.tcp_out("198.51.100.7", port, 40000 + port, RST_ACK);
    }
    assert!(pc.final_scans()[0].handshake_verified);
}

#[test]
fn ack_and_maimon_without_rst_answers_are_not_scans() {
    // Late ACKs and FIN+ACKs from servers are normal; only probes this PC
    // had to refuse count.
    let mut pc = Pc::new();
    for port in 1..=50 {
        pc.tcp_in("198.51.100.7", 443, 40000 + port, ACK, 0);
        pc.tcp_in("198.51.100.7", 443, 40000 + port, FIN_ACK, 0);
    }
    assert!(pc.final_scans().is_empty());
}

#[test]
fn udp_scan_is_decided_from_port_unreachable_answers() {
    for addr in [PC, PC6] {
        let scanner = if addr == PC {
            "198.51.100.7"
        } else {
            "2001:db8::7"
        };
        let mut pc = Pc::with(DetectorConfig::default(), addr);
        for port in [53, 67, 69, 123, 137, 161] {
            pc.udp_probe(scanner, port);
        }
        let scans = pc.final_scans();
        assert_eq!(scans.len(), 1, "udp over {addr}");
        assert_eq!(scans[0].kinds, vec![ScanKind::Udp]);
        assert_eq!(scans[0].ports_probed, 6);
    }
}

#[test]
fn ip_protocol_scan_is_decided() {
    let mut pc = Pc::new();
    for protocol in [2u8, 4, 41, 47, 50, 51, 132] {
        pc.see(ip("198.51.100.7"), pc.addr, Transport::Other { protocol });
    }
    let scans = pc.final_scans();
    assert_eq!(scans.len(), 1);
    assert_eq!(scans[0].kinds, vec![ScanKind::IpProto]);
    assert!(
        scans[0].explanation.contains("network protocols"),
        "{}",
        scans[0].explanation
    );
}

#[test]
fn icmp_timestamp_and_mask_requests_are_discovery() {
    let mut pc = Pc::new();
    pc.see(
        ip("198.51.100.7"),
        pc.addr,
        Transport::Icmp(Icmp::EchoRequest { data_len: 56 }),
    );
    pc.see(
        ip("198.51.100.7"),
        pc.addr,
        Transport::Icmp(Icmp::InfoRequest { icmp_type: 13 }),
    );
    let scans = pc.final_scans();
    assert_eq!(scans.len(), 1);
    assert_eq!(scans[0].kinds, vec![ScanKind::Icmp]);
}

#[test]
fn an_empty_echo_request_is_discovery_over_ipv4_and_ipv6() {
    for (addr, scanner) in [(PC, "198.51.100.7"), (PC6, "2001:db8::7")] {
        let mut pc = Pc::with(DetectorConfig::default(), addr);
        pc.see(
            ip(scanner),
            pc.addr,
            Transport::Icmp(Icmp::EchoRequest { data_len: 0 }),
        );
        let scans = pc.final_scans();
        assert_eq!(scans.len(), 1, "{addr}");
        assert_eq!(scans[0].kinds, vec![ScanKind::Icmp]);
    }
}

#[test]
fn a_plain_ping_is_not_a_scan() {
    let mut pc = Pc::new();
    for _ in 0..10 {
        pc.see(
            ip("198.18.0.1"),
            pc.addr,
            Transport::Icmp(Icmp::EchoRequest { data_len: 56 }),
        );
        pc.advance(1000);
    }
    assert!(pc.final_scans().is_empty());
}

#[test]
fn scan_from_source_port_53_or_20_does_not_slip_through() {
    for sport in [53, 20] {
        let mut pc = Pc::new();
        for port in 1..=10 {
            pc.tcp_in("198.51.100.7", sport, port, SYN, 4);
            pc.tcp_out("198.51.100.7", port, sport, RST_ACK);
        }
        assert_eq!(pc.final_scans().len(), 1, "source port {sport}");
    }
}

#[test]
fn dns_replies_to_this_pc_are_not_probes() {
    let mut pc = Pc::new();
    for i in 0..200u16 {
        let local = 30000 + i;
        pc.see(
            pc.addr,
            ip("198.18.0.53"),
            Transport::Udp {
                src_port: local,
                dst_port: 53,
            },
        );
        pc.see(
            ip("198.18.0.53"),
            pc.addr,
            Transport::Udp {
                src_port: 53,
                dst_port: local,
            },
        );
        // A late duplicate reply after the socket closed draws an unreachable.
        if i % 10 == 0 {
            pc.see(
                ip("198.18.0.53"),
                pc.addr,
                Transport::Udp {
                    src_port: 53,
                    dst_port: local,
                },
            );
        }
        pc.advance(10);
    }
    assert!(pc.final_scans().is_empty());
}

#[test]
fn busy_server_browser_retries_and_peers_are_not_scans() {
    let mut pc = Pc::new();
    // A busy web server: hundreds of clients on open ports.
    for client in 0..400u16 {
        let src = format!("198.18.{}.{}", 2 + client / 250, 1 + client % 250);
        for port in [80, 443] {
            pc.tcp_in(&src, 30000 + client, port, SYN, 20);
            pc.tcp_out(&src, port, 30000 + client, SYN_ACK);
            pc.tcp_in(&src, 30000 + client, port, ACK, 0);
        }
    }
    // A browser: hundreds of connections to a few servers, with late
    // packets after close drawing RSTs.
    for i in 0..500u16 {
        let server = ["198.18.9.1", "198.18.9.2", "198.18.9.3"][usize::from(i % 3)];
        pc.tcp_out(server, 50000 + i, 443, SYN);
        pc.tcp_in(server, 443, 50000 + i, SYN_ACK, 20);
        pc.tcp_in(server, 443, 50000 + i, FIN_ACK, 0);
        pc.tcp_out(server, 50000 + i, 443, RST);
    }
    // An app retrying a closed port three times.
    for attempt in 0..3 {
        pc.tcp_in("198.18.1.1", 40000 + attempt, 5432, SYN, 20);
        pc.tcp_out("198.18.1.1", 5432, 40000 + attempt, RST_ACK);
        pc.advance(1000);
    }
    // Peer-to-peer: many peers on this PC's one open UDP and TCP port.
    for peer in 0..300u16 {
        let src = format!("198.19.{}.{}", peer / 250, 1 + peer % 250);
        pc.see(
            ip(&src),
            pc.addr,
            Transport::Udp {
                src_port: 6881,
                dst_port: 51413,
            },
        );
        pc.see(
            pc.addr,
            ip(&src),
            Transport::Udp {
                src_port: 51413,
                dst_port: 6881,
            },
        );
        pc.tcp_in(&src, 6881, 51413, SYN, 20);
        pc.tcp_out(&src, 51413, 6881, SYN_ACK);
    }
    let reports = pc.finish();
    // The app's tries at a closed port are one knock, not a scan.
    let (knocks, others): (Vec<_>, Vec<_>) = reports
        .into_iter()
        .partition(|r| matches!(r, Report::Knocks(_)));
    assert!(others.is_empty(), "false positives: {others:#?}");
    let tried: Vec<(IpAddr, u16)> = knocks
        .iter()
        .flat_map(|r| match r {
            Report::Knocks(k) => k.knocks.clone(),
            _ => Vec::new(),
        })
        .map(|k| (k.source, k.port))
        .collect();
    assert_eq!(tried, vec![(ip("198.18.1.1"), 5432)]);
}

fn knocks(reports: &[Report]) -> Vec<&KnockReport> {
    reports
        .iter()
        .filter_map(|r| match r {
            Report::Knocks(k) => Some(k),
            _ => None,
        })
        .collect()
}

#[test]
fn single_tries_at_closed_ports_are_knocks_reported_once() {
    let mut pc = Pc::new();
    // Refused TCP, unanswered TCP, refused UDP: knocks.
    pc.syn_probe("198.51.100.20", 22, false);
    pc.tcp_in("198.51.100.21", 40000, 3389, SYN, 4);
    pc.udp_probe("198.51.100.22", 161);
    // Not knocks: an accepted connection, an unanswered UDP datagram.
    pc.syn_probe("198.51.100.23", 80, true);
    pc.see(
        ip("198.51.100.24"),
        pc.addr,
        Transport::Udp {
            src_port: 5353,
            dst_port: 40000,
        },
    );
    pc.advance(1_000);
    pc.advance(5_000);
    let reports = std::mem::take(&mut pc.reports);
    let seen = knocks(&reports);
    let mut tried: Vec<(IpAddr, u16, u8, bool)> = seen
        .iter()
        .flat_map(|r| &r.knocks)
        .map(|k| (k.source, k.port, k.protocol, k.refused))
        .collect();
    tried.sort();
    assert_eq!(
        tried,
        vec![
            (ip("198.51.100.20"), 22, 6, true),
            (ip("198.51.100.21"), 3389, 6, false),
            (ip("198.51.100.22"), 161, 17, true),
        ]
    );
    assert!(seen[0].explanation.contains("without going on to scan it"));
    assert!(
        reports.iter().all(|r| matches!(r, Report::Knocks(_))),
        "{reports:#?}"
    );
    // Retries and later ticks repeat nothing.
    pc.syn_probe("198.51.100.20", 22, false);
    pc.advance(10_000);
    assert!(pc.finish().is_empty());
}

#[test]
fn a_few_tries_below_the_scan_threshold_are_knocks_each_once() {
    let mut pc = Pc::new();
    // A bot tries three remote-access ports: not enough to be a scan here.
    for port in [22, 3389, 5900] {
        pc.syn_probe("192.0.2.77", port, false);
    }
    // A second address: one refused port and one it could not see answered.
    pc.syn_probe("192.0.2.78", 445, false);
    pc.tcp_in("192.0.2.78", 40001, 139, SYN, 4);
    pc.advance(1_000);
    pc.advance(5_000);
    pc.syn_probe("192.0.2.77", 5900, false);
    pc.advance(5_000);
    let reports = pc.finish();
    assert!(
        reports.iter().all(|r| matches!(r, Report::Knocks(_))),
        "no scan: {reports:#?}"
    );
    let mut tried: Vec<(String, u16, bool)> = knocks(&reports)
        .iter()
        .flat_map(|r| &r.knocks)
        .map(|k| (k.source.to_string(), k.port, k.refused))
        .collect();
    tried.sort();
    assert_eq!(
        tried,
        vec![
            ("192.0.2.77".to_owned(), 22, true),
            ("192.0.2.77".to_owned(), 3389, true),
            ("192.0.2.77".to_owned(), 5900, true),
            ("192.0.2.78".to_owned(), 139, false),
            ("192.0.2.78".to_owned(), 445, true),
        ]
    );
}

#[test]
fn a_source_that_goes_on_is_a_scan_and_knocks_are_bounded() {
    let mut pc = Pc::new();
    for i in 0..400u32 {
        let [_, _, c, d] = i.to_be_bytes();
        pc.syn_probe(&format!("198.18.{}.{}", 100 + c, d), 445, false);
    }
    pc.syn_probe("198.51.100.7", 22, false);
    pc.advance(6_000);
    // The same source goes on to more ports: a scan.
    for port in 23..30 {
        pc.syn_probe("198.51.100.7", port, false);
    }
    pc.advance(6_000);
    let reports = pc.finish();
    let seen = knocks(&reports);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].knocks.len(), MAX_KNOCKS);
    assert_eq!(seen[0].unlisted, 401 - MAX_KNOCKS as u64);
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, Report::Scan(s) if s.scanner == ip("198.51.100.7"))),
        "{reports:#?}"
    );
}

#[test]
fn decoys_become_companions_of_one_episode() {
    let mut pc = Pc::new();
    let decoys = ["198.51.100.20", "198.51.100.21"];
    for port in 1..=100 {
        // nmap -D: each probe is sent from every decoy too. Answers to the
        // decoys never reach the wire (no route), only the real one's do.
        for decoy in decoys {
            pc.tcp_in(decoy, 40000, port, SYN, 4);
        }
        pc.syn_probe("198.51.100.7", port, false);
    }
    let scans = pc.final_scans();
    assert_eq!(scans.len(), 1, "{scans:#?}");
    assert_eq!(scans[0].scanner, ip("198.51.100.7"));
    let mut companions = scans[0].companions.clone();
    companions.sort();
    assert_eq!(companions, vec![ip(decoys[0]), ip(decoys[1])]);
    assert!(scans[0].explanation.contains("decoys"));
}

#[test]
fn one_scan_after_another_from_two_addresses_is_two_episodes() {
    let mut pc = Pc::new();
    for port in 1..=100 {
        pc.syn_probe("198.51.100.7", port, false);
    }
    pc.advance(1_500);
    for port in 1..=100 {
        pc.syn_probe("198.51.100.8", port, false);
    }
    let scans = pc.final_scans();
    assert_eq!(scans.len(), 2, "{scans:#?}");
    assert!(scans.iter().all(|s| s.companions.is_empty()));
}

#[test]
fn spoofed_flood_is_one_flood_within_budget_and_a_real_scan_still_shows() {
    let config = DetectorConfig {
        memory_budget: 4 << 20,
        ..DetectorConfig::default()
    };
    let budget = config.memory_budget;
    let mut pc = Pc::with(config, PC);
    let mut peak = 0;
    for i in 0..300_000u32 {
        let [_, b, c, d] = 0x0A00_0000u32
            .wrapping_add(i.wrapping_mul(2_654_435_761))
            .to_be_bytes();
        let spoofed = IpAddr::from([100, b, c, d]);
        pc.see(
            spoofed,
            pc.addr,
            Transport::Tcp {
                src_port: 1024,
                dst_port: 80,
                seq: 0,
                ack: 0,
                flags: SYN,
                window: 512,
                options_len: 0,
            },
        );
        pc.see(
            pc.addr,
            spoofed,
            Transport::Tcp {
                src_port: 80,
                dst_port: 1024,
                seq: 0,
                ack: 0,
                flags: RST_ACK,
                window: 0,
                options_len: 0,
            },
        );
        if i % 300 == 0 {
            // The real scanner, slower than the flood, in the middle of it.
            pc.syn_probe("198.51.100.7", (i / 300) as u16 + 1, false);
        }
        if i % 10_000 == 0 {
            pc.advance(100);
            peak = peak.max(pc.d.stats().bytes);
        }
    }
    assert!(
        peak <= budget,
        "state {peak} bytes over the {budget} budget"
    );
    let reports = pc.finish();
    let floods: Vec<_> = reports
        .iter()
        .filter(|r| matches!(r, Report::Flood(f) if f.state == EpisodeState::Closed))
        .collect();
    let scans: Vec<_> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Scan(s) if s.state == EpisodeState::Closed => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(floods.len(), 1, "one flood record");
    assert_eq!(
        scans.len(),
        1,
        "only the real scanner: {:?}",
        scans.iter().map(|s| s.scanner).collect::<Vec<_>>()
    );
    assert_eq!(scans[0].scanner, ip("198.51.100.7"));
    assert_eq!(scans[0].ports_probed, 1000);
}

#[test]
fn slow_scans_are_one_episode_and_decided_within_a_few_probes() {
    // nmap -T1: 15 s between probes; -T0: 5 minutes.
    for gap_ms in [15_000u64, 300_000] {
        let mut pc = Pc::new();
        let mut decided_after = None;
        for port in 1..=20u16 {
            pc.syn_probe("198.51.100.7", port, false);
            pc.advance(gap_ms);
            if decided_after.is_none() && !pc.scans().is_empty() {
                decided_after = Some(port);
            }
        }
        assert!(
            decided_after.is_some_and(|n| n <= 6),
            "gap {gap_ms}: decided after {decided_after:?}"
        );
        let scans = pc.final_scans();
        assert_eq!(
            scans.len(),
            1,
            "gap {gap_ms}: one episode, not one per probe"
        );
        assert_eq!(scans[0].ports_probed, 20);
    }
}

#[test]
fn random_port_order_and_masscan_style_probes_are_detected() {
    let mut pc = Pc::new();
    let mut port: u16 = 7;
    for _ in 0..500 {
        port = port.wrapping_mul(31).wrapping_add(17) | 1;
        pc.tcp_in("198.51.100.9", 61000, port, SYN, 0);
        pc.tcp_out("198.51.100.9", port, 61000, RST_ACK);
    }
    let scans = pc.final_scans();
    assert_eq!(scans.len(), 1);
    assert_eq!(scans[0].kinds, vec![ScanKind::Syn]);
}

#[test]
fn episode_is_updated_while_active_then_closed_when_idle() {
    let mut pc = Pc::new();
    for port in 1..=10 {
        pc.syn_probe("198.51.100.7", port, port == 22);
    }
    pc.advance(100);
    assert_eq!(
        pc.scans().len(),
        1,
        "only the detection before the interval"
    );
    for port in 11..=1000 {
        pc.syn_probe("198.51.100.7", port, false);
    }
    pc.advance(2_000);
    let scans = pc.scans();
    assert_eq!(scans.len(), 2);
    assert_eq!(scans[1].state, EpisodeState::Active);
    assert_eq!(scans[1].ports_probed, 1000);
    assert_eq!(scans[1].episode, scans[0].episode);
    pc.advance(60_000);
    let scans = pc.scans();
    assert_eq!(scans.len(), 3);
    assert_eq!(scans[2].state, EpisodeState::Closed);
    assert_eq!(scans[2].port_sample.len(), 64);
    assert_eq!(pc.d.stats().tracked, 0);
}

#[test]
fn allowlisted_scanner_is_never_reported() {
    let mut config = DetectorConfig::default();
    config.allowlist.insert(ip("198.18.200.5"));
    let mut pc = Pc::with(config, PC);
    for port in 1..=100 {
        pc.syn_probe("198.18.200.5", port, false);
    }
    assert!(pc.finish().is_empty());
}

#[test]
fn firewalled_pc_still_sees_a_blind_scan() {
    let mut pc = Pc::new();
    for port in 1..=25 {
        pc.tcp_in("198.51.100.7", 40000, port, SYN, 4);
    }
    let scans = pc.scans();
    assert_eq!(scans.len(), 1);
    assert_eq!(scans[0].ports_probed, 25);
}

const TOOLS: &[u8] = include_bytes!("../../tests/fixtures/tools-mixed.pcap");

/// Final reports from replaying a capture as `doorwatch-agent replay` does.
fn replay(capture: &[u8], local: &[&str]) -> Vec<Report> {
    let mut d = Detector::new(DetectorConfig::default(), local.iter().map(|a| ip(a)));
    let mut last_tick = 0;
    let mut finals = Vec::new();
    for record in pcap::Reader::new(capture).expect("header") {
        let record = record.expect("record");
        if let Ok(Some(packet)) = decode::ethernet(record.data) {
            d.observe(&packet, record.unix_ms);
        }
        if record.unix_ms.saturating_sub(last_tick) >= 200 {
            last_tick = record.unix_ms;
            d.tick(record.unix_ms);
            finals.extend(d.drain_reports());
        }
    }
    d.finish();
    finals.extend(d.drain_reports());
    finals
        .into_iter()
        .filter(|r| match r {
            Report::Scan(s) => s.state == EpisodeState::Closed,
            Report::Flood(f) => f.state == EpisodeState::Closed,
            Report::Knocks(_) => false,
        })
        .collect()
}

#[test]
fn real_tools_capture_names_every_scanner_and_one_flood() {
    // See tests/fixtures/make-tools-mixed.sh for what each address ran.
    let expected: &[(&str, &[ScanKind], u32)] = &[
        ("198.18.0.21", &[ScanKind::Connect], 40),
        ("198.18.0.22", &[ScanKind::Null], 40),
        ("198.18.0.23", &[ScanKind::Ack], 40),
        ("198.18.0.24", &[ScanKind::Maimon], 40),
        ("198.18.0.25", &[ScanKind::Ack], 40),
        ("198.18.0.26", &[ScanKind::Udp], 20),
        ("198.18.0.27", &[ScanKind::IpProto], 25),
        ("198.18.0.28", &[ScanKind::Syn], 60),
        ("198.18.0.29", &[ScanKind::Syn], 40),
        ("198.18.0.30", &[ScanKind::Xmas], 40),
    ];
    let reports = replay(TOOLS, &[PC]);
    let scans: Vec<&EpisodeReport> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Scan(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(
        scans.len(),
        expected.len(),
        "one episode per scanner, none for forged sources"
    );
    for (scanner, kinds, min_ports) in expected {
        let scan = scans
            .iter()
            .find(|s| s.scanner == ip(scanner))
            .unwrap_or_else(|| panic!("no episode for {scanner}"));
        assert_eq!(&scan.kinds, kinds, "{scanner}");
        assert!(
            scan.ports_probed >= *min_ports,
            "{scanner}: {} ports",
            scan.ports_probed
        );
    }
    let decoyed = scans
        .iter()
        .find(|s| s.scanner == ip("198.18.0.29"))
        .expect("decoy scan");
    let mut companions = decoyed.companions.clone();
    companions.sort();
    assert_eq!(companions, vec![ip("198.18.0.201"), ip("198.18.0.202")]);
    let floods: Vec<&FloodReport> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Flood(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(floods.len(), 1, "hping3's forged sources are one flood");
    assert_eq!(floods[0].ports, vec![80]);
    assert!(floods[0].sources >= 2_000, "{} sources", floods[0].sources);
}

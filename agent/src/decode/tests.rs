use super::*;
use crate::pcap;

const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/nmap-mixed.pcap");
const TOOLS: &[u8] = include_bytes!("../../tests/fixtures/tools-mixed.pcap");

/// Every frame of both real captures.
fn frames() -> Vec<&'static [u8]> {
    [FIXTURE, TOOLS]
        .into_iter()
        .flat_map(|capture| {
            pcap::Reader::new(capture)
                .expect("fixture header")
                .map(|r| r.expect("fixture record").data)
        })
        .collect()
}

fn decoded() -> Vec<Packet> {
    frames()
        .into_iter()
        .filter_map(|f| ethernet(f).expect("fixture frames decode"))
        .collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("literal")
}

#[test]
fn every_prefix_of_every_real_frame_decodes_or_errors_without_panicking() {
    for frame in frames() {
        for end in 0..=frame.len() {
            let _ = ethernet(&frame[..end]);
        }
    }
}

#[test]
fn every_frame_with_one_corrupted_byte_never_panics() {
    for frame in frames() {
        let mut copy = frame.to_vec();
        for i in 0..copy.len() {
            for value in [0x00, 0xFF, 0x45, 0x60, 0x0F] {
                let saved = copy[i];
                copy[i] = value;
                let _ = ethernet(&copy);
                copy[i] = saved;
            }
        }
    }
}

#[test]
fn syn_probes_and_rst_answers_are_decoded() {
    let packets = decoded();
    let syn = packets
        .iter()
        .find(|p| {
            matches!(p.transport, Transport::Tcp { dst_port: 75, flags, .. } if flags == tcp_flags::SYN)
        })
        .expect("SYN to port 75");
    assert_eq!(syn.src, ip("198.18.0.2"));
    assert_eq!(syn.dst, ip("198.18.0.10"));
    assert!(packets.iter().any(|p| matches!(
        p.transport,
        Transport::Tcp { src_port: 75, flags, .. } if flags == tcp_flags::RST | tcp_flags::ACK
    )));
}

#[test]
fn ipv6_syn_is_decoded() {
    assert!(decoded().iter().any(|p| p.src == ip("fd00:d00::2")
        && matches!(p.transport, Transport::Tcp { dst_port: 79, flags, .. } if flags == tcp_flags::SYN)));
}

#[test]
fn udp_probe_and_port_unreachable_quote_are_decoded() {
    let packets = decoded();
    assert!(
        packets
            .iter()
            .any(|p| matches!(p.transport, Transport::Udp { dst_port: 161, .. }))
    );
    let quote = packets
        .iter()
        .find_map(|p| match p.transport {
            Transport::Icmp(Icmp::Unreachable {
                reason: Unreachable::Port,
                quoted,
            }) => quoted,
            _ => None,
        })
        .expect("port unreachable with quote");
    assert_eq!(quote.protocol, 17);
    assert_eq!(quote.src, ip("198.18.0.2"));
    assert!(matches!(quote.dst_port, Some(53 | 161)));
}

#[test]
fn nmap_fragments_are_reported_as_fragments() {
    let packets = decoded();
    assert!(packets.iter().any(|p| matches!(
        p.transport,
        Transport::Fragment {
            protocol: 6,
            dst_port: Some(81),
            ..
        }
    )));
    assert!(packets.iter().any(|p| matches!(
        p.transport,
        Transport::Fragment {
            protocol: 6,
            dst_port: None,
            ..
        }
    )));
}

#[test]
fn stealth_flags_and_pings_are_decoded() {
    let packets = decoded();
    let xmas = tcp_flags::FIN | tcp_flags::PSH | tcp_flags::URG;
    assert!(
        packets
            .iter()
            .any(|p| matches!(p.transport, Transport::Tcp { flags, .. } if flags == xmas))
    );
    assert!(
        packets.iter().any(
            |p| matches!(p.transport, Transport::Tcp { flags, .. } if flags == tcp_flags::FIN)
        )
    );
    assert!(packets.iter().any(|p| p.src == ip("198.18.0.2")
        && p.transport == Transport::Icmp(Icmp::EchoRequest { data_len: 0 })));
    // nmap pings IPv6 neighbours with neighbour discovery (type 135).
    assert!(packets.iter().any(|p| p.src == ip("fd00:d00::2")
        && p.transport
            == Transport::Icmp(Icmp::Other {
                icmp_type: 135,
                code: 0
            })));
}

#[test]
fn protocol_unreachable_is_decoded() {
    assert!(decoded().iter().any(|p| matches!(
        p.transport,
        Transport::Icmp(Icmp::Unreachable {
            reason: Unreachable::Protocol,
            quoted: Some(Quoted { protocol: 47, .. })
        })
    )));
}

#[test]
fn raw_scanner_syn_has_few_options() {
    assert!(decoded().iter().any(|p| matches!(
        p.transport,
        Transport::Tcp {
            flags: tcp_flags::SYN,
            window: 1024,
            options_len: 4,
            ..
        }
    )));
}

#[test]
fn arp_is_not_ip() {
    let arp = frames()
        .into_iter()
        .find(|f| f.get(12..14) == Some(&[0x08, 0x06]))
        .expect("fixture has ARP");
    assert_eq!(ethernet(arp), Ok(None));
}

#[test]
fn bad_header_lengths_are_errors() {
    let mut frame = vec![0u8; 14 + 40];
    frame[12] = 0x08;
    frame[14] = 0x44; // version 4, IHL 4
    assert_eq!(ethernet(&frame), Err(DecodeError::BadIpv4HeaderLength(4)));
    frame[14] = 0x65;
    assert_eq!(ethernet(&frame), Err(DecodeError::WrongIpVersion(6)));
}

//! Frame decoding: Ethernet (with up to two VLAN tags), IPv4, IPv6 (with
//! extension headers), TCP, UDP, ICMP and ICMPv6, reduced to the header
//! fields detection needs.
//!
//! Pure and total: any byte slice gives either a [`Packet`], `None` for
//! frames that are not IP, or a [`DecodeError`]; nothing here panics or
//! allocates. Payload bytes are never looked at, except the IP and
//! transport header quoted inside an ICMP error, which is itself header data.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// The header fields of one IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Bytes of the whole IP packet as its header declares them (IPv4
    /// total length, IPv6 payload length + 40): what traffic accounting
    /// counts, whatever the capture kept.
    pub ip_len: u32,
    pub transport: Transport,
}

/// What the IP packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        src_port: u16,
        dst_port: u16,
        /// Sequence and acknowledgment numbers: a handshake's third
        /// packet acknowledges this PC's own sequence number plus one,
        /// which only a source that received this PC's answer can know.
        seq: u32,
        ack: u32,
        flags: u8,
        /// Advertised window.
        window: u16,
        /// Bytes of TCP options. Raw-packet scanners send none or MSS only
        /// (≤ 4); operating-system stacks send about 20.
        options_len: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    /// ICMP or ICMPv6, normalized.
    Icmp(Icmp),
    /// A fragment whose transport header is not (wholly) in this packet.
    /// A first fragment with at least 4 transport bytes still names the
    /// TCP or UDP ports (nmap -f splits the TCP header after them).
    Fragment {
        protocol: u8,
        src_port: Option<u16>,
        dst_port: Option<u16>,
    },
    /// Any other IP protocol.
    Other {
        protocol: u8,
    },
}

/// ICMP and ICMPv6 messages that matter for scan detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmp {
    /// An echo request; `data_len` is its payload length taken from the IP
    /// header (the payload itself is never read). Ping tools send 32 to 56
    /// bytes; scanners such as nmap send none.
    EchoRequest {
        data_len: u16,
    },
    EchoReply,
    /// Destination unreachable, or (ICMPv6) parameter problem "unknown
    /// next header", with the quoted original packet's header when present.
    Unreachable {
        reason: Unreachable,
        quoted: Option<Quoted>,
    },
    /// ICMPv4 timestamp or address-mask request.
    InfoRequest {
        icmp_type: u8,
    },
    Other {
        icmp_type: u8,
        code: u8,
    },
}

/// Why a destination was unreachable, the same for ICMP and ICMPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// Nothing listens on that port (the answer to a UDP probe).
    Port,
    /// The host does not speak that IP protocol (the answer to nmap -sO).
    Protocol,
    /// Anything else (admin-prohibited, no route...), with the ICMP code.
    Other(u8),
}

/// The header of the packet an ICMP error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// Ports, when the quote holds a TCP or UDP header.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame truncated inside the {0} header")]
    Truncated(&'static str),
    #[error("IP version field {0} does not match the ethertype")]
    WrongIpVersion(u8),
    #[error("IPv4 header length {0} words is below the minimum of 5")]
    BadIpv4HeaderLength(u8),
    #[error("TCP data offset {0} words is below the minimum of 5")]
    BadTcpOffset(u8),
}

/// Decodes an Ethernet frame. `Ok(None)` means "not IP" (ARP, LLDP...).
pub fn ethernet(frame: &[u8]) -> Result<Option<Packet>, DecodeError> {
    let mut ethertype = be16(frame, 12).ok_or(DecodeError::Truncated("ethernet"))?;
    let mut offset = 14;
    for _ in 0..2 {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        ethertype = be16(frame, offset + 2).ok_or(DecodeError::Truncated("vlan"))?;
        offset += 4;
    }
    let rest = frame.get(offset..).unwrap_or_default();
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(rest).map(Some),
        ETHERTYPE_IPV6 => ipv6(rest).map(Some),
        _ => Ok(None),
    }
}

/// Decodes an IPv4 packet (starting at the IP header).
pub fn ipv4(data: &[u8]) -> Result<Packet, DecodeError> {
    packet(ipv4_header(data)?, false)
}

/// The packet an IP header and what follows it describe.
fn packet(parts: IpParts<'_>, v6: bool) -> Result<Packet, DecodeError> {
    let transport = if parts.fragment {
        fragment_transport(parts.protocol, parts.l4, parts.first)
    } else {
        transport(parts.protocol, parts.l4, parts.l4_len, v6)?
    };
    Ok(Packet {
        src: parts.src,
        dst: parts.dst,
        ip_len: parts.ip_len,
        transport,
    })
}

/// The parts of an IP header detection needs.
struct IpParts<'a> {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    /// A fragment without a whole transport header.
    fragment: bool,
    /// The first (or only) fragment.
    first: bool,
    /// The captured bytes after the IP header(s).
    l4: &'a [u8],
    /// The transport length the IP header declares (captures are cut
    /// short, so `l4` may be shorter).
    l4_len: usize,
    /// The whole packet's length as the IP header declares it.
    ip_len: u32,
}

/// Source, destination, protocol, "is a fragment without a whole transport
/// header", "is the first fragment", and the bytes after the IP header.
fn ipv4_header(data: &[u8]) -> Result<IpParts<'_>, DecodeError> {
    let first = *data.first().ok_or(DecodeError::Truncated("ipv4"))?;
    if first >> 4 != 4 {
        return Err(DecodeError::WrongIpVersion(first >> 4));
    }
    let ihl = first & 0x0F;
    if ihl < 5 {
        return Err(DecodeError::BadIpv4HeaderLength(ihl));
    }
    let header_len = usize::from(ihl) * 4;
    let header = data
        .get(..header_len)
        .ok_or(DecodeError::Truncated("ipv4"))?;
    let flags_fragment = be16(header, 6).ok_or(DecodeError::Truncated("ipv4"))?;
    let fragment_offset = flags_fragment & 0x1FFF;
    let more_fragments = flags_fragment & 0x2000 != 0;
    let protocol = header[9];
    let src = IpAddr::V4(Ipv4Addr::new(
        header[12], header[13], header[14], header[15],
    ));
    let dst = IpAddr::V4(Ipv4Addr::new(
        header[16], header[17], header[18], header[19],
    ));
    let l4 = &data[header_len..];
    // A first fragment may still hold the whole transport header; a later
    // fragment never does. nmap -f splits the TCP header itself, so a first
    // fragment too short for it is reported as a fragment, not an error.
    let fragment = fragment_offset != 0 || (more_fragments && l4.len() < min_header(protocol));
    let total = usize::from(be16(header, 2).unwrap_or(0));
    Ok(IpParts {
        src,
        dst,
        protocol,
        fragment,
        first: fragment_offset == 0,
        l4,
        l4_len: total.saturating_sub(header_len),
        ip_len: total as u32,
    })
}

/// What a fragment shows: the ports, if it is the first fragment and holds
/// them.
fn fragment_transport(protocol: u8, l4: &[u8], first: bool) -> Transport {
    let ports = (first && matches!(protocol, PROTO_TCP | PROTO_UDP))
        .then(|| Some((be16(l4, 0)?, be16(l4, 2)?)))
        .flatten();
    Transport::Fragment {
        protocol,
        src_port: ports.map(|p| p.0),
        dst_port: ports.map(|p| p.1),
    }
}

/// Decodes an IPv6 packet (starting at the IP header), walking extension
/// headers to the transport header.
pub fn ipv6(data: &[u8]) -> Result<Packet, DecodeError> {
    packet(ipv6_header(data)?, true)
}

fn ipv6_header(data: &[u8]) -> Result<IpParts<'_>, DecodeError> {
    let header = data.get(..40).ok_or(DecodeError::Truncated("ipv6"))?;
    if header[0] >> 4 != 6 {
        return Err(DecodeError::WrongIpVersion(header[0] >> 4));
    }
    let src = IpAddr::V6(Ipv6Addr::from(octets16(&header[8..24])));
    let dst = IpAddr::V6(Ipv6Addr::from(octets16(&header[24..40])));
    let mut next = header[6];
    let mut rest = &data[40..];
    let mut fragment = false;
    let mut first = true;
    // Bounded walk: a chain longer than this is abuse, reported as-is.
    for _ in 0..8 {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte
            // units, not counting the first 8 bytes.
            0 | 43 | 60 => {
                let len =
                    usize::from(*rest.get(1).ok_or(DecodeError::Truncated("ipv6 ext"))?) * 8 + 8;
                next = rest[0];
                rest = rest.get(len..).ok_or(DecodeError::Truncated("ipv6 ext"))?;
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                let ext = rest
                    .get(..8)
                    .ok_or(DecodeError::Truncated("ipv6 fragment"))?;
                next = ext[0];
                let offset = be16(ext, 2).unwrap_or(0) >> 3;
                let more = ext[3] & 1 != 0;
                rest = &rest[8..];
                first = offset == 0;
                fragment = offset != 0 || (more && rest.len() < min_header(next));
                if fragment {
                    break;
                }
            }
            _ => break,
        }
    }
    let payload = usize::from(be16(header, 4).unwrap_or(0));
    let ext_len = data.len() - 40 - rest.len();
    Ok(IpParts {
        src,
        dst,
        protocol: next,
        fragment,
        first,
        l4: rest,
        l4_len: payload.saturating_sub(ext_len),
        ip_len: payload as u32 + 40,
    })
}

fn min_header(protocol: u8) -> usize {
    match protocol {
        PROTO_TCP => 20,
        PROTO_UDP | PROTO_ICMP | PROTO_ICMPV6 => 8,
        _ => 0,
    }
}

fn transport(protocol: u8, data: &[u8], l4_len: usize, v6: bool) -> Result<Transport, DecodeError> {
    Ok(match protocol {
        PROTO_TCP => {
            let header = data.get(..20).ok_or(DecodeError::Truncated("tcp"))?;
            let offset = header[12] >> 4;
            if offset < 5 {
                return Err(DecodeError::BadTcpOffset(offset));
            }
            Transport::Tcp {
                src_port: u16::from_be_bytes([header[0], header[1]]),
                dst_port: u16::from_be_bytes([header[2], header[3]]),
                seq: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
                ack: u32::from_be_bytes([header[8], header[9], header[10], header[11]]),
                flags: header[13],
                window: u16::from_be_bytes([header[14], header[15]]),
                options_len: (offset - 5) * 4,
            }
        }
        PROTO_UDP => {
            let header = data.get(..8).ok_or(DecodeError::Truncated("udp"))?;
            Transport::Udp {
                src_port: u16::from_be_bytes([header[0], header[1]]),
                dst_port: u16::from_be_bytes([header[2], header[3]]),
            }
        }
        PROTO_ICMP if !v6 => Transport::Icmp(icmpv4(data, l4_len)?),
        PROTO_ICMPV6 if v6 => Transport::Icmp(icmpv6(data, l4_len)?),
        other => Transport::Other { protocol: other },
    })
}

/// Echo payload length from the declared ICMP length.
fn echo_data(l4_len: usize) -> u16 {
    u16::try_from(l4_len.saturating_sub(8)).unwrap_or(u16::MAX)
}

fn icmpv4(data: &[u8], l4_len: usize) -> Result<Icmp, DecodeError> {
    let header = data.get(..8).ok_or(DecodeError::Truncated("icmp"))?;
    let (icmp_type, code) = (header[0], header[1]);
    Ok(match icmp_type {
        8 => Icmp::EchoRequest {
            data_len: echo_data(l4_len),
        },
        0 => Icmp::EchoReply,
        3 => Icmp::Unreachable {
            reason: match code {
                2 => Unreachable::Protocol,
                3 => Unreachable::Port,
                other => Unreachable::Other(other),
            },
            quoted: quoted(&data[8..], false),
        },
        13 | 17 => Icmp::InfoRequest { icmp_type },
        _ => Icmp::Other { icmp_type, code },
    })
}

fn icmpv6(data: &[u8], l4_len: usize) -> Result<Icmp, DecodeError> {
    let header = data.get(..8).ok_or(DecodeError::Truncated("icmpv6"))?;
    let (icmp_type, code) = (header[0], header[1]);
    Ok(match icmp_type {
        128 => Icmp::EchoRequest {
            data_len: echo_data(l4_len),
        },
        129 => Icmp::EchoReply,
        1 => Icmp::Unreachable {
            reason: if code == 4 {
                Unreachable::Port
            } else {
                Unreachable::Other(code)
            },
            quoted: quoted(&data[8..], true),
        },
        // Parameter problem, unrecognized next header: IPv6's "protocol
        // unreachable".
        4 if code == 1 => Icmp::Unreachable {
            reason: Unreachable::Protocol,
            quoted: quoted(&data[8..], true),
        },
        _ => Icmp::Other { icmp_type, code },
    })
}

/// The quoted header inside an ICMP error. Best effort: a short or odd
/// quote gives `None` rather than an error, since the outer packet is fine.
fn quoted(data: &[u8], v6: bool) -> Option<Quoted> {
    let IpParts {
        src,
        dst,
        protocol,
        fragment,
        l4,
        ..
    } = if v6 {
        ipv6_header(data).ok()?
    } else {
        ipv4_header(data).ok()?
    };
    // Only the first 8 bytes of the transport header are guaranteed quoted,
    // which is exactly where TCP and UDP keep their ports.
    let ports = (!fragment && matches!(protocol, PROTO_TCP | PROTO_UDP))
        .then(|| Some((be16(l4, 0)?, be16(l4, 2)?)))
        .flatten();
    Some(Quoted {
        src,
        dst,
        protocol,
        src_port: ports.map(|p| p.0),
        dst_port: ports.map(|p| p.1),
    })
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn octets16(bytes: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests;

//! IP addresses as stored in ClickHouse: `FixedString(16)`, with IPv4
//! mapped into IPv6 (`::ffff:a.b.c.d`), so one column holds both families
//! on every server version (18.16 has no IPv4/IPv6 column types).

use std::net::{IpAddr, Ipv6Addr};

/// The 16 bytes stored for `ip`.
pub fn to_fixed16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address stored as `bytes`; mapped IPv4 comes back as IPv4.
pub fn from_fixed16(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// SQL literal matching a `FixedString(16)` column, for the portable path
/// (no server-side parameters on 18.16). Built from bytes only, so it can
/// never carry SQL.
pub fn sql_literal(ip: IpAddr) -> String {
    let hex: String = to_fixed16(ip).iter().map(|b| format!("{b:02X}")).collect();
    format!("unhex('{hex}')")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trips_as_v4() {
        let ip: IpAddr = "198.18.0.7".parse().expect("literal");
        assert_eq!(from_fixed16(to_fixed16(ip)), ip);
    }

    #[test]
    fn v6_round_trips_as_v6() {
        let ip: IpAddr = "fd00:d00::7".parse().expect("literal");
        assert_eq!(from_fixed16(to_fixed16(ip)), ip);
    }

    #[test]
    fn literal_is_hex_only() {
        let ip: IpAddr = "198.18.0.7".parse().expect("literal");
        assert_eq!(sql_literal(ip), "unhex('00000000000000000000FFFFC6120007')");
    }
}

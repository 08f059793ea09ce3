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
    format!("unhex('{}')", hex(&to_fixed16(ip)))
}

/// Upper-case hex of a stored address, as ClickHouse's `hex()` prints it.
pub fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A network in CIDR notation, e.g. `198.18.0.0/15` or `fd00:d00::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Text that is not `ADDRESS/PREFIX`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a network like 198.18.0.0/15 or fd00:d00::/64")]
pub struct BadCidr(pub String);

impl std::str::FromStr for Cidr {
    type Err = BadCidr;

    /// A bare address is a /32 (IPv4) or /128 (IPv6).
    fn from_str(text: &str) -> Result<Self, BadCidr> {
        let bad = || BadCidr(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", from_fixed16(self.range().0), self.prefix)
    }
}

impl Cidr {
    /// The network of `ip` with `prefix` bits (of its own family).
    pub fn of(ip: IpAddr, prefix: u8) -> Self {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        Self {
            network: ip,
            prefix: prefix.min(max),
        }
    }

    /// First and last address, as stored (`FixedString(16)`).
    pub fn range(&self) -> ([u8; 16], [u8; 16]) {
        let bits = u32::from(self.prefix) + if self.network.is_ipv4() { 96 } else { 0 };
        let value = u128::from_be_bytes(to_fixed16(self.network));
        let host_mask = u128::MAX.checked_shr(bits).unwrap_or(0);
        (
            (value & !host_mask).to_be_bytes(),
            (value | host_mask).to_be_bytes(),
        )
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (first, last) = self.range();
        let ip = to_fixed16(ip);
        ip >= first && ip <= last
    }

    /// SQL that is true when `column` (a `FixedString(16)`) lies in this
    /// network. Built from bytes only.
    pub fn sql_condition(&self, column: &str) -> String {
        let (first, last) = self.range();
        format!(
            "({column} >= unhex('{}') AND {column} <= unhex('{}'))",
            hex(&first),
            hex(&last)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_contain_and_print() {
        let lab: Cidr = "198.18.0.0/15".parse().expect("cidr");
        assert!(lab.contains("198.19.255.255".parse().expect("ip")));
        assert!(!lab.contains("198.20.0.0".parse().expect("ip")));
        assert!(!lab.contains("fd00:d00::1".parse().expect("ip")));
        assert_eq!(
            Cidr::of("203.0.113.77".parse().expect("ip"), 24).to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            Cidr::of("fd00:d00::7".parse().expect("ip"), 64).to_string(),
            "fd00:d00::/64"
        );
        let one: Cidr = "192.0.2.5".parse().expect("bare address");
        assert!(one.contains("192.0.2.5".parse().expect("ip")));
        assert!(!one.contains("192.0.2.6".parse().expect("ip")));
        for bad in ["", "10.0.0.0/33", "x/8", "fd00::/129", "10.0.0.0/"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        assert_eq!(
            lab.sql_condition("scanner"),
            "(scanner >= unhex('00000000000000000000FFFFC6120000') AND scanner <= unhex('00000000000000000000FFFFC613FFFF'))"
        );
    }

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

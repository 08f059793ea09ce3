//! The policy merge: what a policy pushed by the collector changes in the
//! detector's thresholds. Pure: the configured thresholds and the policy go
//! in, the thresholds to use come out. It must not touch the detector, the
//! counters or the log; the capture loop does that.

use std::net::IpAddr;

use doorwatch_proto::v1;

use crate::detect::DetectorConfig;

/// The thresholds to run with under `policy`, starting from the configured
/// `base` each time (so a later policy never builds on an earlier one).
///
/// A 0 in a numeric field keeps the configured value. A pushed
/// `scan_min_ports` also raises `blind_min_ports` to at least the same
/// value. Allowlisted sources are added to the configured ones; an entry
/// that is neither 4 nor 16 bytes long is ignored.
pub fn merge(base: &DetectorConfig, policy: &v1::Policy) -> DetectorConfig {
    let mut config = base.clone();
    if policy.scan_min_ports > 0 {
        config.scan_min_ports = policy.scan_min_ports;
        config.blind_min_ports = config.blind_min_ports.max(policy.scan_min_ports);
    }
    if policy.episode_idle_seconds > 0 {
        config.episode_idle_ms = u64::from(policy.episode_idle_seconds) * 1000;
    }
    for bytes in &policy.allowlisted_sources {
        if let Ok(v4) = <[u8; 4]>::try_from(bytes.as_slice()) {
            config.allowlist.insert(IpAddr::from(v4));
        } else if let Ok(v6) = <[u8; 16]>::try_from(bytes.as_slice()) {
            config.allowlist.insert(IpAddr::from(v6));
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> DetectorConfig {
        let mut base = DetectorConfig::default();
        base.allowlist.insert("192.0.2.1".parse().expect("ip"));
        base
    }

    #[test]
    fn zeros_keep_the_configured_thresholds() {
        let policy = v1::Policy {
            version: 7,
            ..v1::Policy::default()
        };
        assert_eq!(merge(&base(), &policy), base());
    }

    #[test]
    fn a_pushed_scan_threshold_also_raises_the_blind_one() {
        let policy = v1::Policy {
            scan_min_ports: 40,
            ..v1::Policy::default()
        };
        let merged = merge(&base(), &policy);
        assert_eq!(merged.scan_min_ports, 40);
        assert_eq!(merged.blind_min_ports, 40);
        // A lower one leaves the (higher) blind threshold as configured.
        let policy = v1::Policy {
            scan_min_ports: 8,
            ..v1::Policy::default()
        };
        let merged = merge(&base(), &policy);
        assert_eq!(merged.scan_min_ports, 8);
        assert_eq!(merged.blind_min_ports, base().blind_min_ports);
        assert_eq!(merged.episode_idle_ms, base().episode_idle_ms);
    }

    #[test]
    fn idle_seconds_become_milliseconds() {
        let policy = v1::Policy {
            episode_idle_seconds: 90,
            ..v1::Policy::default()
        };
        let merged = merge(&base(), &policy);
        assert_eq!(merged.episode_idle_ms, 90_000);
        assert_eq!(merged.scan_min_ports, base().scan_min_ports);
    }

    #[test]
    fn allowlisted_sources_add_to_the_configured_ones_and_bad_lengths_are_ignored() {
        let v6: IpAddr = "2001:db8::5".parse().expect("ip");
        let IpAddr::V6(v6_addr) = v6 else {
            unreachable!("parsed as v6")
        };
        let policy = v1::Policy {
            allowlisted_sources: vec![
                vec![198, 51, 100, 7],
                v6_addr.octets().to_vec(),
                vec![1, 2, 3],
                Vec::new(),
            ],
            ..v1::Policy::default()
        };
        let merged = merge(&base(), &policy);
        let mut expected = base().allowlist;
        expected.insert("198.51.100.7".parse().expect("ip"));
        expected.insert(v6);
        assert_eq!(merged.allowlist, expected);
    }

    #[test]
    fn each_policy_starts_from_the_configured_base() {
        let first = v1::Policy {
            allowlisted_sources: vec![vec![198, 51, 100, 7]],
            scan_min_ports: 30,
            ..v1::Policy::default()
        };
        let second = v1::Policy::default();
        let _ = merge(&base(), &first);
        assert_eq!(merge(&base(), &second), base());
    }
}

//! Plain-language explanations of what the detector found, for help-desk
//! staff and PC users. Pure text formatting.

use crate::detect::{EpisodeReport, ScanKind};

/// Well-known service names for ports that scanners look for.
pub fn service_name(port: u16) -> Option<&'static str> {
    Some(match port {
        21 => "FTP",
        22 => "SSH",
        23 => "Telnet",
        25 => "mail (SMTP)",
        53 => "DNS",
        80 | 8080 | 8000 => "web",
        110 => "mail (POP3)",
        135 => "Windows RPC",
        139 | 445 => "Windows file sharing",
        143 => "mail (IMAP)",
        443 | 8443 => "secure web",
        1433 => "SQL Server",
        3306 => "MySQL",
        3389 => "Windows Remote Desktop",
        5432 => "PostgreSQL",
        5900 => "VNC remote desktop",
        6379 => "Redis",
        _ => return None,
    })
}

/// "1,000" style thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 => "under a second".to_owned(),
        1 => "1 second".to_owned(),
        2..=119 => format!("{secs} seconds"),
        120..=7199 => format!("{} minutes", secs / 60),
        _ => format!("{} hours", secs / 3600),
    }
}

fn technique(kinds: &[ScanKind]) -> &'static str {
    match kinds.first() {
        Some(ScanKind::Syn) | None => {
            "a half-open SYN scan, the default of the nmap tool, which knocks on each door and walks away before it opens"
        }
    }
}

/// The explanation attached to a scan episode.
pub fn scan(report: &EpisodeReport) -> String {
    let ports = u64::from(report.ports_probed);
    let mut text = format!(
        "{} tried {} {} on this PC ({}) in {} using {}.",
        report.scanner,
        thousands(ports),
        if ports == 1 { "port" } else { "ports" },
        report.target,
        duration(report.last_seen_ms.saturating_sub(report.first_seen_ms)),
        technique(&report.kinds),
    );
    if report.open_ports.is_empty() {
        text.push_str(" None of them were open, so the scanner found no way in.");
        text.push_str(" No action is needed on this PC unless the scans continue.");
    } else {
        let listed: Vec<String> = report
            .open_ports
            .iter()
            .take(10)
            .map(|&p| match service_name(p) {
                Some(name) => format!("{p} ({name})"),
                None => p.to_string(),
            })
            .collect();
        let more = report.open_ports.len().saturating_sub(listed.len());
        text.push_str(&format!(
            " {} of them {} open: {}{}.",
            report.open_ports.len(),
            if report.open_ports.len() == 1 {
                "was"
            } else {
                "were"
            },
            listed.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
        ));
        text.push_str(" Make sure these services are patched, or close them.");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::EpisodeState;

    fn report(open_ports: Vec<u16>) -> EpisodeReport {
        EpisodeReport {
            episode: 1,
            state: EpisodeState::Active,
            scanner: "198.51.100.7".parse().expect("literal"),
            target: "198.18.0.10".parse().expect("literal"),
            kinds: vec![ScanKind::Syn],
            ports_probed: 1000,
            port_sample: vec![],
            open_ports,
            probes: 1000,
            first_seen_ms: 10_000,
            last_seen_ms: 12_100,
            confidence: 90,
            explanation: String::new(),
        }
    }

    #[test]
    fn names_the_open_doors() {
        let text = scan(&report(vec![22, 80, 445]));
        assert_eq!(
            text,
            "198.51.100.7 tried 1,000 ports on this PC (198.18.0.10) in 2 seconds using a half-open \
             SYN scan, the default of the nmap tool, which knocks on each door and walks away before \
             it opens. 3 of them were open: 22 (SSH), 80 (web), 445 (Windows file sharing). Make \
             sure these services are patched, or close them."
        );
    }

    #[test]
    fn says_when_nothing_was_open() {
        assert!(scan(&report(vec![])).contains("None of them were open"));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(65_535), "65,535");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}

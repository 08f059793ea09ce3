//! Plain-language explanations of what the detector found, for help-desk
//! staff and PC users. Pure text formatting.
//!
//! It reads only the report types of [`crate::findings`] (and the process
//! names of [`crate::procfs`]); detection and outbound monitoring call it,
//! never the other way round.

use crate::findings::{AnomalyReport, EpisodeReport, FloodReport, KnockReport, ScanKind};

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

/// "5 seconds", "3 minutes", "2 hours": a span of whole seconds.
pub fn seconds(secs: u64) -> String {
    duration(secs.saturating_mul(1000))
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

fn technique(kinds: &[ScanKind]) -> String {
    let phrase = |kind: &ScanKind| match kind {
        ScanKind::Syn => {
            "a half-open SYN scan (the default of the nmap tool: it knocks on each door and walks away before it opens)"
        }
        ScanKind::Connect => "a connect scan (full connections, closed at once)",
        ScanKind::Fin => "FIN probes (a stealth technique that slips past some firewalls)",
        ScanKind::Null => "NULL probes with no flags set (a stealth technique)",
        ScanKind::Xmas => "Xmas probes with FIN, PSH and URG set (a stealth technique)",
        ScanKind::Maimon => "Maimon probes (FIN+ACK, a stealth technique)",
        ScanKind::Ack => "ACK probes (used to map which ports a firewall lets through)",
        ScanKind::Udp => "UDP probes",
        ScanKind::IpProto => "probes for which network protocols this PC speaks",
        ScanKind::Icmp => "ICMP discovery probes (checking whether this PC is there)",
    };
    let phrases: Vec<&str> = kinds.iter().map(phrase).collect();
    match phrases.as_slice() {
        [] => "probes".to_owned(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The explanation attached to a scan episode.
pub fn scan(report: &EpisodeReport) -> String {
    let ports = u64::from(report.ports_probed);
    let only_protocols = report.kinds == [ScanKind::IpProto];
    let only_icmp = report.kinds == [ScanKind::Icmp];
    let mut text = if only_icmp {
        format!(
            "{} checked whether this PC ({}) is there using {}. This is usually the first step of a scan.",
            report.scanner,
            report.target,
            technique(&report.kinds),
        )
    } else {
        format!(
            "{} tried {} {} on this PC ({}) in {} using {}.",
            report.scanner,
            thousands(ports),
            match (only_protocols, ports == 1) {
                (true, true) => "network protocol",
                (true, false) => "network protocols",
                (false, true) => "port",
                (false, false) => "ports",
            },
            report.target,
            duration(report.last_seen_ms.saturating_sub(report.first_seen_ms)),
            technique(&report.kinds),
        )
    };
    if report.fragmented {
        text.push_str(" The probes were split into fragments to get past filters.");
    }
    if report.handshake_verified {
        text.push_str(
            " It completed a connection with this PC, so the address is really the scanner's and not forged.",
        );
    }
    if !report.companions.is_empty() {
        let listed: Vec<String> = report
            .companions
            .iter()
            .take(5)
            .map(ToString::to_string)
            .collect();
        text.push_str(&format!(
            " {} other {} sent the same probes at the same time ({}); these are most likely decoys meant to hide the real scanner.",
            report.companions.len(),
            if report.companions.len() == 1 { "address" } else { "addresses" },
            listed.join(", "),
        ));
    }
    if only_icmp || only_protocols {
        return text;
    }
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
    for e in report.exposed.iter().take(5) {
        let program = if e.process.is_empty() {
            String::new()
        } else {
            format!(", opened by {},", e.process)
        };
        text.push_str(&format!(
            " Port {}{program} is a risky exposure. It is {}.",
            e.port, e.risk
        ));
    }
    text
}

/// The explanation attached to a flood.
pub fn flood(report: &FloodReport) -> String {
    let ports = match report.ports.as_slice() {
        [] => String::new(),
        [one] => format!(" on port {one}"),
        many => format!(
            " on ports {}",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "A flood of connection attempts hit this PC ({}){} from about {} different source \
         addresses in {}. The addresses are almost certainly forged, so blocking them does not \
         help: this is an attempt to overload the PC, not a scan. If it goes on, tell the \
         network team so they can filter it upstream.",
        report.target,
        ports,
        thousands(report.sources),
        duration(report.last_seen_ms.saturating_sub(report.first_seen_ms)),
    )
}

/// The explanation attached to a report of knocks.
pub fn knocks(report: &KnockReport) -> String {
    let mut sources: Vec<_> = report.knocks.iter().map(|k| k.source).collect();
    sources.sort_unstable();
    sources.dedup();
    let mut ports: Vec<(u16, u8, u64)> = Vec::new();
    for k in &report.knocks {
        match ports
            .iter_mut()
            .find(|(p, proto, _)| *p == k.port && *proto == k.protocol)
        {
            Some(entry) => entry.2 += 1,
            None => ports.push((k.port, k.protocol, 1)),
        }
    }
    ports.sort_by_key(|&(port, _, n)| (std::cmp::Reverse(n), port));
    let shown: Vec<String> = ports
        .iter()
        .take(5)
        .map(|&(port, proto, n)| {
            let proto = if proto == 17 { "udp" } else { "tcp" };
            let name = service_name(port).map_or(String::new(), |s| format!(" ({s})"));
            let times = if n > 1 {
                format!(" ×{n}")
            } else {
                String::new()
            };
            format!("{port}/{proto}{name}{times}")
        })
        .collect();
    let more = if ports.len() > 5 {
        format!(" and {} other ports", ports.len() - 5)
    } else {
        String::new()
    };
    let unlisted = if report.unlisted > 0 {
        format!(
            " ({} more tries are not listed)",
            thousands(report.unlisted)
        )
    } else {
        String::new()
    };
    let who = match sources.as_slice() {
        [one] => format!("{one} tried"),
        many => format!("{} addresses tried", many.len()),
    };
    let what = match ports.len() {
        1 => "a closed port".to_owned(),
        n => format!("{n} closed ports"),
    };
    format!(
        "{who} {what} of this PC without going on to scan it: {}{more}{unlisted}. On its own \
         that is not a scan of this PC. doorwatch compares such tries across campus: one address \
         trying many PCs is a sweep, many addresses trying the same ports is a botnet. Nothing to \
         do on this PC.",
        shown.join(", "),
    )
}

/// "1.2 GB", "50 MB", "900 KB" (powers of 1000, as people read them).
pub fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "GB"), (1_000_000, "MB"), (1_000, "KB")];
    for (size, unit) in UNITS {
        if n >= size {
            let tenths = n * 10 / size;
            return if tenths.is_multiple_of(10) || tenths >= 100 {
                format!("{} {unit}", tenths / 10)
            } else {
                format!("{}.{} {unit}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{n} bytes")
}

/// "python3 (pid 4242, user alice)", or "A program" when unknown.
fn who(process: Option<&crate::procfs::Process>) -> String {
    match process {
        Some(p) if p.user.is_empty() => format!("{} (pid {})", p.name, p.pid),
        Some(p) => format!("{} (pid {}, user {})", p.name, p.pid, p.user),
        None => "A program on this PC (its process could not be found)".to_owned(),
    }
}

/// The explanation attached to an outbound anomaly.
pub fn outbound(report: &AnomalyReport) -> String {
    use crate::findings::AnomalyKind;
    let who = who(report.process.as_ref());
    let span = duration(report.last_seen_ms.saturating_sub(report.first_seen_ms));
    let port_name = |port: u16| {
        service_name(port).map_or(format!("port {port}"), |s| format!("port {port} ({s})"))
    };
    match report.kind {
        AnomalyKind::UploadVolume => {
            let to = report
                .remote
                .map(|ip| std::net::SocketAddr::new(ip, report.port).to_string())
                .unwrap_or_default();
            let usual = if report.baseline_per_hour > 0 {
                format!(
                    "this PC usually sends about {} an hour at this time of day",
                    bytes(report.baseline_per_hour)
                )
            } else {
                "this PC has no usual amount yet, and that is more than doorwatch ever lets pass \
                 without a report"
                    .to_owned()
            };
            format!(
                "{who} sent {} to {to} in {span}; {usual}. If nobody on this PC is uploading \
                 on purpose (a backup, a large file), a virus or trojan may be sending data out.",
                bytes(report.bytes_out)
            )
        }
        AnomalyKind::Scan => match report.remote {
            Some(host) => format!(
                "{who} probed {} ports of {host} in {span}, and most were closed: this PC is \
                 scanning another machine. If nobody here ran a scanner on purpose, the PC may \
                 be infected.",
                thousands(u64::from(report.ports))
            ),
            None => format!(
                "{who} tried {} on {} different hosts in {span}, and they refused or did not \
                 answer. That is how worms spread: check this PC for malware.",
                port_name(report.port),
                thousands(u64::from(report.hosts))
            ),
        },
        AnomalyKind::SmtpFanout => format!(
            "{who} connected to the mail port (25) of {} different servers in {span}. Ordinary \
             PCs send mail through the campus mail server only; sending straight to many mail \
             servers is what spam bots do.",
            thousands(u64::from(report.hosts))
        ),
        AnomalyKind::FailedConnections => format!(
            "{} of the {} connections this PC opened in {span} failed ({}%). That is typical of \
             scanning, or of malware that cannot reach its servers. The program opening most of \
             them: {who}.",
            thousands(u64::from(report.failed)),
            thousands(u64::from(report.attempts)),
            u64::from(report.failed) * 100 / u64::from(report.attempts.max(1))
        ),
    }
}

/// Unix milliseconds as RFC 3339 in UTC (with the fraction when there is
/// one), or an empty string if the time cannot be shown.
pub fn rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::EpisodeState;

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
            companions: vec![],
            fragmented: false,
            handshake_verified: false,
            exposed: vec![],
            explanation: String::new(),
        }
    }

    #[test]
    fn names_risky_exposures_reached() {
        let mut r = report(vec![8080]);
        r.exposed = vec![crate::findings::Exposure {
            protocol: 6,
            port: 8080,
            process: "python3".to_owned(),
            risk: "a proxy-style port".to_owned(),
        }];
        assert!(
            scan(&r).ends_with(
                " Port 8080, opened by python3, is a risky exposure. It is a proxy-style port."
            ),
            "{}",
            scan(&r)
        );
    }

    #[test]
    fn names_the_open_doors() {
        let text = scan(&report(vec![22, 80, 445]));
        assert_eq!(
            text,
            "198.51.100.7 tried 1,000 ports on this PC (198.18.0.10) in 2 seconds using a half-open \
             SYN scan (the default of the nmap tool: it knocks on each door and walks away before \
             it opens). 3 of them were open: 22 (SSH), 80 (web), 445 (Windows file sharing). Make \
             sure these services are patched, or close them."
        );
    }

    #[test]
    fn says_when_nothing_was_open() {
        assert!(scan(&report(vec![])).contains("None of them were open"));
    }

    #[test]
    fn knocks_name_the_ports_tried() {
        let knock = |source: &str, port| crate::findings::Knock {
            source: source.parse().expect("literal"),
            target: "198.18.0.10".parse().expect("literal"),
            port,
            protocol: 6,
            refused: true,
            probes: 1,
            first_seen_ms: 1,
            last_seen_ms: 1,
        };
        let report = KnockReport {
            knocks: vec![
                knock("198.51.100.7", 22),
                knock("198.51.100.8", 22),
                knock("198.51.100.9", 3389),
            ],
            unlisted: 0,
            explanation: String::new(),
        };
        assert_eq!(
            knocks(&report),
            "3 addresses tried 2 closed ports of this PC without going on to scan it: 22/tcp (SSH) \
             ×2, 3389/tcp (Windows Remote Desktop). On its own that is not a scan of this PC. \
             doorwatch compares such tries across campus: one address trying many PCs is a sweep, \
             many addresses trying the same ports is a botnet. Nothing to do on this PC."
        );
    }

    #[test]
    fn byte_amounts_read_as_people_say_them() {
        assert_eq!(bytes(999), "999 bytes");
        assert_eq!(bytes(1_200_000_000), "1.2 GB");
        assert_eq!(bytes(50_000_000), "50 MB");
        assert_eq!(bytes(209_715_200), "209 MB");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(65_535), "65,535");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}

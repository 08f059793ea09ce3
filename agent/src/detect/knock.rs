//! Knocks: tries at closed ports by sources that this PC has not (yet)
//! reported as scanners.
//!
//! One try at one closed port, or a few, is not a scan of this PC, and
//! the detector does not call it one. Across campus it may be: a
//! horizontal sweep tries port 22 once on every PC, and a botnet spreads a
//! few ports over many sources. So, every few seconds, the tries that this
//! PC refused (RST, ICMP port unreachable) or left unanswered are reported
//! together, and the collector's correlator looks for the pattern.
//!
//! Bounded: at most [`MAX_KNOCKS`] listed per report (the rest counted),
//! and nothing is listed for an address under a flood, whose report
//! already says it.

use std::net::IpAddr;

use super::pair::{Answer, Contact};
use super::probation::Probation;
use crate::findings::{Knock, KnockReport, MAX_KNOCKS};

/// A TCP try with no answer after this long counts as unanswered.
pub(super) const SILENT_AFTER_MS: u64 = 3_000;
/// Most knocks one undecided source adds to one report.
pub(super) const MAX_PER_SOURCE: usize = 16;

/// The knock a probation entry amounts to at `now`, if it is one yet:
/// a TCP SYN refused or unanswered for a while, or a UDP datagram refused.
/// An unanswered UDP datagram is ordinary (most UDP services stay silent
/// to what they do not understand), and an answered try is a connection.
pub(super) fn of(source: IpAddr, target: IpAddr, entry: &Probation, now: u64) -> Option<Knock> {
    let (port, protocol) = match entry.contact {
        Contact::TcpSyn { port, .. } => (port, 6),
        Contact::Udp { port } => (port, 17),
        _ => return None,
    };
    let refused = match entry.answer {
        Some(Answer::Refused) => true,
        Some(Answer::Open) => return None,
        None if protocol == 6 && now.saturating_sub(entry.first_seen_ms) >= SILENT_AFTER_MS => {
            false
        }
        None => return None,
    };
    Some(Knock {
        source,
        target,
        port,
        protocol,
        refused,
        probes: entry.probes,
        first_seen_ms: entry.first_seen_ms,
        last_seen_ms: entry.last_seen_ms,
    })
}

/// The report for `knocks` (any order), or `None` if there are none.
pub(super) fn report(mut knocks: Vec<Knock>) -> Option<KnockReport> {
    if knocks.is_empty() {
        return None;
    }
    knocks.sort_unstable_by_key(|k| (k.first_seen_ms, k.source, k.port));
    let unlisted = knocks.len().saturating_sub(MAX_KNOCKS) as u64;
    knocks.truncate(MAX_KNOCKS);
    let mut report = KnockReport {
        knocks,
        unlisted,
        explanation: String::new(),
    };
    report.explanation = crate::explain::knocks(&report);
    Some(report)
}

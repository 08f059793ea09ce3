//! Turns one tracked pair's evidence into an [`EpisodeReport`], with its
//! plain-language explanation. Pure: no I/O, no clock.

use std::net::IpAddr;

use super::config::DetectorConfig;
use super::pair::Pair;
use crate::explain;
use crate::findings::{EpisodeReport, EpisodeState, ScanKind};

pub(super) fn report(
    (scanner, target): (IpAddr, IpAddr),
    pair: &Pair,
    state: EpisodeState,
    config: &DetectorConfig,
) -> EpisodeReport {
    let kinds = pair.kinds(config);
    let mut report = EpisodeReport {
        episode: pair.episode.as_ref().map_or(0, |e| e.id),
        state,
        scanner,
        target,
        kinds: ScanKind::ALL
            .into_iter()
            .filter(|k| kinds & k.bit() != 0)
            .collect(),
        ports_probed: pair.ports_probed(),
        port_sample: pair.port_sample(64),
        open_ports: pair.open_ports(),
        probes: pair.probes,
        first_seen_ms: pair.first_seen_ms,
        last_seen_ms: pair.last_seen_ms,
        confidence: pair.confidence(config),
        companions: pair
            .episode
            .as_ref()
            .map(|e| e.companions.clone())
            .unwrap_or_default(),
        fragmented: pair.fragmented,
        handshake_verified: pair.handshake_verified,
        exposed: Vec::new(),
        explanation: String::new(),
    };
    report.explanation = explain::scan(&report);
    report
}

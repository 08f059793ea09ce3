//! `doorwatch-agent replay`: the detector over a capture file, with the
//! capture's own timestamps, and the output (a table for people, JSON
//! lines for scripts).

use std::net::IpAddr;

use anyhow::Context;
use doorwatch_agent::decode;
use doorwatch_agent::detect::{Detector, DetectorConfig};
use doorwatch_agent::explain::rfc3339_ms;
use doorwatch_agent::findings::{EpisodeState, Report};
use doorwatch_agent::pcap;
use doorwatch_agent::pipeline::TICK_MS;

use super::args::Format;

/// Replays the pcap at `path`; `local_ips` are this PC's addresses in it.
pub fn replay(
    path: &std::path::Path,
    local_ips: Vec<IpAddr>,
    format: Format,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let reader = pcap::Reader::new(&bytes).with_context(|| format!("{}", path.display()))?;
    let mut detector = Detector::new(DetectorConfig::default(), local_ips);
    let mut last_tick = 0;
    let mut bad_frames = 0u64;
    let mut finals = Vec::new();
    let mut keep_finals = |detector: &mut Detector| {
        finals.extend(detector.drain_reports().filter(|r| match r {
            Report::Scan(s) => s.state == EpisodeState::Closed,
            Report::Flood(f) => f.state == EpisodeState::Closed,
            Report::Knocks(_) => true,
        }));
    };
    for record in reader {
        let record = record.with_context(|| format!("{}", path.display()))?;
        match decode::ethernet(record.data) {
            Ok(Some(packet)) => detector.observe(&packet, record.unix_ms),
            Ok(None) => {}
            Err(_) => bad_frames += 1,
        }
        if record.unix_ms.saturating_sub(last_tick) >= TICK_MS {
            last_tick = record.unix_ms;
            detector.tick(record.unix_ms);
            keep_finals(&mut detector);
        }
    }
    detector.finish();
    keep_finals(&mut detector);
    if bad_frames > 0 {
        tracing::warn!(bad_frames, "some frames could not be decoded");
    }
    for report in &finals {
        match format {
            Format::Json => println!("{}", replay_json(report)),
            Format::Table => match report {
                Report::Scan(s) => println!(
                    "scan  {} -> {}  [{}]  ports={} open={:?} probes={}\n      {}",
                    s.scanner,
                    s.target,
                    s.kinds
                        .iter()
                        .map(|k| k.label())
                        .collect::<Vec<_>>()
                        .join(","),
                    s.ports_probed,
                    s.open_ports,
                    s.probes,
                    s.explanation
                ),
                Report::Flood(f) => println!(
                    "flood -> {}  ports={:?} sources={}\n      {}",
                    f.target, f.ports, f.sources, f.explanation
                ),
                Report::Knocks(k) => println!(
                    "knocks  {} tries at closed ports (+{} unlisted)\n      {}",
                    k.knocks.len(),
                    k.unlisted,
                    k.explanation
                ),
            },
        }
    }
    Ok(())
}

/// One line of `replay --format json`.
fn replay_json(report: &Report) -> serde_json::Value {
    match report {
        Report::Scan(s) => serde_json::json!({
            "kind": "scan",
            "scanner": s.scanner.to_string(),
            "target": s.target.to_string(),
            "scan_types": s.kinds.iter().map(|k| k.label()).collect::<Vec<_>>(),
            "ports_probed": s.ports_probed,
            "port_sample": s.port_sample,
            "open_ports": s.open_ports,
            "probes": s.probes,
            "first_seen": rfc3339_ms(s.first_seen_ms),
            "last_seen": rfc3339_ms(s.last_seen_ms),
            "companions": s.companions.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "fragmented": s.fragmented,
            "confidence": s.confidence,
            "explanation": s.explanation,
        }),
        Report::Flood(f) => serde_json::json!({
            "kind": "flood",
            "target": f.target.to_string(),
            "ports": f.ports,
            "sources": f.sources,
            "first_seen": rfc3339_ms(f.first_seen_ms),
            "last_seen": rfc3339_ms(f.last_seen_ms),
            "explanation": f.explanation,
        }),
        Report::Knocks(k) => serde_json::json!({
            "kind": "knocks",
            "knocks": k.knocks.iter().map(|k| serde_json::json!({
                "source": k.source.to_string(),
                "target": k.target.to_string(),
                "port": k.port,
                "protocol": if k.protocol == 17 { "udp" } else { "tcp" },
                "refused": k.refused,
                "probes": k.probes,
                "first_seen": rfc3339_ms(k.first_seen_ms),
            })).collect::<Vec<_>>(),
            "unlisted": k.unlisted,
            "explanation": k.explanation,
        }),
    }
}

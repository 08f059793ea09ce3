use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::findings::{FloodReport, KnockReport, ScanKind};
use crate::outbound::inventory::Listener;
use crate::outbound::{Monitor, OutboundConfig};

const PC: &str = "198.18.0.10";
const SCANNER: &str = "203.0.113.9";
const NOW: u64 = 1_796_256_000_000;
const RISK: &str = "remote desktop open to the network";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

/// Stages for a PC at [`PC`], writing its status file into `dir`, with an
/// event queue of `queue` slots.
fn stages(
    dir: &tempfile::TempDir,
    outbound: Option<OutboundLoop>,
    queue: usize,
) -> (Stages, mpsc::Receiver<v1::Event>) {
    let (tx, rx) = mpsc::channel(queue);
    let stages = Stages::new(
        Detector::new(DetectorConfig::default(), [ip(PC)]),
        outbound,
        Status::default(),
        dir.path().join("status.json"),
        tx,
        Arc::new(Counters::default()),
    );
    (stages, rx)
}

/// An outbound loop whose last inventory saw `listeners`.
fn outbound_with(dir: &tempfile::TempDir, listeners: Vec<Listener>) -> OutboundLoop {
    let mut o = OutboundLoop::new(
        Monitor::new(OutboundConfig::default(), [ip(PC)]),
        Duration::from_secs(60),
        dir.path().join("baseline.json"),
    );
    o.listeners = Some(listeners);
    o
}

fn risky_rdp() -> Listener {
    Listener {
        protocol: 6,
        port: 3389,
        local: ip("0.0.0.0"),
        process: None,
        risk: RISK.to_owned(),
    }
}

fn scan(episode: u64, state: EpisodeState, open_ports: Vec<u16>) -> EpisodeReport {
    let mut report = EpisodeReport {
        episode,
        state,
        scanner: ip(SCANNER),
        target: ip(PC),
        kinds: vec![ScanKind::Syn],
        ports_probed: 100,
        port_sample: vec![22, 80, 443, 3389],
        open_ports,
        probes: 100,
        first_seen_ms: NOW - 5_000,
        last_seen_ms: NOW,
        confidence: 90,
        companions: Vec::new(),
        fragmented: false,
        handshake_verified: false,
        exposed: Vec::new(),
        explanation: String::new(),
    };
    report.explanation = explain::scan(&report);
    report
}

fn flood(state: EpisodeState) -> FloodReport {
    FloodReport {
        episode: 2,
        state,
        target: ip(PC),
        ports: vec![80],
        sources: 10_000,
        first_seen_ms: NOW - 1_000,
        last_seen_ms: NOW,
        explanation: "a flood".to_owned(),
    }
}

fn kinds_of(status: &Status) -> Vec<&str> {
    status.findings.iter().map(|f| f.kind.as_str()).collect()
}

fn drain(rx: &mut mpsc::Receiver<v1::Event>) -> Vec<v1::Event> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        out.push(event);
    }
    out
}

#[test]
fn every_report_becomes_one_event_and_new_findings_reach_the_status_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut stages, mut rx) = stages(&dir, None, 16);
    let knocks = KnockReport {
        knocks: Vec::new(),
        unlisted: 3,
        explanation: "knocks".to_owned(),
    };
    stages.forward_reports(
        vec![
            Report::Scan(scan(1, EpisodeState::Detected, Vec::new())),
            Report::Scan(scan(1, EpisodeState::Active, Vec::new())),
            Report::Flood(flood(EpisodeState::Detected)),
            Report::Flood(flood(EpisodeState::Closed)),
            Report::Knocks(knocks),
        ],
        NOW,
    );
    let events = drain(&mut rx);
    assert_eq!(events.len(), 5);
    assert!(matches!(
        events[0].detail,
        Some(v1::event::Detail::Scan(ref s)) if s.explanation.contains(SCANNER)
    ));
    assert!(matches!(
        events[2].detail,
        Some(v1::event::Detail::Flood(_))
    ));
    assert!(matches!(
        events[4].detail,
        Some(v1::event::Detail::Knocks(_))
    ));
    // One episode keeps one id across its reports.
    let episode_id = |e: &v1::Event| match &e.detail {
        Some(v1::event::Detail::Scan(s)) => s.episode_id.clone(),
        _ => Vec::new(),
    };
    assert_eq!(episode_id(&events[0]), episode_id(&events[1]));
    assert_eq!(stages.counters.events_created.load(Ordering::Relaxed), 5);
    assert_eq!(stages.counters.events_dropped.load(Ordering::Relaxed), 0);
    // Only what was newly detected is told to the PC's user.
    assert_eq!(
        kinds_of(&stages.status),
        ["scan of this PC", "flood against this PC"]
    );
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut stages, mut rx) = stages(&dir, None, 1);
    stages.forward_reports(
        vec![
            Report::Scan(scan(1, EpisodeState::Detected, Vec::new())),
            Report::Scan(scan(1, EpisodeState::Active, Vec::new())),
            Report::Scan(scan(1, EpisodeState::Closed, Vec::new())),
        ],
        NOW,
    );
    assert_eq!(drain(&mut rx).len(), 1);
    let c = &stages.counters;
    assert_eq!(c.events_created.load(Ordering::Relaxed), 3);
    assert_eq!(c.events_dropped.load(Ordering::Relaxed), 2);
    assert_eq!(c.dropped_queue_full.load(Ordering::Relaxed), 2);
}

#[test]
fn the_detectors_own_reports_are_forwarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut stages, mut rx) = stages(&dir, None, 16);
    stages.forward(NOW);
    assert!(drain(&mut rx).is_empty());
    stages.write_status(NOW, true);
    let written = Status::read(&dir.path().join("status.json")).expect("status written");
    assert_eq!(written.updated_ms, NOW);
}

#[test]
fn a_scan_that_found_a_risky_open_port_is_high_severity_and_told_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbound = outbound_with(&dir, vec![risky_rdp()]);
    let (mut stages, _rx) = stages(&dir, Some(outbound), 16);

    let mut detected = scan(7, EpisodeState::Detected, vec![3389]);
    let plain = detected.explanation.clone();
    stages.mark_exposures(&mut detected, NOW);
    assert_eq!(detected.exposed.len(), 1);
    assert_eq!(detected.exposed[0].port, 3389);
    assert_eq!(detected.exposed[0].risk, RISK);
    assert_eq!(detected.severity(), crate::findings::Severity::High);
    assert_ne!(
        detected.explanation, plain,
        "the explanation names the exposure"
    );

    // The same episode again: marked, but not told again.
    let mut active = scan(7, EpisodeState::Active, vec![3389]);
    stages.mark_exposures(&mut active, NOW + 2_000);
    assert_eq!(active.exposed.len(), 1);
    let told = |s: &Stages| {
        kinds_of(&s.status)
            .iter()
            .filter(|k| **k == "scan reached a risky open port")
            .count()
    };
    assert_eq!(told(&stages), 1);

    // Once closed, a new episode of the same number would be told again.
    let mut closed = scan(7, EpisodeState::Closed, vec![3389]);
    stages.mark_exposures(&mut closed, NOW + 4_000);
    assert_eq!(closed.exposed.len(), 1);
    let mut again = scan(7, EpisodeState::Detected, vec![3389]);
    stages.mark_exposures(&mut again, NOW + 6_000);
    assert_eq!(told(&stages), 2);
}

#[test]
fn exposures_need_the_port_open_and_a_risk_and_an_inventory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let harmless = Listener {
        risk: String::new(),
        port: 80,
        ..risky_rdp()
    };
    let elsewhere = Listener {
        local: ip("198.18.0.99"),
        port: 445,
        ..risky_rdp()
    };
    let outbound = outbound_with(&dir, vec![risky_rdp(), harmless, elsewhere]);
    let (mut stages, _rx) = stages(&dir, Some(outbound), 16);

    // Open, but not risky; risky, but bound to another address; risky, but
    // the scan did not find it open.
    let mut report = scan(3, EpisodeState::Detected, vec![80, 445]);
    let before = report.clone();
    stages.mark_exposures(&mut report, NOW);
    assert_eq!(report, before);
    assert!(stages.status.findings.is_empty());

    // Without outbound monitoring there is no inventory: nothing is marked.
    let (mut bare, _rx) = self::stages(&dir, None, 16);
    let mut report = scan(4, EpisodeState::Detected, vec![3389]);
    let before = report.clone();
    bare.mark_exposures(&mut report, NOW);
    assert_eq!(report, before);
}

#[test]
fn forwarding_marks_exposures_before_making_the_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbound = outbound_with(&dir, vec![risky_rdp()]);
    let (mut stages, mut rx) = stages(&dir, Some(outbound), 16);
    stages.forward_reports(
        vec![Report::Scan(scan(9, EpisodeState::Detected, vec![3389]))],
        NOW,
    );
    let events = drain(&mut rx);
    let Some(v1::event::Detail::Scan(detail)) = &events[0].detail else {
        panic!("a scan event, got {events:?}");
    };
    assert_eq!(detail.exposed.len(), 1);
    assert_eq!(
        kinds_of(&stages.status),
        ["scan reached a risky open port", "scan of this PC"]
    );
}

#[test]
fn a_pushed_policy_replaces_the_thresholds_and_is_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut stages, _rx) = stages(&dir, None, 16);
    stages.apply_policy(&v1::Policy {
        version: 3,
        scan_min_ports: 50,
        ..v1::Policy::default()
    });
    assert_eq!(stages.detector.config().scan_min_ports, 50);
    assert_eq!(stages.counters.policy_version.load(Ordering::Relaxed), 3);
    // The next policy starts again from the configured thresholds.
    stages.apply_policy(&v1::Policy {
        version: 4,
        ..v1::Policy::default()
    });
    assert_eq!(stages.detector.config(), &DetectorConfig::default());
    assert_eq!(stages.counters.policy_version.load(Ordering::Relaxed), 4);
}

//! Floods: many new sources per second towards one address, as a
//! spoofed-source SYN flood produces. Reported once per flood, never as
//! thousands of scans.

use std::collections::HashMap;
use std::net::IpAddr;

use super::config::DetectorConfig;
use super::ports::PortSet;
use crate::explain;
use crate::findings::{EpisodeState, FloodReport, Report};

/// Quiet milliseconds that end a flood.
const FLOOD_IDLE_MS: u64 = 10_000;
/// Ports listed for one flood.
const MAX_PORTS: u32 = 16;

#[derive(Debug, Default)]
struct TargetFlood {
    window_start: u64,
    new_sources: u32,
    active: Option<Active>,
}

#[derive(Debug)]
struct Active {
    id: u64,
    first_seen_ms: u64,
    last_seen_ms: u64,
    /// Last time a window was at flood rate.
    last_flooding_ms: u64,
    sources: u64,
    ports: PortSet,
    last_report_ms: u64,
    reported_sources: u64,
}

/// Flood state per address of this PC.
#[derive(Debug, Default)]
pub struct Floods {
    targets: HashMap<IpAddr, TargetFlood>,
}

impl Floods {
    /// Counts a source never seen before probing `target`.
    pub fn new_source(&mut self, target: IpAddr, port: Option<u16>, now: u64) {
        let t = self.targets.entry(target).or_default();
        if now.saturating_sub(t.window_start) >= 1_000 {
            t.window_start = now;
            t.new_sources = 0;
        }
        t.new_sources += 1;
        if let Some(a) = t.active.as_mut() {
            a.sources += 1;
            a.last_seen_ms = now;
            if let Some(p) = port
                && a.ports.len() < MAX_PORTS
            {
                a.ports.insert(p);
            }
        }
    }

    /// Whether `target` is under a flood now, or its new sources this
    /// second are at flood rate already.
    pub fn busy(&self, target: IpAddr, config: &DetectorConfig) -> bool {
        self.targets.get(&target).is_some_and(|t| {
            t.active.is_some() || t.new_sources >= config.flood_new_sources_per_sec
        })
    }

    pub fn tick(
        &mut self,
        now: u64,
        config: &DetectorConfig,
        next_id: &mut u64,
        reports: &mut Vec<Report>,
    ) {
        for (&target, t) in self.targets.iter_mut() {
            let flooding = t.new_sources >= config.flood_new_sources_per_sec
                && now.saturating_sub(t.window_start) <= 2_000;
            match t.active.as_mut() {
                None if flooding => {
                    let active = Active {
                        id: *next_id,
                        first_seen_ms: t.window_start,
                        last_seen_ms: now,
                        last_flooding_ms: now,
                        sources: u64::from(t.new_sources),
                        ports: PortSet::default(),
                        last_report_ms: now,
                        reported_sources: u64::from(t.new_sources),
                    };
                    *next_id += 1;
                    reports.push(Report::Flood(report(
                        target,
                        &active,
                        EpisodeState::Detected,
                    )));
                    t.active = Some(active);
                }
                None => {}
                Some(a) => {
                    if flooding {
                        a.last_flooding_ms = now;
                    }
                    if now.saturating_sub(a.last_flooding_ms) >= FLOOD_IDLE_MS {
                        reports.push(Report::Flood(report(target, a, EpisodeState::Closed)));
                        t.active = None;
                    } else if a.sources > a.reported_sources
                        && now.saturating_sub(a.last_report_ms) >= config.update_interval_ms
                    {
                        a.last_report_ms = now;
                        a.reported_sources = a.sources;
                        reports.push(Report::Flood(report(target, a, EpisodeState::Active)));
                    }
                }
            }
        }
        self.targets
            .retain(|_, t| t.active.is_some() || now.saturating_sub(t.window_start) < 10_000);
    }

    pub fn finish(&mut self, reports: &mut Vec<Report>) {
        for (&target, t) in &self.targets {
            if let Some(a) = &t.active {
                reports.push(Report::Flood(report(target, a, EpisodeState::Closed)));
            }
        }
        self.targets.clear();
    }
}

fn report(target: IpAddr, a: &Active, state: EpisodeState) -> FloodReport {
    let mut report = FloodReport {
        episode: a.id,
        state,
        target,
        ports: a.ports.sample(MAX_PORTS as usize),
        sources: a.sources,
        first_seen_ms: a.first_seen_ms,
        last_seen_ms: a.last_seen_ms,
        explanation: String::new(),
    };
    report.explanation = explain::flood(&report);
    report
}

//! What a run reports: the `Report` built from the counters and the
//! agents' results, as text or one JSON line, and `write_ids`, the
//! generated event ids written out for checking storage against.

use std::io::Write;

use crate::cli::Cli;
use crate::{AgentResult, Outcome, Shared, Stats};

pub(crate) fn write_ids(path: &std::path::Path, results: &[AgentResult]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for id in results.iter().flat_map(|r| &r.ids) {
        writeln!(out, "{}", uuid::Uuid::from_bytes(*id).hyphenated())?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The numbers a run ends with.
pub(crate) struct Report {
    agents: u32,
    connected_peak: u64,
    connected_at_stop: u64,
    all_connected_after_s: Option<f64>,
    setup_failures: u64,
    pub(crate) generated: u64,
    pub(crate) acked: u64,
    pub(crate) refused_events: u64,
    window_s: f64,
    acked_per_s_window: f64,
    /// Seconds after the warm-up, and events acknowledged per second in them.
    steady: Option<(f64, f64)>,
    total_s: f64,
    acked_per_s_overall: f64,
    drain_s: f64,
    drain_timed_out: bool,
    batches_acked: u64,
    latency_ms: Option<[f64; 4]>,
    reconnects: u64,
    connect_failures: u64,
    stream_errors: u64,
    resent_batches: u64,
    throttles: u64,
    invalid_argument: u64,
}

impl Report {
    pub(crate) fn new(cli: &Cli, shared: &Shared, outcome: &Outcome) -> Self {
        let s = &shared.stats;
        let mut latencies: Vec<u32> = outcome
            .results
            .iter()
            .flat_map(|r| r.latencies_us.iter().copied())
            .collect();
        latencies.sort_unstable();
        let latency_ms = (!latencies.is_empty()).then(|| {
            let at = |q: f64| {
                let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
                f64::from(latencies[rank - 1]) / 1000.0
            };
            [at(0.50), at(0.90), at(0.99), at(1.0)]
        });
        let window_s = outcome.window.as_secs_f64();
        let total_s = outcome.total.as_secs_f64();
        let acked = Stats::get(&s.acked);
        let all_ms = Stats::get(&s.all_connected_ms);
        Self {
            agents: cli.agents,
            connected_peak: Stats::get(&s.connected_peak),
            connected_at_stop: outcome.connected_at_stop,
            all_connected_after_s: (all_ms > 0).then(|| all_ms as f64 / 1000.0),
            setup_failures: Stats::get(&s.setup_failures),
            generated: Stats::get(&s.generated),
            acked,
            refused_events: Stats::get(&s.refused_events),
            window_s,
            acked_per_s_window: outcome.acked_in_window as f64 / window_s.max(1e-9),
            steady: outcome.steady.map(|(d, acked)| {
                let s = d.as_secs_f64();
                (s, acked as f64 / s.max(1e-9))
            }),
            total_s,
            acked_per_s_overall: acked as f64 / total_s.max(1e-9),
            drain_s: outcome.drain.as_secs_f64(),
            drain_timed_out: outcome.drain_timed_out,
            batches_acked: Stats::get(&s.batches_acked),
            latency_ms,
            reconnects: Stats::get(&s.reconnects),
            connect_failures: Stats::get(&s.connect_failures),
            stream_errors: Stats::get(&s.stream_errors),
            resent_batches: Stats::get(&s.resent_batches),
            throttles: Stats::get(&s.throttles),
            invalid_argument: Stats::get(&s.invalid_argument),
        }
    }

    fn not_acked(&self) -> u64 {
        self.generated.saturating_sub(self.acked)
    }

    pub(crate) fn text(&self) -> String {
        let latency = match self.latency_ms {
            Some([p50, p90, p99, max]) => {
                format!("p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, max {max:.1} ms")
            }
            None => "none (no batches acknowledged)".into(),
        };
        let all = self
            .all_connected_after_s
            .map_or("never".into(), |s| format!("{s:.1} s after start"));
        format!(
            "agents:                 {agents} (setup failures {setup})\n\
             connected:              peak {peak}, {stop} when generation stopped; all connected {all}\n\
             events generated:       {generated}\n\
             events acknowledged:    {acked} ({not_acked} not acknowledged, {refused} refused as invalid)\n\
             acknowledged per second: {window:.0} over the {window_s:.1} s generating window, {overall:.0} overall ({total_s:.1} s)\n\
             steady state:           {steady}\n\
             drain:                  {drain_s:.1} s{timed_out}\n\
             batches acknowledged:   {batches}\n\
             ack latency:            {latency}\n\
             reconnects:             {reconnects} (failed connects {failed}, broken streams {broken})\n\
             resent batches:         {resent}\n\
             throttles:              {throttles}\n\
             invalid-argument errors: {invalid}\n",
            agents = self.agents,
            setup = self.setup_failures,
            peak = self.connected_peak,
            stop = self.connected_at_stop,
            generated = self.generated,
            acked = self.acked,
            not_acked = self.not_acked(),
            refused = self.refused_events,
            window = self.acked_per_s_window,
            steady = match self.steady {
                Some((s, rate)) => {
                    format!("{rate:.0} acknowledged per second over the last {s:.1} s")
                }
                None => "not reached (generation ended before every agent connected and warmed up)"
                    .into(),
            },
            window_s = self.window_s,
            overall = self.acked_per_s_overall,
            total_s = self.total_s,
            drain_s = self.drain_s,
            timed_out = if self.drain_timed_out {
                " (timed out)"
            } else {
                ""
            },
            batches = self.batches_acked,
            reconnects = self.reconnects,
            failed = self.connect_failures,
            broken = self.stream_errors,
            resent = self.resent_batches,
            throttles = self.throttles,
            invalid = self.invalid_argument,
        )
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        let latency = self.latency_ms.map(|[p50, p90, p99, max]| {
            serde_json::json!({ "p50": p50, "p90": p90, "p99": p99, "max": max })
        });
        serde_json::json!({
            "agents": self.agents,
            "setup_failures": self.setup_failures,
            "connected_peak": self.connected_peak,
            "connected_at_stop": self.connected_at_stop,
            "all_connected_after_s": self.all_connected_after_s,
            "generated": self.generated,
            "acked": self.acked,
            "not_acked": self.not_acked(),
            "refused_events": self.refused_events,
            "window_s": self.window_s,
            "acked_per_s_window": self.acked_per_s_window,
            "steady_s": self.steady.map(|(s, _)| s),
            "acked_per_s_steady": self.steady.map(|(_, rate)| rate),
            "total_s": self.total_s,
            "acked_per_s_overall": self.acked_per_s_overall,
            "drain_s": self.drain_s,
            "drain_timed_out": self.drain_timed_out,
            "batches_acked": self.batches_acked,
            "ack_latency_ms": latency,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "stream_errors": self.stream_errors,
            "resent_batches": self.resent_batches,
            "throttles": self.throttles,
            "invalid_argument": self.invalid_argument,
        })
    }
}

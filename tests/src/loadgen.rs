//! The load generator (`doorwatch-loadgen`) as a test's process: started
//! against one collector, waited for, its report and its event ids read.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::clickhouse::ClickHouse;
use crate::process::Process;
use crate::require;
use crate::stack::COLLECTOR_NAME;

/// A running load generator and the file it writes its event ids to.
#[derive(Debug)]
pub struct Loadgen {
    pub process: Process,
    ids: PathBuf,
}

impl Loadgen {
    /// Starts `doorwatch-loadgen` against `collector` with agents named
    /// PREFIX-…, certificates from the dev CA in `pki`, logging and writing
    /// its ids in `dir`; `args` sets agents, rate and timing.
    pub fn start(
        dir: &Path,
        collector: SocketAddr,
        pki: &Path,
        prefix: &str,
        args: &[&str],
    ) -> Self {
        let ids = dir.join(format!("{prefix}-ids.txt"));
        let mut command = Command::new(require::binary("doorwatch-loadgen"));
        command
            .args(["--collector", &collector.to_string()])
            .args(["--server-name", COLLECTOR_NAME, "--prefix", prefix])
            .args(["--format", "json", "--progress", "2", "--pki"])
            .arg(pki)
            .arg("--ids-out")
            .arg(&ids)
            .args(args);
        let process =
            Process::spawn(&format!("loadgen-{prefix}"), command, dir).expect("start loadgen");
        Self { process, ids }
    }

    /// Waits for the load generator to exit by itself and returns its
    /// report. Panics unless it reported every generated event
    /// acknowledged (that is what its exit status 0 means).
    pub fn finish(&mut self, timeout: Duration) -> serde_json::Value {
        let start = Instant::now();
        while self.process.is_running() {
            assert!(
                start.elapsed() < timeout,
                "loadgen still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = self.process.log();
        let report: serde_json::Value = log
            .lines()
            .filter(|line| line.starts_with('{'))
            .find_map(|line| serde_json::from_str(line).ok())
            .unwrap_or_else(|| panic!("loadgen printed no report:\n{log}"));
        assert!(
            log.contains("ok: all ") && report["not_acked"] == 0,
            "loadgen did not get every event acknowledged: {report}\n{}",
            tail(&log, 30)
        );
        assert_eq!(report["invalid_argument"], 0, "generator bug: {report}");
        report
    }

    /// The ids of every event it generated.
    pub fn ids(&self) -> Vec<String> {
        std::fs::read_to_string(&self.ids)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.ids.display()))
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The ids of the scan and flood events stored for agents whose id is
/// `LIKE agent_like`, each event once (`FINAL`), read on `clickhouse`
/// (through the Distributed tables, on a cluster node).
pub fn stored_ids(clickhouse: &ClickHouse, agent_like: &str) -> Vec<String> {
    let filter = format!("agent_id LIKE '{agent_like}'");
    clickhouse
        .query_ok(&format!(
            "SELECT toString(event_id) FROM doorwatch.scan_events FINAL WHERE {filter} \
             UNION ALL \
             SELECT toString(event_id) FROM doorwatch.flood_events FINAL WHERE {filter}"
        ))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Panics unless `stored` holds every `generated` id, exactly once, and
/// nothing else; `what` says where they were read.
pub fn assert_each_stored_once(generated: &[String], stored: &[String], what: &str) {
    let wanted: HashSet<&str> = generated.iter().map(String::as_str).collect();
    assert_eq!(
        wanted.len(),
        generated.len(),
        "the load generator made duplicate ids"
    );
    let stored_set: HashSet<&str> = stored.iter().map(String::as_str).collect();
    let missing: Vec<&&str> = wanted.difference(&stored_set).take(5).collect();
    let extra: Vec<&&str> = stored_set.difference(&wanted).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: stored ids differ from generated ids: {} missing (e.g. {missing:?}), {} unexpected (e.g. {extra:?})",
        wanted.difference(&stored_set).count(),
        stored_set.difference(&wanted).count(),
    );
    assert_eq!(
        stored.len(),
        generated.len(),
        "{what}: FINAL count differs from the number of generated ids: some event is stored twice"
    );
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

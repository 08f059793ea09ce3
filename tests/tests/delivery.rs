//! Delivery under faults, end to end: simulated agents
//! (`doorwatch-loadgen`) stream to the real collector and a real ClickHouse
//! on loopback while the collector is killed, ClickHouse is stopped for two
//! minutes, or the collector restarts under 1,000 connected agents. Every
//! event the agents generated must end up stored exactly once: nothing
//! lost, nothing doubled.
//!
//! Run with `--nocapture` to see the numbers. Needs root and
//! clickhouse-server; fails (never skips) without them.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use doorwatch_e2e::loadgen::{Loadgen, assert_each_stored_once, stored_ids, tail};
use doorwatch_e2e::require;
use doorwatch_e2e::stack::Stack;

/// Every simulated agent id starts with this, so the checks below see
/// only the load generator's events.
const PREFIX: &str = "lg";

fn stack() -> Stack {
    require::root();
    require::tool("clickhouse-server", "clickhouse-server");
    let loopback: IpAddr = "127.0.0.1".parse().expect("literal");
    Stack::start(loopback)
}

/// Starts `doorwatch-loadgen` against the stack's collector; `args` sets
/// agents, rate and timing.
fn start_loadgen(stack: &Stack, args: &[&str]) -> Loadgen {
    Loadgen::start(
        stack.dir.path(),
        stack.collector_address,
        &stack.pki,
        PREFIX,
        args,
    )
}

fn number(report: &serde_json::Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("report has no number {key}: {report}"))
}

/// Waits until ClickHouse holds at least `rows` of the load generator's
/// scan events, so a fault hits a flowing stream.
fn wait_for_flow(stack: &Stack, rows: u64) {
    let sql = format!("SELECT count() FROM doorwatch.scan_events WHERE agent_id LIKE '{PREFIX}%'");
    let got = stack.clickhouse.poll(&sql, Duration::from_secs(30), |r| {
        r.trim().parse::<u64>().is_ok_and(|n| n >= rows)
    });
    assert!(
        got.trim().parse::<u64>().is_ok_and(|n| n >= rows),
        "events are not flowing: {got:?} rows after 30 s"
    );
}

/// Asserts that every generated id is stored exactly once: the ids file
/// and the stored ids (each counted once with FINAL) are the same set,
/// and the FINAL count equals the number of ids. Returns the rows stored
/// before deduplication, for the record.
fn assert_each_id_stored_once(stack: &Stack, generated: &[String]) -> u64 {
    let stored = stored_ids(&stack.clickhouse, &format!("{PREFIX}%"));
    assert_each_stored_once(generated, &stored, "the collector's ClickHouse");
    let filter = format!("agent_id LIKE '{PREFIX}%'");
    let raw = stack.clickhouse.query_ok(&format!(
        "SELECT (SELECT count() FROM doorwatch.scan_events WHERE {filter}) \
              + (SELECT count() FROM doorwatch.flood_events WHERE {filter})"
    ));
    raw.trim().parse().expect("a count")
}

fn print_report(test: &str, report: &serde_json::Value, raw_rows: u64, ids: usize) {
    let latency = &report["ack_latency_ms"];
    eprintln!(
        "{test}: {ids} events generated, each stored once ({raw_rows} rows before deduplication); \
         {:.0} acked/s while generating, {:.0}/s overall; ack latency p50 {} ms, p99 {} ms, max {} ms; \
         reconnects {}, failed connects {}, resent batches {}, drain {:.1} s",
        report["acked_per_s_window"].as_f64().unwrap_or_default(),
        report["acked_per_s_overall"].as_f64().unwrap_or_default(),
        latency["p50"],
        latency["p99"],
        latency["max"],
        report["reconnects"],
        report["connect_failures"],
        report["resent_batches"],
        report["drain_s"].as_f64().unwrap_or_default(),
    );
}

#[test]
fn collector_killed_and_restarted() {
    let mut stack = stack();
    let mut loadgen = start_loadgen(
        &stack,
        &[
            "--agents",
            "50",
            "--rate",
            "2000",
            // 40 events a batch: a busy campus, well within what this
            // two-core machine sustains next to ClickHouse.
            "--flush-ms",
            "1000",
            "--ramp",
            "2",
            "--duration",
            "25",
            "--drain-timeout",
            "90",
        ],
    );
    loadgen
        .process
        .wait_for_log("every agent has connected", Duration::from_secs(30));
    wait_for_flow(&stack, 5_000);

    let collector = stack.collector.as_mut().expect("collector running");
    collector.kill();
    let killed = Instant::now();
    eprintln!("collector killed (SIGKILL) with events in flight");
    std::thread::sleep(Duration::from_secs(3));
    stack.restart_collector("collector-restarted");
    eprintln!("collector back after {:?}", killed.elapsed());

    let report = loadgen.finish(Duration::from_secs(150));
    assert!(
        number(&report, "reconnects") >= 50,
        "every agent reconnects after the kill: {report}"
    );
    let ids = loadgen.ids();
    let raw = assert_each_id_stored_once(&stack, &ids);
    print_report("collector_killed_and_restarted", &report, raw, ids.len());
}

#[test]
fn clickhouse_stopped_two_minutes() {
    let mut stack = stack();
    let outage = Duration::from_secs(120);
    let mut loadgen = start_loadgen(
        &stack,
        &[
            "--agents",
            "20",
            "--rate",
            "100",
            // 5 events a batch; after the outage each agent resends its
            // backlog, eight batches in flight at most.
            "--flush-ms",
            "1000",
            "--ramp",
            "1",
            // Generate through the whole outage and a little after.
            "--duration",
            "160",
            // Resending two minutes of batches takes a while; the drain
            // must cover it.
            "--drain-timeout",
            "240",
        ],
    );
    loadgen
        .process
        .wait_for_log("every agent has connected", Duration::from_secs(30));
    wait_for_flow(&stack, 300);

    stack.clickhouse.stop();
    let stopped = Instant::now();
    eprintln!("clickhouse stopped; keeping it down for {outage:?}");
    std::thread::sleep(outage.saturating_sub(stopped.elapsed()));
    stack.clickhouse.restart();
    eprintln!("clickhouse back after {:?}", stopped.elapsed());

    let report = loadgen.finish(Duration::from_secs(420));
    let collector_log = stack.collector.as_ref().expect("collector running").log();
    assert!(
        collector_log.contains("storage unavailable"),
        "the collector never reported storage unavailable:\n{}",
        tail(&collector_log, 30)
    );
    assert!(
        number(&report, "resent_batches") > 0,
        "the outage made agents resend: {report}"
    );
    let ids = loadgen.ids();
    let raw = assert_each_id_stored_once(&stack, &ids);
    print_report("clickhouse_stopped_two_minutes", &report, raw, ids.len());
}

#[test]
fn collector_restart_with_1000_agents() {
    let mut stack = stack();
    let mut loadgen = start_loadgen(
        &stack,
        &[
            "--agents",
            "1000",
            // A campus's worth: 1,000 PCs, one event each per second.
            "--rate",
            "1000",
            "--flush-ms",
            "1000",
            "--ramp",
            "10",
            "--duration",
            "30",
            "--drain-timeout",
            "60",
        ],
    );
    let start = Instant::now();
    loadgen
        .process
        .wait_for_log("every agent has connected", Duration::from_secs(40));
    eprintln!("1,000 agents connected after {:?}", start.elapsed());
    wait_for_flow(&stack, 100);

    let collector = stack.collector.as_mut().expect("collector running");
    let stopping = Instant::now();
    let graceful = collector.stop(Duration::from_secs(30));
    assert!(
        graceful,
        "the collector did not exit within 30 s of SIGTERM"
    );
    eprintln!(
        "collector stopped by SIGTERM {:?} into the run, in {:?}",
        start.elapsed(),
        stopping.elapsed()
    );
    stack.restart_collector("collector-restarted");
    eprintln!(
        "collector accepting agents again {:?} after SIGTERM",
        stopping.elapsed()
    );

    let report = loadgen.finish(Duration::from_secs(120));
    assert!(
        number(&report, "reconnects") >= 1000,
        "every agent reconnects after the restart: {report}"
    );
    assert_eq!(
        number(&report, "connected_at_stop"),
        1000,
        "all 1,000 agents are connected again before generation stops: {report}"
    );
    let ids = loadgen.ids();
    let raw = assert_each_id_stored_once(&stack, &ids);
    print_report(
        "collector_restart_with_1000_agents",
        &report,
        raw,
        ids.len(),
    );
}

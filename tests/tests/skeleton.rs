//! End-to-end: a real nmap scan against a PC namespace travels through the
//! real agent, mutual TLS and the real collector into a real ClickHouse,
//! and survives an unreachable collector and a ClickHouse outage.
//!
//! Needs root, nmap and clickhouse-server; fails (never skips) without them.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use doorwatch_e2e::netns::{Campus, Host};
use doorwatch_e2e::process::run;
use doorwatch_e2e::require;
use doorwatch_e2e::stack::{self, Stack};

const PC: &str = "198.18.0.10";
const SCANNER: &str = "198.18.0.2";

/// `FixedString(16)` literal of an address, as the store writes it.
fn fixed16(ip: &str) -> String {
    doorwatch_store::ip::sql_literal(ip.parse().expect("literal"))
}

fn campus() -> (Campus, Host, Host) {
    require::tool("nmap", "nmap");
    let mut campus = Campus::new();
    let pc = campus.add_host("pc", &[PC, "fd00:d00::10"]);
    let scanner = campus.add_host("scanner", &[SCANNER, "fd00:d00::2"]);
    (campus, pc, scanner)
}

/// nmap -sS -p1-1000 from the scanner namespace, bounded in time.
fn syn_scan(scanner: &Host, target: &str) {
    let out = run(scanner.command("timeout").args([
        "120",
        "nmap",
        "-n",
        "-Pn",
        "-sS",
        "-p1-1000",
        "--max-retries",
        "1",
        target,
    ]));
    assert!(out.contains("Nmap done"), "nmap did not finish:\n{out}");
}

/// Episode rows for scanner → PC: (max ports probed, rows, distinct event
/// ids, agent ids, scan types).
fn episode_sql() -> String {
    format!(
        "SELECT max(ports_probed), count(), uniqExact(event_id), \
         arrayStringConcat(groupUniqArray(agent_id), ','), \
         arrayStringConcat(groupUniqArrayArray(scan_types), ',') \
         FROM doorwatch.scan_events FINAL \
         WHERE scanner = {} AND target = {} FORMAT TSV",
        fixed16(SCANNER),
        fixed16(PC)
    )
}

fn max_ports(result: &str) -> u64 {
    result
        .split('\t')
        .next()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn nmap_syn_scan_reaches_clickhouse_over_mutual_tls() {
    let (mut campus, pc, scanner) = campus();
    let uplink = campus.uplink(&pc);
    let mut stack = Stack::start(IpAddr::V4(uplink.root_ip));
    let mut agent = stack.agent(&pc, "pc-1", "");
    agent.wait_for_log("connected to collector", Duration::from_secs(30));
    agent.wait_for_log("applied policy", Duration::from_secs(10));

    syn_scan(&scanner, PC);
    let scanned = Instant::now();
    let result = stack
        .clickhouse
        .poll(&episode_sql(), Duration::from_secs(10), |r| {
            max_ports(r) >= 900
        });
    let waited = scanned.elapsed();
    let fields: Vec<&str> = result.trim().split('\t').collect();
    assert!(
        max_ports(&result) >= 900,
        "expected an event with ≥ 900 ports within 10 s of the scan, got {result:?}"
    );
    assert_eq!(fields[3], "pc-1", "agent id comes from the certificate");
    assert_eq!(fields[4], "syn");
    assert_eq!(fields[1], fields[2], "each event stored once");
    eprintln!(
        "event with {} ports in ClickHouse {waited:?} after nmap finished",
        fields[0]
    );

    let events = stack.events_json("10m");
    let ours = events
        .iter()
        .find(|e| e["scanner"] == SCANNER && e["target"] == PC)
        .unwrap_or_else(|| panic!("`events --format json` lacks the scan: {events:?}"));
    assert_eq!(ours["kind"], "scan");
    assert_eq!(ours["agent_id"], "pc-1");
    assert!(
        ours["explanation"]
            .as_str()
            .is_some_and(|t| t.contains("SYN scan"))
    );

    let migrations = stack
        .clickhouse
        .query_ok("SELECT count() FROM doorwatch.schema_migrations WHERE version = 1");
    assert_eq!(migrations.trim(), "1");

    // SIGTERM: the agent closes its open episode and delivers the closing
    // report before it exits; the collector then drains and exits cleanly.
    assert!(
        agent.stop(Duration::from_secs(10)),
        "agent exits by itself on SIGTERM"
    );
    let closed_sql = format!(
        "SELECT count() FROM doorwatch.scan_events FINAL \
         WHERE state = 'closed' AND scanner = {} AND ports_probed >= 900",
        fixed16(SCANNER)
    );
    let closed = stack
        .clickhouse
        .poll(&closed_sql, Duration::from_secs(5), |r| r.trim() == "1");
    assert_eq!(closed.trim(), "1", "closing report delivered at shutdown");
    let collector = stack.collector.as_mut().expect("collector running");
    assert!(
        collector.stop(Duration::from_secs(10)),
        "collector exits by itself on SIGTERM"
    );
    assert!(
        collector.log().contains("collector stopped"),
        "{}",
        collector.log()
    );
}

#[test]
fn clickhouse_outage_is_not_acked_and_the_agent_resends() {
    let (mut campus, pc, scanner) = campus();
    let uplink = campus.uplink(&pc);
    let mut stack = Stack::start(IpAddr::V4(uplink.root_ip));
    let mut agent = stack.agent(&pc, "pc-1", "");
    agent.wait_for_log("connected to collector", Duration::from_secs(30));

    stack.clickhouse.stop();
    syn_scan(&scanner, PC);
    agent.wait_for_log("collector stream down", Duration::from_secs(60));
    let collector_log = stack
        .collector
        .as_ref()
        .map(|c| c.log())
        .unwrap_or_default();
    assert!(
        collector_log.contains("fault=Storage"),
        "collector should blame storage:\n{collector_log}"
    );
    assert!(
        !collector_log.contains("stored batch"),
        "nothing may be acknowledged while ClickHouse is down:\n{collector_log}"
    );

    stack.clickhouse.restart();
    // The agent's backoff is capped at 60 s with full jitter.
    let result = stack
        .clickhouse
        .poll(&episode_sql(), Duration::from_secs(90), |r| {
            max_ports(r) >= 900
        });
    let fields: Vec<&str> = result.trim().split('\t').collect();
    assert!(
        max_ports(&result) >= 900,
        "events never arrived: {result:?}"
    );
    assert_eq!(
        fields[1], fields[2],
        "resent events are stored once: {result:?}"
    );
    assert!(agent.is_running(), "agent kept running through the outage");
}

#[test]
fn agent_keeps_running_while_the_collector_is_unreachable() {
    let (mut campus, pc, scanner) = campus();
    let uplink = campus.uplink(&pc);
    let mut stack = Stack::start(IpAddr::V4(uplink.root_ip));
    stack.stop_collector();
    let mut agent = stack.agent(&pc, "pc-1", "");
    agent.wait_for_log("collector stream down", Duration::from_secs(30));

    syn_scan(&scanner, PC);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        agent.is_running(),
        "agent must not exit without a collector"
    );

    stack.restart_collector("collector");
    let result = stack
        .clickhouse
        .poll(&episode_sql(), Duration::from_secs(90), |r| {
            max_ports(r) >= 900
        });
    assert!(
        max_ports(&result) >= 900,
        "held events never arrived: {result:?}"
    );
    let reconnects = agent.log().matches("reconnecting to collector").count();
    assert!(
        reconnects >= 1,
        "agent retried with backoff:\n{}",
        agent.log()
    );
}

#[test]
fn agent_without_cap_net_raw_names_the_capability() {
    require::root();
    require::tool("setpriv", "util-linux");
    let dir = tempfile::tempdir().expect("temp dir");
    let ip: IpAddr = "127.0.0.1".parse().expect("literal");
    let pki = stack::pki_init(dir.path(), &[ip]);
    stack::issue_agent(&pki, "pc-1");
    let host = Host {
        ns: String::new(),
        interface: "lo".into(),
        ips: vec![ip],
    };
    let config = stack::agent_config(
        dir.path(),
        &host,
        "127.0.0.1:9".parse().expect("literal"),
        &pki,
        "pc-1",
        "",
        "",
    );
    // Let the unprivileged user read the test's files.
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(dir.path()));
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(require::binary("doorwatch-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run agent as nobody");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "agent must refuse to run");
    assert!(
        stderr.contains("CAP_NET_RAW") && stderr.contains("setcap"),
        "error should say which capability to grant:\n{stderr}"
    );
}

#[test]
fn events_spooled_before_a_kill_9_are_delivered_after_restart() {
    let (mut campus, pc, scanner) = campus();
    let uplink = campus.uplink(&pc);
    let mut stack = Stack::start(IpAddr::V4(uplink.root_ip));
    stack.stop_collector();
    // With no collector, detections can only wait in the spool.
    let mut agent = stack.agent(&pc, "pc-1", "");
    agent.wait_for_log("collector stream down", Duration::from_secs(30));
    syn_scan(&scanner, PC);
    agent.wait_for_log("scan detected", Duration::from_secs(10));
    // Past the 2 s update interval, so the 1,000-port report is spooled.
    std::thread::sleep(Duration::from_secs(3));
    agent.kill();

    stack.restart_collector("collector");
    let mut agent = stack.agent(&pc, "pc-1", "");
    agent.wait_for_log("spool opened", Duration::from_secs(30));
    let log = agent.log();
    assert!(
        !log.contains("unacknowledged_batches=0"),
        "the spool kept the batches across kill -9:\n{log}"
    );
    let result = stack
        .clickhouse
        .poll(&episode_sql(), Duration::from_secs(30), |r| {
            max_ports(r) >= 900
        });
    let fields: Vec<&str> = result.trim().split('\t').collect();
    assert!(
        max_ports(&result) >= 900,
        "spooled events never arrived: {result:?}"
    );
    assert_eq!(fields[1], fields[2], "each event stored once: {result:?}");
}

//! End-to-end: the agent's disk fills up while the collector is away.
//! Events that cannot be spooled are dropped and counted, the agent keeps
//! running, and once the collector is back every event the agent created
//! is accounted for: stored exactly once, or counted as dropped in the
//! heartbeats.
//!
//! Needs root, hping3 and clickhouse-server; fails (never skips) without them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use doorwatch_e2e::netns::Campus;
use doorwatch_e2e::process::run;
use doorwatch_e2e::require;
use doorwatch_e2e::stack::{self, Stack};

const PC: &str = "198.18.0.10";
/// Scanner addresses: 198.18.0.100 to 198.18.0.(100 + SOURCES - 1).
const SOURCES: u8 = 120;

/// A small tmpfs, unmounted even when the test fails.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("create mount point");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(path));
        Self {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// One number from a TSV answer.
fn number(text: &str, column: usize) -> u64 {
    text.trim()
        .split('\t')
        .nth(column)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no number in column {column} of {text:?}"))
}

#[test]
fn full_spool_disk_drops_are_counted_and_everything_else_arrives_once() {
    require::tool("hping3", "hping3");
    let mut campus = Campus::new();
    let pc = campus.add_host("pc", &[PC]);
    let sources: Vec<String> = (0..SOURCES)
        .map(|i| format!("198.18.0.{}", 100 + i))
        .collect();
    let source_refs: Vec<&str> = sources.iter().map(String::as_str).collect();
    let scanner = campus.add_host("scanner", &source_refs);
    let uplink = campus.uplink(&pc);
    let mut stack = Stack::start(IpAddr::V4(uplink.root_ip));
    stack.stop_collector();

    // The spool lives on a 16 KiB disk: room for a few dozen events.
    let spool = stack.dir.path().join("pc-1-spool");
    let _disk = Tmpfs::mount(&spool, "16k");
    stack::issue_agent(&stack.pki, "pc-1");
    let config = stack::agent_config(
        stack.dir.path(),
        &pc,
        stack.collector_address,
        &stack.pki,
        "pc-1",
        "heartbeat_seconds = 1",
        "[detection]\nepisode_idle_seconds = 3\nupdate_interval_seconds = 1",
    );
    let mut agent = stack::start_agent(stack.dir.path(), &pc, &config, "pc-1");
    agent.wait_for_log("collector stream down", Duration::from_secs(30));

    // Every source probes 40 closed ports: one scan episode each, two
    // reports or more (detected, closed).
    let started = Instant::now();
    for chunk in sources.chunks(30) {
        let mut probes: Vec<std::process::Child> = chunk
            .iter()
            .enumerate()
            .map(|(i, source)| {
                // Each scanner its own ports: the same ports at the same
                // time from many sources would read as decoys of one scan.
                let first_port = format!("++{}", 1000 + 100 * i);
                scanner
                    .command("timeout")
                    .args([
                        "20",
                        "hping3",
                        "-q",
                        "-S",
                        "-p",
                        &first_port,
                        "-c",
                        "40",
                        "-i",
                        "u2000",
                        "-a",
                    ])
                    .arg(source)
                    .arg(PC)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("start hping3")
            })
            .collect();
        for probe in &mut probes {
            let _ = probe.wait();
        }
    }
    eprintln!("{SOURCES} scanners done in {:?}", started.elapsed());
    agent.wait_for_log("cannot write events to the spool", Duration::from_secs(30));
    // Let every episode close (idle 3 s) while the disk is still full.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        agent.is_running(),
        "a full disk must not stop the agent:\n{}",
        agent.log()
    );

    stack.restart_collector("collector");
    // Accounting: the newest heartbeat with nothing pending must show
    // created = stored + dropped, and the drops must be spool errors.
    // Every table an agent's events land in, with the FINAL row count that
    // counts each event once: one row per event, or (knocks, flow
    // minutes, listening ports) many rows per event id. The second column
    // counts distinct ids without FINAL; the two must agree.
    let tables = [
        ("scan_events", "count()"),
        ("flood_events", "count()"),
        ("outbound_anomalies", "count()"),
        ("knock_events", "uniqExact(event_id)"),
        ("flow_minutes", "uniqExact(event_id)"),
        ("listening_ports", "uniqExact(event_id)"),
    ];
    let sum = |distinct: bool| {
        tables
            .iter()
            .map(|(t, once)| {
                let (expr, fin) = if distinct {
                    ("uniqExact(event_id)", "")
                } else {
                    (*once, "FINAL")
                };
                format!("(SELECT {expr} FROM doorwatch.{t} {fin} WHERE agent_id = 'pc-1')")
            })
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let stored_sql = format!("SELECT {}, {} FORMAT TSV", sum(false), sum(true));
    let stored_sql = stored_sql.as_str();
    let heartbeat_sql = "SELECT argMax(events_created, received_at), argMax(events_dropped, received_at), \
         argMax(dropped_spool_error, received_at), argMax(pending_events, received_at) \
         FROM doorwatch.agent_heartbeats WHERE agent_id = 'pc-1' FORMAT TSV";
    let deadline = Instant::now() + Duration::from_secs(60);
    let (created, dropped, spool_errors, pending, stored, distinct) = loop {
        let hb = stack.clickhouse.query_ok(heartbeat_sql);
        let st = stack.clickhouse.query_ok(stored_sql);
        let values = if hb.trim().is_empty() {
            None
        } else {
            Some((
                number(&hb, 0),
                number(&hb, 1),
                number(&hb, 2),
                number(&hb, 3),
                number(&st, 0),
                number(&st, 1),
            ))
        };
        if let Some(v) = values
            && v.3 == 0
            && v.0 > 0
            && v.0 == v.4 + v.1
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "accounting never balanced: heartbeat {hb:?}, stored {st:?}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "created {created}, stored {stored} (distinct ids {distinct}), dropped {dropped} \
         (spool errors {spool_errors}), pending {pending}"
    );
    assert!(dropped > 0, "a 16 KiB disk must overflow");
    assert_eq!(dropped, spool_errors, "every drop is a spool write error");
    assert!(stored > 0, "events spooled before the disk filled arrive");
    assert_eq!(stored, distinct, "each stored event once");
    assert!(
        created >= u64::from(SOURCES),
        "one episode or more per scanner: {created}"
    );
}

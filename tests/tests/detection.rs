//! End-to-end detection: real nmap, masscan and hping3 in scanner
//! namespaces against a PC namespace running the real agent, asserting the
//! classification and counts that reach ClickHouse.
//!
//! Each scan comes from its own scanner address, so every scan is its own
//! episode. Scans are bounded in ports, retries and time.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use doorwatch_e2e::netns::{Campus, Host};
use doorwatch_e2e::process::{Process, rss_kib, run};
use doorwatch_e2e::require;
use doorwatch_e2e::stack::Stack;

const PC4: &str = "198.18.0.10";
const PC6: &str = "fd00:d00::10";

fn literal(ip: &str) -> String {
    doorwatch_store::ip::sql_literal(ip.parse().expect("literal"))
}

/// The PC with a web server on port 80 (an open door to find).
struct Lab {
    // Dropped in order: processes, then the stack, then the namespaces.
    agent: Process,
    _web: Process,
    stack: Stack,
    campus: Campus,
    pc: Host,
    scanners: u32,
}

impl Lab {
    fn new() -> Self {
        require::tool("nmap", "nmap");
        require::tool("python3", "python3");
        let mut campus = Campus::new();
        let pc = campus.add_host("pc", &[PC4, PC6]);
        let uplink = campus.uplink(&pc);
        let stack = Stack::start(IpAddr::V4(uplink.root_ip));
        let mut web = pc.command("python3");
        web.args(["-m", "http.server", "80", "--bind", "::"]);
        let web = Process::spawn("web", web, stack.dir.path()).expect("web server");
        // Frequent heartbeats so tests can see what the agent reports.
        let mut agent = stack.agent(&pc, "pc-1", "heartbeat_seconds = 1");
        agent.wait_for_log("connected to collector", Duration::from_secs(30));
        // The web server answers before any scan starts.
        for _ in 0..50 {
            let probe = pc
                .command("timeout")
                .args(["2", "curl", "-s", "-o", "/dev/null", "http://198.18.0.10/"])
                .status();
            if probe.is_ok_and(|s| s.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            campus,
            pc,
            stack,
            agent,
            _web: web,
            scanners: 0,
        }
    }

    /// A new scanner host with its own IPv4 and IPv6 address.
    fn scanner(&mut self) -> (Host, String, String) {
        self.scanners += 1;
        let n = 100 + self.scanners;
        let v4 = format!("198.18.0.{n}");
        let v6 = format!("fd00:d00::{n:x}");
        let host = self.campus.add_host(&format!("s{n}"), &[&v4, &v6]);
        (host, v4, v6)
    }

    /// Runs nmap from a new scanner; returns the scanner address used.
    fn nmap(&mut self, v6: bool, args: &[&str]) -> String {
        let (host, ip4, ip6) = self.scanner();
        let target = if v6 { PC6 } else { PC4 };
        let mut command = host.command("timeout");
        command.args(["120", "nmap", "-n", "-Pn", "-T4", "--max-retries", "1"]);
        if v6 {
            command.arg("-6");
        }
        command.args(args).arg(target);
        let out = run(&mut command);
        assert!(
            out.contains("Nmap done"),
            "nmap {args:?} did not finish:\n{out}"
        );
        if v6 { ip6 } else { ip4 }
    }

    /// Episode summary for scanner → target once ClickHouse has it:
    /// (scan types, max ports probed, open ports, companions, fragmented).
    fn episode(
        &self,
        scanner: &str,
        target: &str,
        expect_type: &str,
    ) -> (String, u64, String, String, String) {
        self.episode_with(scanner, target, expect_type, 0)
    }

    /// [`Lab::episode`], waiting until the episode also reports at least
    /// `min_ports` ports (its first report, "detected", has only a few).
    fn episode_with(
        &self,
        scanner: &str,
        target: &str,
        expect_type: &str,
        min_ports: u64,
    ) -> (String, u64, String, String, String) {
        let sql = format!(
            "SELECT arrayStringConcat(arraySort(groupUniqArrayArray(scan_types)), ','), \
             max(ports_probed), \
             arrayStringConcat(arrayMap(p -> toString(p), arraySort(groupUniqArrayArray(open_ports))), ','), \
             arrayStringConcat(arraySort(arrayMap(c -> IPv6NumToString(c), groupUniqArrayArray(companions))), ','), \
             toString(max(fragmented)) \
             FROM doorwatch.scan_events FINAL WHERE scanner = {} AND target = {} FORMAT TSV",
            literal(scanner),
            literal(target)
        );
        let result = self
            .stack
            .clickhouse
            .poll(&sql, Duration::from_secs(15), |r| {
                let mut fields = r.split('\t');
                fields
                    .next()
                    .is_some_and(|types| types.split(',').any(|t| t == expect_type))
                    && fields
                        .next()
                        .and_then(|p| p.trim().parse::<u64>().ok())
                        .is_some_and(|p| p >= min_ports)
            });
        let f: Vec<String> = result
            .trim_end_matches('\n')
            .split('\t')
            .map(str::to_owned)
            .collect();
        assert_eq!(
            f.len(),
            5,
            "no episode for {scanner} -> {target}: {result:?}"
        );
        (
            f[0].clone(),
            f[1].parse().unwrap_or(0),
            f[2].clone(),
            f[3].clone(),
            f[4].clone(),
        )
    }
}

#[test]
fn every_nmap_scan_type_is_detected_and_named_over_ipv4_and_ipv6() {
    let mut lab = Lab::new();
    let ports = "-p1-100";
    let tcp_types = [
        ("-sS", "syn"),
        ("-sT", "connect"),
        ("-sF", "fin"),
        ("-sN", "null"),
        ("-sX", "xmas"),
        ("-sM", "maimon"),
        ("-sA", "ack"),
        ("-sW", "ack"),
    ];
    let mut expectations = Vec::new();
    for v6 in [false, true] {
        for (flag, name) in tcp_types {
            let scanner = lab.nmap(v6, &[flag, ports]);
            expectations.push((scanner, v6, name, flag));
        }
        let scanner = lab.nmap(v6, &["-sU", "-p1-30"]);
        expectations.push((scanner, v6, "udp", "-sU"));
        let scanner = lab.nmap(v6, &["-sO", "-p1-60"]);
        expectations.push((scanner, v6, "ip_proto", "-sO"));
    }
    let mut failures = Vec::new();
    for (scanner, v6, name, flag) in &expectations {
        let target = if *v6 { PC6 } else { PC4 };
        // Full port scans report 100 ports (90 at least) before they end.
        let min_ports = if matches!(*name, "syn" | "connect") {
            90
        } else {
            0
        };
        let (types, ports_probed, open, _, _) = lab.episode_with(scanner, target, name, min_ports);
        eprintln!(
            "nmap {flag} {}: types={types} ports={ports_probed} open=[{open}]",
            if *v6 { "-6" } else { "" }
        );
        if !types.split(',').any(|t| t == *name) {
            failures.push(format!(
                "nmap {flag} (v6={v6}) gave types {types:?}, expected {name}"
            ));
        }
        if matches!(*name, "syn" | "connect") && (ports_probed < 90 || open != "80") {
            failures.push(format!(
                "nmap {flag} (v6={v6}): ports={ports_probed} open=[{open}], expected ≥ 90 and [80]"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn evasions_fragments_decoys_source_port_icmp_and_masscan_are_detected() {
    let mut lab = Lab::new();
    let fragmented = lab.nmap(false, &["-sS", "-f", "-p1-100"]);
    let from_53 = lab.nmap(false, &["-sS", "-g", "53", "-p1-100"]);
    let from_20 = lab.nmap(false, &["-sS", "-g", "20", "-p1-100"]);
    let random_order = lab.nmap(false, &["-sS", "-p1-300"]);
    let decoyed = lab.nmap(
        false,
        &["-sS", "-D", "198.18.0.201,198.18.0.202,ME", "-p1-100"],
    );
    let icmp = {
        let (host, ip4, _) = lab.scanner();
        run(host.command("timeout").args([
            "60",
            "nmap",
            "-n",
            "-sn",
            "--disable-arp-ping",
            "-PE",
            "-PP",
            "-PM",
            PC4,
        ]));
        ip4
    };
    let icmp6 = {
        let (host, _, ip6) = lab.scanner();
        run(host.command("timeout").args([
            "60",
            "nmap",
            "-n",
            "-6",
            "-sn",
            "--disable-arp-ping",
            "-PE",
            PC6,
        ]));
        ip6
    };
    let masscan = {
        require::tool("masscan", "masscan");
        let (host, ip4, _) = lab.scanner();
        let mac = run(lab.pc.command("cat").arg("/sys/class/net/eth0/address"));
        run(host.command("timeout").args([
            "60",
            "masscan",
            PC4,
            "-p1-200",
            "--rate",
            "2000",
            "--wait",
            "1",
            "--interface",
            "eth0",
            "--adapter-ip",
            &ip4,
            "--router-mac",
            mac.trim(),
        ]));
        ip4
    };

    let (types, _, _, _, frag) = lab.episode(&fragmented, PC4, "syn");
    assert!(
        types.contains("syn") && frag == "1",
        "nmap -f: types={types} fragmented={frag}"
    );
    for (scanner, name) in [
        (&from_53, "-g 53"),
        (&from_20, "-g 20"),
        (&random_order, "random order"),
    ] {
        let (types, ports, _, _, _) = lab.episode_with(scanner, PC4, "syn", 90);
        assert!(
            types.contains("syn") && ports >= 90,
            "{name}: types={types} ports={ports}"
        );
    }
    let (types, _, _, companions, _) = lab.episode(&decoyed, PC4, "syn");
    assert!(types.contains("syn"), "decoy scan: {types}");
    assert_eq!(
        companions, "::ffff:198.18.0.201,::ffff:198.18.0.202",
        "decoys are companions"
    );
    let decoy_episodes = lab.stack.clickhouse.query_ok(&format!(
        "SELECT count() FROM doorwatch.scan_events FINAL WHERE scanner IN ({}, {})",
        literal("198.18.0.201"),
        literal("198.18.0.202")
    ));
    assert_eq!(
        decoy_episodes.trim(),
        "0",
        "decoys are not episodes of their own"
    );
    let (types, _, _, _, _) = lab.episode(&icmp, PC4, "icmp");
    assert_eq!(types, "icmp");
    let (types, _, _, _, _) = lab.episode(&icmp6, PC6, "icmp");
    assert_eq!(types, "icmp", "ICMPv6 echo discovery");
    let (types, ports, _, _, _) = lab.episode_with(&masscan, PC4, "syn", 150);
    assert!(
        types.contains("syn") && ports >= 150,
        "masscan: types={types} ports={ports}"
    );
}

#[test]
fn benign_traffic_raises_nothing() {
    let mut lab = Lab::new();
    require::tool("curl", "curl");
    // Many clients fetching from the PC's web server.
    let (client, client_ip, _) = lab.scanner();
    run(client.command("bash").args([
        "-c",
        "for i in $(seq 1 200); do curl -s -o /dev/null --max-time 2 http://198.18.0.10/ || exit 1; done",
    ]));
    // The PC browsing a server: hundreds of connections it opens itself.
    let (server, server_ip, _) = lab.scanner();
    let mut web = server.command("python3");
    web.args(["-m", "http.server", "8080", "--bind", &server_ip]);
    let _web = Process::spawn("server-web", web, lab.stack.dir.path()).expect("server web");
    std::thread::sleep(Duration::from_millis(800));
    run(lab.pc.command("bash").args([
        "-c",
        &format!("for i in $(seq 1 200); do curl -s -o /dev/null --max-time 2 http://{server_ip}:8080/ || true; done"),
    ]));
    // Ordinary pings, over IPv4 and IPv6.
    require::tool("ping", "iputils-ping");
    run(client
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "198.18.0.10"]));
    run(client
        .command("ping")
        .args(["-6", "-c", "3", "-i", "0.2", PC6]));
    // An application retrying a closed port three times.
    run(client.command("bash").args([
        "-c",
        "for i in 1 2 3; do curl -s --max-time 1 http://198.18.0.10:5432/ ; sleep 0.3; done; true",
    ]));
    std::thread::sleep(Duration::from_secs(4));
    let events = lab
        .stack
        .clickhouse
        .query_ok("SELECT count() FROM doorwatch.scan_events FINAL");
    assert_eq!(
        events.trim(),
        "0",
        "benign traffic from {client_ip} and to {server_ip} raised events"
    );
    // The retries at a closed port are one knock (single tries, for the
    // campus-wide view), and nothing else is.
    let knocks = lab.stack.clickhouse.poll(
        "SELECT arrayStringConcat(groupArray(toString(port)), ',') FROM doorwatch.knock_events FINAL",
        Duration::from_secs(10),
        |r| !r.trim().is_empty(),
    );
    assert_eq!(knocks.trim(), "5432", "only the closed-port retries knock");
    let _ = Command::new("true");
}

#[test]
fn spoofed_syn_flood_is_one_flood_and_a_concurrent_scan_is_still_found() {
    require::tool("hping3", "hping3");
    let mut lab = Lab::new();
    let agent_pid = lab.agent.pid();
    let rss_before = rss_kib(agent_pid);
    let (flooder, _, _) = lab.scanner();
    // Bounded: 60,000 SYNs from forged sources, at most 60 s. The PC has no
    // default route, so its answers to the forged sources go nowhere.
    let mut flood = flooder.command("timeout");
    flood.args([
        "60",
        "hping3",
        "-q",
        "-S",
        "-p",
        "80",
        "--rand-source",
        "-i",
        "u20",
        "-c",
        "60000",
        PC4,
    ]);
    let mut flood = Process::spawn("hping3", flood, lab.stack.dir.path()).expect("hping3");
    std::thread::sleep(Duration::from_millis(500));
    let scanner = lab.nmap(false, &["-sS", "-p1-200"]);
    let mut peak = rss_before;
    while flood.is_running() {
        peak = peak.max(rss_kib(agent_pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("agent RSS: {rss_before} KiB before, {peak} KiB peak during the flood");

    let (types, ports, _, _, _) = lab.episode_with(&scanner, PC4, "syn", 190);
    assert!(
        types.contains("syn") && ports >= 190,
        "scan during flood: types={types} ports={ports}"
    );
    let floods = lab.stack.clickhouse.poll(
        &format!(
            "SELECT uniqExact(episode_id), max(sources) FROM doorwatch.flood_events FINAL \
             WHERE target = {} FORMAT TSV",
            literal(PC4)
        ),
        Duration::from_secs(15),
        |r| r.starts_with("1\t"),
    );
    let fields: Vec<&str> = floods.trim().split('\t').collect();
    assert_eq!(fields[0], "1", "one flood record: {floods:?}");
    assert!(
        fields[1].parse::<u64>().unwrap_or(0) >= 10_000,
        "flood sources: {floods:?}"
    );
    let episodes = lab
        .stack
        .clickhouse
        .query_ok("SELECT uniqExact(scanner) FROM doorwatch.scan_events FINAL");
    assert_eq!(episodes.trim(), "1", "only the real scanner has an episode");
    // The detector's default budget is 16 MiB: the flood may grow the agent
    // by no more than that. (Its size before the flood is mostly code: the
    // tests run debug builds, about 20 MiB resident with enrollment.)
    assert!(
        peak.saturating_sub(rss_before) <= 16 * 1024,
        "the flood grew the agent from {rss_before} to {peak} KiB"
    );
    assert!(peak <= 40 * 1024, "agent RSS peaked at {peak} KiB");
}

#[test]
fn slow_scans_are_detected_as_one_episode() {
    let mut lab = Lab::new();
    // nmap -T2 waits 0.4 s between probes, -T1 15 s. Run both at once.
    let (t2_host, t2, _) = lab.scanner();
    let (t1_host, t1, _) = lab.scanner();
    let spawn = |host: &Host, timing: &str, ports: &str, name: &str| {
        let mut c = host.command("timeout");
        c.args([
            "300",
            "nmap",
            "-n",
            "-Pn",
            "-sS",
            timing,
            "--max-retries",
            "0",
            ports,
            PC4,
        ]);
        Process::spawn(name, c, lab.stack.dir.path()).expect("nmap")
    };
    let mut slow = spawn(&t2_host, "-T2", "-p1-30", "nmap-t2");
    let mut slower = spawn(&t1_host, "-T1", "-p1-6", "nmap-t1");
    while slow.is_running() || slower.is_running() {
        std::thread::sleep(Duration::from_millis(500));
    }
    for (scanner, ports) in [(&t2, 30), (&t1, 6)] {
        let (types, probed, _, _, _) = lab.episode_with(scanner, PC4, "syn", ports);
        assert!(
            types.contains("syn") && probed >= ports,
            "{scanner}: types={types} ports={probed}"
        );
        let episodes = lab.stack.clickhouse.query_ok(&format!(
            "SELECT uniqExact(episode_id) FROM doorwatch.scan_events FINAL WHERE scanner = {}",
            literal(scanner)
        ));
        assert_eq!(
            episodes.trim(),
            "1",
            "{scanner}: one episode for the whole slow scan"
        );
    }
}

#[test]
fn a_pushed_policy_takes_effect_on_a_live_agent() {
    let mut lab = Lab::new();
    let (campus_scanner, campus_ip, _) = lab.scanner();
    let collector = require::binary("doorwatch-collector");
    let out = run(Command::new(&collector)
        .args(["policy", "set", "--allow", &campus_ip, "--config"])
        .arg(&lab.stack.collector_config));
    assert!(out.contains("stored policy version 1"), "{out}");
    lab.agent
        .wait_for_log("applied policy version=1", Duration::from_secs(15));
    // The agent reports the version it runs in its heartbeats.
    let collector_log = lab.stack.collector.as_mut().expect("collector");
    collector_log.wait_for_log("policy_version=1", Duration::from_secs(10));

    // The campus's own scanner is now ignored; others are still seen.
    run(campus_scanner
        .command("timeout")
        .args(["60", "nmap", "-n", "-Pn", "-sS", "-p1-100", PC4]));
    let other = lab.nmap(false, &["-sS", "-p1-100"]);
    lab.episode(&other, PC4, "syn");
    let ignored = lab.stack.clickhouse.query_ok(&format!(
        "SELECT count() FROM doorwatch.scan_events FINAL WHERE scanner = {}",
        literal(&campus_ip)
    ));
    assert_eq!(ignored.trim(), "0", "allowlisted scanner was reported");

    let shown = run(Command::new(&collector)
        .args(["policy", "show", "--format", "json", "--config"])
        .arg(&lab.stack.collector_config));
    let policy: serde_json::Value = serde_json::from_str(shown.trim()).expect("policy JSON");
    assert_eq!(policy["version"], 1);
    assert_eq!(policy["allowlisted_sources"][0], campus_ip);

    // Heartbeats are stored: the agent shows as online, running version 1.
    let mut health = serde_json::Value::Null;
    for _ in 0..50 {
        let out = run(Command::new(&collector)
            .args(["agents", "health", "--format", "json", "--config"])
            .arg(&lab.stack.collector_config));
        if let Some(line) = out.lines().next() {
            health = serde_json::from_str(line).expect("health JSON");
            if health["policy_version"] == 1 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(health["agent_id"], "pc-1", "{health}");
    assert_eq!(health["health"], "online", "{health}");
    assert_eq!(health["policy_version"], 1, "{health}");
}

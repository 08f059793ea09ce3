//! Outbound traffic end to end: a PC namespace runs a real agent, and real
//! programs on it (curl, nmap, python3) upload, scan, spam and listen
//! towards other namespaces. The collector must store anomalies naming
//! the program, the flow minutes, and the listening-port inventory.
//!
//! Addresses: the PC is 198.18.0.10 (with two more PCs at .11 and .12 to
//! be scanned; .12 also scans the PC), a web and upload server at .50, and a "mail farm" of 24
//! SMTP listeners at .100 to .123. Needs root, curl, nmap, python3 and
//! clickhouse-server; fails (never skips) without them.

use std::process::Command;
use std::time::{Duration, Instant};

use doorwatch_e2e::netns::{Campus, Host};
use doorwatch_e2e::process::{Process, run};
use doorwatch_e2e::require;
use doorwatch_e2e::stack::{self, Stack};

const UPLOAD_BYTES: u64 = 200 << 20;

struct Lab {
    stack: Stack,
    pc: Host,
    others: Vec<Host>,
    server: Host,
    agent: Process,
    agent_config: std::path::PathBuf,
    campus: Campus,
}

/// A python3 program that listens on `addresses`:`port` until killed. With
/// a `greeting`, it sends it on each connection and keeps the session open
/// (a mail server); without, it reads an HTTP request and answers 200.
fn listener_script(addresses: &[String], port: u16, greeting: &str) -> String {
    let list: Vec<String> = addresses.iter().map(|a| format!("'{a}'")).collect();
    format!(
        r#"
import re, selectors, socket
sel = selectors.DefaultSelector()
held = []
for a in [{list}]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, {port})); s.listen(64); sel.register(s, selectors.EVENT_READ)
print('listening', flush=True)
while True:
    for key, _ in sel.select():
        c, _ = key.fileobj.accept()
        greeting = {greeting:?}
        if greeting:
            # Keep the session open, as a mail server waits for HELO.
            c.sendall(greeting.encode()); held.append(c); continue
        c.settimeout(30); head = b''
        while b'\r\n\r\n' not in head:
            d = c.recv(65536)
            if not d: break
            head += d
        head, _, body = head.partition(b'\r\n\r\n')
        m = re.search(rb'content-length: *(\d+)', head, re.I)
        if m:
            left = int(m.group(1)) - len(body)
            while left > 0:
                d = c.recv(min(left, 1 << 20))
                if not d: break
                left -= len(d)
        elif b'chunked' in head.lower():
            while not body.endswith(b'0\r\n\r\n'):
                d = c.recv(1 << 20)
                if not d: break
                body = body[-8:] + d
        c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'); c.close()
"#,
        list = list.join(", "),
    )
}

impl Lab {
    fn new() -> Self {
        require::root();
        for (tool, package) in [("curl", "curl"), ("nmap", "nmap"), ("python3", "python3")] {
            require::tool(tool, package);
        }
        require::tool("clickhouse-server", "clickhouse-server");
        let mut campus = Campus::new();
        let (mut pcs, uplinks) = campus.linked_pcs(3);
        let pc = pcs.remove(0);
        let server = campus.add_host("server", &["198.18.0.50"]);
        let stack = Stack::start(std::net::IpAddr::V4(uplinks[0].root_ip));
        stack::issue_agent(&stack.pki, "pc-0");
        let config = stack::agent_config(
            stack.dir.path(),
            &pc,
            stack.collector_address,
            &stack.pki,
            "pc-0",
            "",
            "[outbound]\ninventory_seconds = 2\n",
        );
        let mut agent = stack::start_agent(stack.dir.path(), &pc, &config, "pc-0");
        agent.wait_for_log("connected to collector", Duration::from_secs(30));
        Self {
            stack,
            pc,
            others: pcs,
            server,
            agent,
            agent_config: config,
            campus,
        }
    }

    fn collector_json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        run(Command::new(require::binary("doorwatch-collector"))
            .args(args)
            .args(["--format", "json", "--config"])
            .arg(&self.stack.collector_config))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
    }

    /// Polls `outbound anomalies` until one satisfies `wanted`.
    fn wait_for_anomaly(
        &self,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for(what, &["outbound", "anomalies"], wanted, 60)
    }

    fn wait_for(
        &self,
        what: &str,
        args: &[&str],
        wanted: impl Fn(&serde_json::Value) -> bool,
        seconds: u64,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let rows = self.collector_json(args);
            if let Some(found) = rows.iter().find(|r| wanted(r)) {
                eprintln!("{what} after {:?}: {found}", start.elapsed());
                return found.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(seconds),
                "no {what} within {seconds} s; got {rows:#?}\nagent log:\n{}",
                self.agent.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Starts `python3 -c script` in `host`, waiting for it to listen.
    fn serve(&self, host: &Host, name: &str, script: &str) -> Process {
        let mut command = host.command("python3");
        command.args(["-u", "-c", script]);
        let mut process =
            Process::spawn(name, command, self.stack.dir.path()).expect("start a listener");
        process.wait_for_log("listening", Duration::from_secs(10));
        process
    }
}

#[test]
fn uploads_scans_spam_and_open_ports_are_reported_with_their_program() {
    let mut lab = Lab::new();
    let server_ip = lab.server.ipv4().to_string();
    // The guards below live to the end of the test (their servers and
    // agents keep running), and drop in reverse order, on panic too.
    let _web = browsing_raises_nothing(&lab, &server_ip);
    let _proxy = a_proxy_port_shows_in_the_inventory_with_its_process(&lab);
    a_scan_that_finds_the_proxy_port_is_a_high_severity_exposure(&lab);
    let _sink = an_upload_is_a_volume_anomaly_naming_curl(&lab, &server_ip);
    let (_smtp, bot) = a_spam_bot_is_an_smtp_fan_out_naming_python3(&mut lab);
    let _second_agent = the_bot_on_a_second_pc_makes_an_outbound_campaign(&lab, &bot);
    a_slow_scan_from_the_pc_is_an_outbound_scan_naming_nmap(&lab);
    the_flow_minutes_name_curl_as_the_top_talker(&lab, &server_ip);
    let _slow = top_names_a_paced_uploader_with_its_rate(&lab, &server_ip);
    status_tells_in_plain_words_what_the_agent_saw(&mut lab);
    the_upload_baseline_survives_a_restart(&mut lab);
}

/// Step 1: browsing-like traffic raises nothing: many small requests to a
/// web server on the server host (port 8081), with answers. Returns the
/// web server.
fn browsing_raises_nothing(lab: &Lab, server_ip: &str) -> Process {
    let web = lab.serve(
        &lab.server,
        "web",
        &listener_script(&[server_ip.to_owned()], 8081, ""),
    );
    run(lab.pc.command("bash").args([
        "-c",
        &format!(
            "for i in $(seq 1 40); do curl -s -o /dev/null --max-time 5 -d 'q=$i' http://{server_ip}:8081/search || exit 1; done"
        ),
    ]));
    std::thread::sleep(Duration::from_secs(4));
    let anomalies = lab.collector_json(&["outbound", "anomalies"]);
    assert!(anomalies.is_empty(), "browsing raised {anomalies:#?}");
    web
}

/// Step 2: a web server on 8080 on the PC shows in the inventory with its
/// process, as a proxy-style port. Returns the web server.
fn a_proxy_port_shows_in_the_inventory_with_its_process(lab: &Lab) -> Process {
    let mut proxy = lab.pc.command("python3");
    proxy.args(["-m", "http.server", "8080"]);
    let proxy = Process::spawn("http-server", proxy, lab.stack.dir.path()).expect("http.server");
    let listening = lab.wait_for(
        "port 8080 in the inventory",
        &["outbound", "listening"],
        |r| r["agent_id"] == "pc-0" && r["port"] == 8080,
        30,
    );
    assert!(
        listening["process"]
            .as_str()
            .is_some_and(|p| p.starts_with("python3")),
        "{listening}"
    );
    assert!(
        listening["risk"]
            .as_str()
            .is_some_and(|r| r.contains("proxy")),
        "{listening}"
    );
    proxy
}

/// Step 2, continued: a scan from another PC that finds 8080 open has
/// reached a risky exposure: the episode is high severity and says so.
fn a_scan_that_finds_the_proxy_port_is_a_high_severity_exposure(lab: &Lab) {
    let scanner = &lab.others[1];
    let pc_ip = lab.pc.ipv4().to_string();
    let out = run(scanner
        .command("timeout")
        .args(["60", "nmap", "-n", "-Pn", "-sS", "--max-retries", "1"])
        .args(["--max-rate", "1000", "-p", "8050-8100", &pc_ip]));
    assert!(out.contains("8080/tcp open"), "{out}");
    let exposed = lab.wait_for(
        "a scan event naming the exposure",
        &["events", "--since", "5m"],
        |e| e["kind"] == "scan" && e["exposed_ports"] == serde_json::json!([8080]),
        30,
    );
    assert_eq!(exposed["severity"], "high", "{exposed}");
    assert_eq!(exposed["scanner"], scanner.ipv4().to_string().as_str());
    assert!(
        exposed["explanation"].as_str().is_some_and(
            |t| t.contains("Port 8080, opened by python3") && t.contains("risky exposure")
        ),
        "{exposed}"
    );
}

/// Step 3: curl uploads 200 MiB to a sink on the server (port 8000): a
/// volume anomaly naming curl, with the bytes within 5 %. Returns the sink.
///
/// The upload is held to 50 MB/s, four seconds as on a campus link: over
/// veth it took under a second, and a program that sends and exits
/// between two reads of the socket owners (every 500 ms at most) is
/// reported as "its process could not be found" (seen once in CI).
fn an_upload_is_a_volume_anomaly_naming_curl(lab: &Lab, server_ip: &str) -> Process {
    let sink = lab.serve(
        &lab.server,
        "sink",
        &listener_script(&[server_ip.to_owned()], 8000, ""),
    );
    run(lab.pc.command("bash").args([
        "-c",
        &format!(
            "head -c {UPLOAD_BYTES} /dev/zero | curl -sS -o /dev/null --max-time 60 --limit-rate 50M -H 'Expect:' -T - http://{server_ip}:8000/upload"
        ),
    ]));
    let upload = lab.wait_for_anomaly("the upload anomaly, closed", |a| {
        a["kind"] == "upload_volume" && a["state"] == "closed"
    });
    assert_eq!(upload["process"], "curl", "{upload}");
    assert_eq!(upload["remote"], server_ip);
    assert_eq!(upload["remote_port"], 8000);
    let sent = upload["bytes_out"].as_u64().expect("bytes_out");
    let error = (sent as f64 - UPLOAD_BYTES as f64).abs() / UPLOAD_BYTES as f64;
    eprintln!(
        "upload counted {sent} bytes of {UPLOAD_BYTES}: {:.2} % off",
        error * 100.0
    );
    assert!(error <= 0.05, "{sent} bytes is over 5 % off {UPLOAD_BYTES}");
    assert!(
        upload["explanation"]
            .as_str()
            .is_some_and(|t| t.starts_with("curl (pid ") && t.contains(server_ip)),
        "{upload}"
    );
    sink
}

/// Step 4: a spam bot: python3 on the PC holds SMTP sessions with 24 mail
/// servers (a "mail farm" host at .100 to .123) at once for two seconds, as
/// a bot sending mail does: an SMTP fan-out naming python3. Returns the
/// mail farm's listener and the bot's script.
fn a_spam_bot_is_an_smtp_fan_out_naming_python3(lab: &mut Lab) -> (Process, String) {
    let farm: Vec<String> = (100..124).map(|i| format!("198.18.0.{i}")).collect();
    let farm_refs: Vec<&str> = farm.iter().map(String::as_str).collect();
    let mail = lab.campus.add_host("mail", &farm_refs);
    let smtp = lab.serve(
        &mail,
        "smtp",
        &listener_script(&farm, 25, "220 mx ESMTP\r\n"),
    );
    let list: Vec<String> = farm.iter().map(|a| format!("'{a}'")).collect();
    let bot = format!(
        "import socket, time\nsessions = [socket.create_connection((a, 25), timeout=5) for a in [{}]]\nfor s in sessions: s.recv(100); s.sendall(b'HELO bot\\r\\n')\ntime.sleep(2)\nfor s in sessions: s.close()",
        list.join(", ")
    );
    run(lab.pc.command("python3").args(["-c", &bot]));
    let spam = lab.wait_for_anomaly("SMTP fan-out", |a| a["kind"] == "smtp_fanout");
    assert!(spam["hosts"].as_u64() >= Some(20), "{spam}");
    assert_eq!(spam["process"], "python3", "{spam}");
    (smtp, bot)
}

/// Step 4, continued: a second PC with an agent (pc-1) runs the same `bot`:
/// the collector's correlator makes it an outbound campaign across both
/// PCs. Returns pc-1's agent.
fn the_bot_on_a_second_pc_makes_an_outbound_campaign(lab: &Lab, bot: &str) -> Process {
    let second = &lab.others[0];
    let mut second_agent = lab.stack.agent(second, "pc-1", "");
    second_agent.wait_for_log("connected to collector", Duration::from_secs(30));
    run(second.command("python3").args(["-c", bot]));
    let campaign = lab.wait_for(
        "an outbound campaign over both PCs",
        &["campaigns", "list"],
        |c| c["kind"] == "outbound" && c["pcs"] == 2,
        30,
    );
    assert!(
        campaign["explanation"]
            .as_str()
            .is_some_and(|t| t.contains("2 campus PCs") && t.contains("spam")),
        "{campaign}"
    );
    assert_ne!(campaign["severity"], "low", "{campaign}");
    second_agent
}

/// Step 5: nmap from the PC against the two other PCs, at 100 probes a
/// second as a slow scanner would (a raw-socket sender is named only while
/// it runs): an outbound scan naming nmap.
fn a_slow_scan_from_the_pc_is_an_outbound_scan_naming_nmap(lab: &Lab) {
    let targets: Vec<String> = lab.others.iter().map(|h| h.ipv4().to_string()).collect();
    lab.pc
        .nmap(&["-sS", "--max-rate", "100", "-p", "1-200"], &targets);
    let scan = lab.wait_for_anomaly("the outbound scan", |a| {
        a["kind"] == "scan" && targets.iter().any(|t| a["remote"] == t.as_str())
    });
    assert_eq!(scan["process"], "nmap", "{scan}");
    assert!(scan["ports"].as_u64() >= Some(4), "{scan}");
}

/// Step 6: the flow minutes name curl as pc-0's top talker, with the
/// upload, and the sink as the top destination.
fn the_flow_minutes_name_curl_as_the_top_talker(lab: &Lab, server_ip: &str) {
    let talker = lab.wait_for(
        "curl among pc-0's top talkers",
        &["outbound", "talkers", "--agent", "pc-0"],
        |r| r["process"] == "curl",
        90,
    );
    let talked = talker["bytes_out"].as_u64().expect("bytes_out");
    assert!(
        talked as f64 >= UPLOAD_BYTES as f64 * 0.95,
        "curl sent {talked} bytes in its flow minutes"
    );
    let destinations = lab.collector_json(&["outbound", "destinations"]);
    assert_eq!(
        destinations.first().map(|d| d["destination"].clone()),
        Some(serde_json::json!(format!("{server_ip}:8000"))),
        "{destinations:#?}"
    );
}

/// Step 7: the help-desk view on the PC: `top --once` names the program
/// that uploads at a steady 2 MB/s to the sink, with its rate. Returns the
/// paced uploader, still sending.
fn top_names_a_paced_uploader_with_its_rate(lab: &Lab, server_ip: &str) -> Process {
    let paced = format!(
        "import socket, time\n\
         s = socket.create_connection(('{server_ip}', 8000))\n\
         s.sendall(b'POST /slow HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 24000000\\r\\n\\r\\n')\n\
         chunk, sent, t0 = bytes(20000), 0, time.time()\n\
         while sent < 24000000:\n\
         \x20   s.sendall(chunk); sent += len(chunk)\n\
         \x20   time.sleep(max(0, t0 + sent / 2000000 - time.time()))\n"
    );
    let mut slow = lab.pc.command("python3");
    slow.args(["-c", &paced]);
    let slow = Process::spawn("paced-upload", slow, lab.stack.dir.path()).expect("paced upload");
    let top = run(lab
        .pc
        .command(require::binary("doorwatch-agent"))
        .args([
            "top",
            "--once",
            "--seconds",
            "7",
            "--format",
            "json",
            "--config",
        ])
        .arg(&lab.agent_config));
    let rates: Vec<serde_json::Value> = serde_json::from_str(top.trim()).expect("top prints JSON");
    let uploader = rates
        .iter()
        .find(|r| r["process"] == "python3" && r["top_destination"] == format!("{server_ip}:8000"))
        .unwrap_or_else(|| panic!("the paced uploader in top: {rates:#?}"));
    let rate = uploader["sent_per_sec"].as_u64().expect("rate");
    eprintln!("top: the paced uploader sends {rate} bytes/s (paced at 2,000,000)");
    assert!(
        (1_700_000..=2_300_000).contains(&rate),
        "rate {rate} is not near 2 MB/s: {uploader}"
    );
    slow
}

/// Step 7, continued: six seconds later, `status` on the PC tells in plain
/// words what the agent saw, and the agent still runs.
fn status_tells_in_plain_words_what_the_agent_saw(lab: &mut Lab) {
    std::thread::sleep(Duration::from_secs(6));
    let status = run(lab
        .pc
        .command(require::binary("doorwatch-agent"))
        .args(["status", "--config"])
        .arg(&lab.agent_config));
    eprintln!("{status}");
    for words in [
        "is watching eth0",
        "curl (pid",
        "python3 opened port 8080",
        "connected to the mail port (25) of 24",
        "nmap (pid",
    ] {
        assert!(status.contains(words), "status says {words:?}:\n{status}");
    }
    assert!(lab.agent.is_running(), "{}", lab.agent.log());
}

/// Step 8: the upload baseline survives a restart: the agent saves it when
/// it stops (and every minute), with this hour's bytes in it, and the next
/// run starts from it.
fn the_upload_baseline_survives_a_restart(lab: &mut Lab) {
    assert!(
        lab.agent.stop(Duration::from_secs(15)),
        "the agent stops on SIGTERM"
    );
    let saved = lab.stack.dir.path().join("pc-0-spool.baseline.json");
    let baseline: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&saved).unwrap_or_else(|e| panic!("{}: {e}", saved.display())),
    )
    .expect("the baseline file is JSON");
    let counted = baseline["sent_this_hour"].as_u64().unwrap_or(0)
        + baseline["per_hour_of_day"]
            .as_array()
            .map_or(0, |h| h.iter().filter_map(serde_json::Value::as_u64).sum());
    assert!(
        counted >= UPLOAD_BYTES,
        "the upload is in the saved baseline: {baseline}"
    );
    let mut restarted = stack::start_agent(
        lab.stack.dir.path(),
        &lab.pc,
        &lab.agent_config,
        "pc-0-again",
    );
    restarted.wait_for_log("restored the upload baseline", Duration::from_secs(30));
    restarted.wait_for_log("connected to collector", Duration::from_secs(30));
}

//! Campus-wide campaigns end to end: five PC namespaces each run a real
//! agent; real nmap scans from outside and inside the campus reach the
//! real collector and ClickHouse, and the collector's correlator turns
//! them into campaigns.
//!
//! The campus is 198.18.0.0/28 (the PCs, .10 to .14); scanners outside it
//! sit on the same LAN at .100 and up. Needs root, nmap and
//! clickhouse-server; fails (never skips) without them.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use doorwatch_e2e::netns::{Campus, Host};
use doorwatch_e2e::process::{Process, run};
use doorwatch_e2e::receivers::{Received, mentioning, syslog_listener, webhook_receiver};
use doorwatch_e2e::require;
use doorwatch_e2e::stack::Stack;

const PCS: usize = 5;
const ALLOWLISTED: &str = "198.18.0.101";
/// An outside host whose address an attacker forges.
const INNOCENT: &str = "198.18.0.130";
/// An outside host on the feed's never-list (a resolver the campus uses).
const RESOLVER: &str = "198.18.0.132";

struct Lab {
    stack: Stack,
    pcs: Vec<Host>,
    agents: Vec<Process>,
    campus: Campus,
    webhook: Received,
    syslog: Received,
    feed_port: u16,
    /// aiosmtpd on loopback (STARTTLS required); mail lands in `maildir`.
    _smtp: Process,
    /// Another collector sharing the database, also correlating and
    /// alerting.
    _second: Process,
    maildir: std::path::PathBuf,
}

/// The messages in a Maildir's `new/` folder.
fn mails(maildir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(maildir.join("new"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The feed's token in these tests.
const FEED_TOKEN: &str = "feed-token-0123456789abcdef";

/// `GET path` from the feed on loopback over TLS, as a firewall script
/// would fetch it: the server must present the collector's certificate
/// for its name, issued by the campus CA in `pki`. Returns the status
/// line and body.
fn feed_get(pki: &std::path::Path, port: u16, path: &str, token: Option<&str>) -> (String, String) {
    let roots = doorwatch_tls::load_roots(&pki.join("ca.pem")).expect("campus CA");
    let config = doorwatch_tls::outside_client_config(roots, &[doorwatch_tls::ALPN_HTTP1])
        .expect("TLS client config");
    let name = rustls::pki_types::ServerName::try_from(doorwatch_e2e::stack::COLLECTOR_NAME)
        .expect("collector name");
    let tls = rustls::ClientConnection::new(config, name).expect("TLS client");
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to feed");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut stream = rustls::StreamOwned::new(tls, tcp);
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(stream, "GET {path} HTTP/1.1\r\nHost: feed\r\n{auth}\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert_eq!(
        stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3),
        "the feed speaks TLS 1.3 only"
    );
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

impl Lab {
    fn new() -> Self {
        require::root();
        require::tool("nmap", "nmap");
        require::tool("clickhouse-server", "clickhouse-server");
        let mut campus = Campus::new();
        let (pcs, uplinks) = campus.linked_pcs(PCS);
        let collector_ip = uplinks[0].root_ip;
        let (webhook_port, webhook) = webhook_receiver();
        let (syslog_port, syslog) = syslog_listener();
        let feed_port = doorwatch_e2e::process::free_port();
        let smtp_port = doorwatch_e2e::process::free_port();
        let smtp = std::cell::RefCell::new(None);
        let shared = std::cell::RefCell::new(String::new());
        let stack = Stack::start_with(IpAddr::V4(collector_ip), |pki| {
            std::fs::write(pki.join("feed.token"), FEED_TOKEN).expect("write the feed token");
            // A real SMTP server that insists on STARTTLS, with the test
            // collector certificate.
            let dir = pki.parent().expect("stack folder");
            let maildir = dir.join("maildir");
            let mut command = Command::new("/usr/bin/python3");
            command
                .args([
                    "-m",
                    "aiosmtpd",
                    "-n",
                    "-l",
                    &format!("127.0.0.1:{smtp_port}"),
                ])
                .arg("--tlscert")
                .arg(pki.join("collector.pem"))
                .arg("--tlskey")
                .arg(pki.join("collector.key"))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir);
            *smtp.borrow_mut() = Some((
                Process::spawn("aiosmtpd", command, dir).expect("start aiosmtpd"),
                maildir,
            ));
            let common = format!(
                "[correlation]\ninterval_seconds = 1\ncampus_networks = [\"198.18.0.0/28\"]\nallowlist = [\"{ALLOWLISTED}\"]\n\
                 [alerts]\nwebhook_url = \"http://127.0.0.1:{webhook_port}/hook\"\nsyslog = \"udp://127.0.0.1:{syslog_port}\"\n\
                 console_url = \"https://doorwatch.campus.test\"\n\
                 email_server = \"127.0.0.1:{smtp_port}\"\nemail_tls_name = \"{name}\"\nemail_ca_file = \"{ca}\"\n\
                 email_from = \"doorwatch@campus.test\"\nemail_to = [\"soc@campus.test\"]\n",
                name = doorwatch_e2e::stack::COLLECTOR_NAME,
                ca = pki.join("ca.pem").display(),
            );
            *shared.borrow_mut() = common.clone();
            format!(
                "{common}[feed]\nlisten = \"127.0.0.1:{feed_port}\"\ntoken_file = \"{token}\"\nnever_list = [\"{RESOLVER}\"]\n",
                token = pki.join("feed.token").display(),
            )
        });
        // A second collector on the same database, correlating and
        // alerting too: each alert must still arrive once.
        let second_dir = stack.dir.path().join("second");
        std::fs::create_dir_all(&second_dir).expect("second collector folder");
        let second_config = doorwatch_e2e::stack::collector_config(
            &second_dir,
            std::net::SocketAddr::new(
                IpAddr::V4(collector_ip),
                doorwatch_e2e::process::free_port(),
            ),
            &stack.pki,
            &stack.clickhouse,
            "doorwatch",
            &shared.into_inner(),
        );
        let second =
            doorwatch_e2e::stack::start_collector_named(&second_dir, &second_config, "collector-b");
        let (smtp_process, maildir) = smtp.into_inner().expect("aiosmtpd started");
        let mut agents: Vec<Process> = pcs
            .iter()
            .enumerate()
            .map(|(i, pc)| stack.agent(pc, &format!("pc-{i}"), ""))
            .collect();
        for agent in &mut agents {
            agent.wait_for_log("connected to collector", Duration::from_secs(30));
        }
        Self {
            stack,
            pcs,
            agents,
            campus,
            webhook,
            syslog,
            feed_port,
            _smtp: smtp_process,
            _second: second,
            maildir,
        }
    }

    /// nmap SYN scan of `ports` on `targets` from `host`, bounded in time.
    fn nmap(host: &Host, ports: &str, targets: &[String]) {
        host.nmap(&["-sS", "-p", ports], targets);
    }

    fn targets(&self, skip: usize) -> Vec<String> {
        self.pcs
            .iter()
            .skip(skip)
            .map(|pc| pc.ipv4().to_string())
            .collect()
    }

    fn collector(&self, args: &[&str]) -> String {
        run(Command::new(require::binary("doorwatch-collector"))
            .args(args)
            .arg("--config")
            .arg(&self.stack.collector_config))
    }

    fn campaigns(&self) -> Vec<serde_json::Value> {
        self.collector(&["campaigns", "list", "--format", "json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    /// Waits until a campaign of `kind` with `key` covers at least `pcs`
    /// PCs; returns it and how long that took.
    fn wait_for(&self, kind: &str, key: &str, pcs: u64) -> (serde_json::Value, Duration) {
        let start = Instant::now();
        loop {
            let all = self.campaigns();
            if let Some(found) = all
                .iter()
                .find(|c| c["kind"] == kind && c["key"] == key && c["pcs"].as_u64() >= Some(pcs))
            {
                return (found.clone(), start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no {kind} campaign {key} over {pcs} PCs within 30 s; campaigns: {all:#?}\ncollector log:\n{}",
                self.stack
                    .collector
                    .as_ref()
                    .map(Process::log)
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn members(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.collector(&["campaigns", "show", id, "--format", "json"]))
            .expect("campaigns show prints JSON")
    }
}

#[test]
fn sweeps_distributed_probes_and_internal_scans_become_campaigns() {
    let mut lab = Lab::new();
    let agent_ids: Vec<String> = (0..PCS).map(|i| format!("pc-{i}")).collect();

    // 1. One outside source sweeps every PC: exactly one sweep campaign
    //    listing every PC.
    let scanner = lab.campus.add_host("scanner", &["198.18.0.100"]);
    Lab::nmap(&scanner, "1-100", &lab.targets(0));
    let (sweep, waited) = lab.wait_for("sweep", "198.18.0.0/24", PCS as u64);
    eprintln!("sweep campaign {waited:?} after nmap finished: {sweep}");
    assert_eq!(sweep["state"], "open");
    assert_eq!(sweep["sources"], 1);
    let members = lab.members(sweep["campaign_id"].as_str().expect("id"));
    let mut pcs: Vec<String> = serde_json::from_value(members["pcs"].clone()).expect("pcs");
    pcs.sort();
    assert_eq!(pcs, agent_ids, "every PC is listed");
    assert_eq!(members["sources"], serde_json::json!(["198.18.0.100"]));
    assert!(
        sweep["explanation"]
            .as_str()
            .is_some_and(|t| t.contains("swept 5 campus PCs")),
        "{sweep}"
    );

    // Exactly one alert per channel for it, with the plain words and a link.
    let id = sweep["campaign_id"].as_str().expect("id").to_owned();
    let start = Instant::now();
    let mailed = |lab: &Lab| {
        mails(&lab.maildir)
            .iter()
            .filter(|m| m.contains(&id))
            .count()
    };
    while (mentioning(&lab.webhook, &id).is_empty()
        || mentioning(&lab.syslog, &id).is_empty()
        || mailed(&lab) == 0)
        && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("alerts {:?} after the campaign was seen", start.elapsed());
    let hooks = mentioning(&lab.webhook, &id);
    assert_eq!(hooks.len(), 1, "one webhook alert: {hooks:?}");
    let hook: serde_json::Value = serde_json::from_str(&hooks[0]).expect("JSON body");
    assert_eq!(hook["event"], "campaign_opened");
    // The alert goes out when the campaign opens: how many of the five
    // PCs had reported by then depends on timing (3 open a sweep).
    let swept = |t: &str| (3..=PCS).any(|n| t.contains(&format!("swept {n} campus PCs")));
    assert!(
        hook["text"]
            .as_str()
            .is_some_and(|t| swept(t)
                && t.contains(&format!("https://doorwatch.campus.test/campaigns/{id}"))),
        "{hook}"
    );
    let lines = mentioning(&lab.syslog, &id);
    assert_eq!(lines.len(), 1, "one syslog alert: {lines:?}");
    assert_eq!(mailed(&lab), 1, "one email through STARTTLS");
    let mail = mails(&lab.maildir)
        .into_iter()
        .find(|m| m.contains(&id))
        .expect("the mail");
    assert!(
        mail.contains("Subject: [doorwatch] New sweep campaign 198.18.0.0/24"),
        "{mail}"
    );
    assert!(
        lines[0].starts_with('<') && lines[0].contains("CEF:0|doorwatch|"),
        "{}",
        lines[0]
    );

    // 2. An allowlisted scanner makes no campaign member, but its events
    //    are stored.
    let allowlisted = lab.campus.add_host("vulnscan", &[ALLOWLISTED]);
    Lab::nmap(&allowlisted, "1-100", &lab.targets(0));
    let stored = lab.stack.clickhouse.poll(
        &format!(
            "SELECT uniqExact(agent_id) FROM doorwatch.scan_events WHERE scanner = {}",
            doorwatch_store::ip::sql_literal(ALLOWLISTED.parse().expect("ip"))
        ),
        Duration::from_secs(20),
        |r| r.trim() == PCS.to_string(),
    );
    assert_eq!(stored.trim(), PCS.to_string(), "its events are stored");
    std::thread::sleep(Duration::from_secs(3));
    let members = lab.members(sweep["campaign_id"].as_str().expect("id"));
    assert_eq!(
        members["sources"],
        serde_json::json!(["198.18.0.100"]),
        "the allowlisted scanner joined no campaign"
    );

    // 3. Three more outside sources each try ONE port, 3389, once on every
    //    PC. No PC can call a single try a scan; each reports it as a
    //    knock, and the campus-wide view makes it a distributed campaign.
    for i in 0..3 {
        let bot = lab
            .campus
            .add_host(&format!("bot{i}"), &[&format!("198.18.0.{}", 110 + i)]);
        Lab::nmap(&bot, "3389", &lab.targets(0));
    }
    let (distributed, waited) = lab.wait_for("distributed", "3389", PCS as u64);
    eprintln!("distributed campaign {waited:?} after the last probe: {distributed}");
    assert_eq!(distributed["sources"], 3, "{distributed}");
    let members = lab.members(distributed["campaign_id"].as_str().expect("id"));
    let mut bots: Vec<String> =
        serde_json::from_value(members["sources"].clone()).expect("sources");
    bots.sort();
    assert_eq!(bots, ["198.18.0.110", "198.18.0.111", "198.18.0.112"]);
    let no_scans = lab
        .stack
        .clickhouse
        .query_ok("SELECT count() FROM doorwatch.scan_events WHERE port_sample = [3389]");
    assert_eq!(no_scans.trim(), "0", "single tries are knocks, not scans");
    let knocks = lab.stack.clickhouse.poll(
        "SELECT uniqExact(source, agent_id) FROM doorwatch.knock_events WHERE port = 3389",
        Duration::from_secs(20),
        |r| r.trim() == (3 * PCS).to_string(),
    );
    assert_eq!(
        knocks.trim(),
        (3 * PCS).to_string(),
        "one knock per bot and PC"
    );

    // 4. A campus PC scans the other PCs: an internal campaign.
    Lab::nmap(&lab.pcs[0], "1-100", &lab.targets(1));
    let (internal, waited) = lab.wait_for("internal", "198.18.0.10", (PCS - 1) as u64);
    eprintln!("internal campaign {waited:?} after nmap finished: {internal}");
    assert!(
        internal["severity"] != "low",
        "internal scanning starts at medium: {internal}"
    );

    // The blocklist feed lists the outside scanners, never the allowlisted
    // one or a campus address, and only with the token.
    let (status, body) = feed_get(
        &lab.stack.pki,
        lab.feed_port,
        "/blocklist.txt",
        Some(FEED_TOKEN),
    );
    assert!(status.contains("200"), "{status}");
    let listed: Vec<&str> = body.lines().collect();
    for scanner in [
        "198.18.0.100",
        "198.18.0.110",
        "198.18.0.111",
        "198.18.0.112",
    ] {
        assert!(listed.contains(&scanner), "{scanner} listed: {listed:?}");
    }
    assert!(
        !listed.contains(&ALLOWLISTED),
        "allowlisted never listed: {listed:?}"
    );
    assert!(
        !listed.contains(&"198.18.0.10"),
        "campus never listed: {listed:?}"
    );
    let (status, body) = feed_get(
        &lab.stack.pki,
        lab.feed_port,
        "/blocklist.json",
        Some(FEED_TOKEN),
    );
    assert!(status.contains("200"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON feed");
    assert_eq!(json["entries"].as_array().map(Vec::len), Some(listed.len()));
    let (status, _) = feed_get(&lab.stack.pki, lab.feed_port, "/blocklist.txt", None);
    assert!(status.contains("401"), "no token, no feed: {status}");
    let (status, _) = feed_get(
        &lab.stack.pki,
        lab.feed_port,
        "/blocklist.txt",
        Some("wrong-token-0000000000"),
    );
    assert!(status.contains("401"), "wrong token, no feed: {status}");

    // A restarted collector sends no alert twice.
    std::thread::sleep(Duration::from_secs(3));
    let before = (
        lab.webhook.lock().expect("lock").len(),
        lab.syslog.lock().expect("lock").len(),
    );
    lab.stack.stop_collector();
    lab.stack.restart_collector("collector-2");
    std::thread::sleep(Duration::from_secs(5));
    let after = (
        lab.webhook.lock().expect("lock").len(),
        lab.syslog.lock().expect("lock").len(),
    );
    assert_eq!(before, after, "no alert repeated after the restart");
    assert_eq!(mentioning(&lab.webhook, &id).len(), 1);
    let recorded = lab.stack.clickhouse.query_ok(&format!(
        "SELECT count() FROM doorwatch.alerts WHERE campaign_id = toUUID('{id}') AND status = 'sent'"
    ));
    assert_eq!(
        recorded.trim(),
        "3",
        "all three alerts recorded in ClickHouse"
    );
    assert_eq!(
        mails(&lab.maildir)
            .iter()
            .filter(|m| m.contains(&id))
            .count(),
        1
    );

    // One campaign per kind and key, and the sweep is still one campaign.
    let all = lab.campaigns();
    let sweeps = all.iter().filter(|c| c["kind"] == "sweep").count();
    assert_eq!(sweeps, 1, "one sweep campaign: {all:#?}");
    // Either collector may have opened a campaign first, and the one
    // holding the alerting lease sent the alerts: read both logs.
    let log: String = ["collector.log", "collector-2.log", "second/collector-b.log"]
        .iter()
        .filter_map(|name| std::fs::read_to_string(lab.stack.dir.path().join(name)).ok())
        .collect();
    assert!(
        log.contains("campaign opened") && log.contains("alert sent"),
        "the collectors log campaigns and alerts"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("alert sent") && l.contains(&id))
            .count(),
        3,
        "three alerts for the sweep, one per channel, across both collectors"
    );
    for agent in &mut lab.agents {
        assert!(agent.is_running(), "agents keep running");
    }

    forged_sources_are_never_listed_as_proven(&mut lab);
}

/// The feed's listing policy against a forger: SYNs with a forged source
/// list their victim only as unverified, a never-listed address is never
/// listed, and a scanner that completed a handshake is listed as proven.
fn forged_sources_are_never_listed_as_proven(lab: &mut Lab) {
    require::tool("hping3", "hping3");
    let innocent = lab.campus.add_host("innocent", &[INNOCENT]);
    let resolver = lab.campus.add_host("resolver", &[RESOLVER]);
    let forger = lab.campus.add_host("forger", &["198.18.0.131"]);
    // One PC serves the web, so a connect() scan completes a handshake.
    let mut web = lab.pcs[0].command("python3");
    web.args(["-m", "http.server", "80", "--bind", "0.0.0.0"]);
    let _web = Process::spawn("web", web, lab.stack.dir.path()).expect("web server");
    std::thread::sleep(Duration::from_secs(1));

    // Bounded: 40 SYNs per PC and forged address, 5 ms apart.
    for victim in [INNOCENT, RESOLVER] {
        for target in lab.targets(0) {
            // hping3 exits 1 when nothing answers, as the forged victim's
            // replies never reach the forger; a timeout (124) is a failure.
            let status = forger
                .command("timeout")
                .args([
                    "20", "hping3", "-q", "-S", "-a", victim, "-p", "++1000", "-i", "u5000", "-c",
                    "40", &target,
                ])
                .status()
                .expect("run hping3");
            assert!(matches!(status.code(), Some(0 | 1)), "hping3: {status}");
        }
    }
    let connect = lab.campus.add_host("connector", &["198.18.0.120"]);
    let out = connect.nmap(&["-sT", "-p", "75-85"], &lab.targets(0));
    assert!(
        out.contains("80/tcp open"),
        "the web server is open:\n{out}"
    );

    let entries = |query: &str| -> serde_json::Value {
        let (status, body) = feed_get(
            &lab.stack.pki,
            lab.feed_port,
            &format!("/blocklist.json{query}"),
            Some(FEED_TOKEN),
        );
        assert!(status.contains("200"), "{status}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON feed");
        json["entries"].clone()
    };
    let find = |list: &serde_json::Value, address: &str| {
        list.as_array()
            .and_then(|l| l.iter().find(|e| e["address"] == address).cloned())
    };
    let start = Instant::now();
    while (find(&entries("?evidence=handshake"), "198.18.0.120").is_none()
        || find(&entries(""), INNOCENT).is_none())
        && start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(250));
    }
    let all = entries("");
    let proven = entries("?evidence=handshake");
    eprintln!("feed {:?} after the scans: {all:#}", start.elapsed());

    let forged = find(&all, INNOCENT).expect("the forged address is listed, unverified");
    assert_eq!(forged["evidence"], "unverified", "{forged}");
    assert!(
        forged["why"]
            .as_str()
            .is_some_and(|w| w.contains("a sweep of") && w.contains("forged source address")),
        "{forged}"
    );
    assert!(find(&proven, INNOCENT).is_none(), "not proven: {proven}");
    assert!(find(&all, RESOLVER).is_none(), "never-listed: {all}");
    let real = find(&proven, "198.18.0.120").expect("the connect() scanner is proven");
    assert_eq!(real["evidence"], "handshake", "{real}");
    assert!(
        real["why"]
            .as_str()
            .is_some_and(|w| w.contains("completed a TCP handshake")),
        "{real}"
    );
    let syn_scanner = find(&all, "198.18.0.100").expect("the SYN scanner is listed");
    assert_eq!(
        syn_scanner["evidence"], "unverified",
        "nmap -sS never completes"
    );
    assert!(
        proven
            .as_array()
            .is_some_and(|l| l.iter().all(|e| e["evidence"] == "handshake")),
        "{proven}"
    );
    let (status, body) = feed_get(
        &lab.stack.pki,
        lab.feed_port,
        "/blocklist.txt?evidence=handshake",
        Some(FEED_TOKEN),
    );
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        body.lines().collect::<Vec<_>>(),
        proven
            .as_array()
            .map(|l| l
                .iter()
                .filter_map(|e| e["address"].as_str())
                .collect::<Vec<_>>())
            .unwrap_or_default(),
        "the text list is the same"
    );
    let (status, body) = feed_get(
        &lab.stack.pki,
        lab.feed_port,
        "/blocklist.txt?evidence=handshak",
        Some(FEED_TOKEN),
    );
    assert!(
        status.contains("400") && body.contains("evidence"),
        "{status}: {body}"
    );
    drop((innocent, resolver));
}

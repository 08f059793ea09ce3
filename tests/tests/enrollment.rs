//! Enrollment, renewal and revocation end to end: real collector and agent
//! processes, real TLS, a real ClickHouse. Agents run in PC namespaces and
//! reach the collector over an uplink to the root namespace.
//!
//! Each case ends with the exact outcome and checks the log line on both
//! sides. Needs root, faketime and clickhouse-server; fails (never skips)
//! without them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use doorwatch_agent::tls::ClientTls;
use doorwatch_e2e::netns::{Campus, Host, Uplink};
use doorwatch_e2e::process::{Process, free_port, run};
use doorwatch_e2e::receivers::{Received, mentioning, syslog_listener, webhook_receiver};
use doorwatch_e2e::require;
use doorwatch_e2e::stack::{self, COLLECTOR_NAME, Stack};
use doorwatch_proto::v1::enrollment_client::EnrollmentClient;
use doorwatch_proto::v1::{self, AgentMessage, EnrollRequest, RenewRequest, agent_message};
use rustls::pki_types::ServerName;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

/// A campus of `pcs` PC namespaces, each linked to the root namespace, and
/// a stack whose collector listens on the first uplink and enrolls agents
/// with certificates living `lifetime`.
struct Setup {
    stack: Stack,
    pcs: Vec<Host>,
    /// The uplink of each PC (`host_ip` is the address the collector sees).
    uplinks: Vec<Uplink>,
    _campus: Campus,
}

fn setup(pcs: usize, lifetime: &str) -> Setup {
    let lifetime = lifetime.to_owned();
    setup_with(pcs, move |pki| stack::enrollment_table(pki, &lifetime))
}

/// [`setup`] with the collector's further tables made by `extra` from the
/// PKI folder.
fn setup_with(pcs: usize, extra: impl FnOnce(&Path) -> String) -> Setup {
    require::root();
    require::tool("clickhouse-server", "clickhouse-server");
    let mut campus = Campus::new();
    let (hosts, uplinks) = campus.linked_pcs(pcs);
    let collector_ip = uplinks[0].root_ip;
    let stack = Stack::start_with(IpAddr::V4(collector_ip), extra);
    Setup {
        stack,
        pcs: hosts,
        uplinks,
        _campus: campus,
    }
}

impl Setup {
    fn collector(&self, args: &[&str]) -> String {
        run(Command::new(require::binary("doorwatch-collector"))
            .args(args)
            .arg("--config")
            .arg(&self.stack.collector_config))
    }

    /// `token create`; returns the token.
    fn token(&self, group: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--group", group];
        args.extend_from_slice(extra);
        let out = self.collector(&args);
        let token = out.trim().to_owned();
        assert!(token.starts_with("dwt1-"), "token create printed {out:?}");
        token
    }

    /// An agent.toml for `pc` whose identity files live in `DIR/NAME/`
    /// (not there yet) and that enrolls with `token`.
    fn agent_config(&self, pc: &Host, name: &str, token: Option<&str>) -> PathBuf {
        let home = self.stack.dir.path().join(name);
        std::fs::create_dir_all(&home).expect("agent folder");
        let local: Vec<String> = pc.ips.iter().map(|ip| format!("\"{ip}\"")).collect();
        let token = token.map_or(String::new(), |t| format!("token = \"{t}\""));
        let text = format!(
            r#"interface = "{interface}"
local_ips = [{local}]
[collector]
address = "{address}"
server_name = "{COLLECTOR_NAME}"
ca = "{pki}/ca.pem"
cert = "{home}/agent.pem"
key = "{home}/agent.key"
{token}
[delivery]
spool_dir = "{home}/spool"
heartbeat_seconds = 1
"#,
            interface = pc.interface,
            local = local.join(", "),
            address = self.stack.collector_address,
            pki = self.stack.pki.display(),
            home = home.display(),
        );
        let path = home.join("agent.toml");
        std::fs::write(&path, text).expect("write agent.toml");
        path
    }

    fn start_agent(&self, pc: &Host, config: &Path, name: &str) -> Process {
        stack::start_agent(self.stack.dir.path(), pc, config, name)
    }

    /// Starts agent `name` on `pc` with `config` (which enrolls it) and
    /// waits until it is connected and a heartbeat of it is stored. Returns
    /// the agent and its id.
    fn start_streaming_agent(&self, pc: &Host, config: &Path, name: &str) -> (Process, String) {
        let mut agent = self.start_agent(pc, config, name);
        agent.wait_for_log("connected to collector", Duration::from_secs(30));
        let agent_id = enrolled_id(&agent.log());
        self.wait_for_heartbeats(&agent_id, 0, Duration::from_secs(20));
        (agent, agent_id)
    }

    /// `agents list --format json`, parsed.
    fn agents(&self) -> Vec<serde_json::Value> {
        self.collector(&["agents", "list", "--format", "json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    /// Heartbeats stored for `agent_id` so far.
    fn heartbeats(&self, agent_id: &str) -> u64 {
        self.stack
            .clickhouse
            .query_ok(&format!(
                "SELECT count() FROM doorwatch.agent_heartbeats WHERE agent_id = '{agent_id}'"
            ))
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Waits until `agent_id` has more than `after` heartbeats stored.
    fn wait_for_heartbeats(&self, agent_id: &str, after: u64, timeout: Duration) -> u64 {
        let start = Instant::now();
        loop {
            let now = self.heartbeats(agent_id);
            if now > after {
                return now;
            }
            assert!(
                start.elapsed() < timeout,
                "no new heartbeat from {agent_id} within {timeout:?} (still {now})"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A `pki` subcommand (it takes no collector.toml).
    fn pki(&self, args: &[&str]) -> String {
        run(Command::new(require::binary("doorwatch-collector")).args(args))
    }

    /// The folder [`Setup::agent_config`] made for agent `name`.
    fn home(&self, name: &str) -> PathBuf {
        self.stack.dir.path().join(name)
    }

    fn collector_process(&self) -> &Process {
        self.stack.collector.as_ref().expect("the collector runs")
    }

    /// The first collector log line holding all of `needles`, waiting up
    /// to `timeout` for it.
    fn collector_line(&self, needles: &[&str], timeout: Duration) -> String {
        log_line(self.collector_process(), needles, timeout)
    }

    /// `doorwatch-agent enroll --config CONFIG --token TOKEN` inside `pc`.
    fn enroll(&self, pc: &Host, config: &Path, token: &str) -> Output {
        output_within(
            pc.command(require::binary("doorwatch-agent"))
                .args(["enroll", "--config"])
                .arg(config)
                .args(["--token", token]),
            Duration::from_secs(60),
        )
    }

    /// `token list --format json`, parsed.
    fn tokens(&self) -> Vec<serde_json::Value> {
        self.collector(&["token", "list", "--format", "json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    /// Starts `doorwatch-agent run` inside `pc` under `faketime -f SKEW`.
    fn start_skewed_agent(&self, pc: &Host, config: &Path, name: &str, skew: &str) -> Process {
        let mut command = pc.command(require::tool("faketime", "faketime"));
        command
            .args(["-f", skew])
            .arg(require::binary("doorwatch-agent"))
            .args([
                "--log-level",
                "info,doorwatch_agent=debug",
                "run",
                "--config",
            ])
            .arg(config);
        Process::spawn(name, command, self.stack.dir.path()).expect("start agent under faketime")
    }

    /// Copies the hand-made certificate and key of `agent` (in `pki`) to
    /// where agent `name`'s configuration looks for its own.
    fn install_certificate(&self, pki: &Path, agent: &str, name: &str) {
        let home = self.home(name);
        for (from, to) in [("pem", "agent.pem"), ("key", "agent.key")] {
            let from = pki.join(format!("agents/{agent}.{from}"));
            std::fs::copy(&from, home.join(to))
                .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
    }

    /// A TLS client that presents no certificate (as a PC that enrolls).
    fn anonymous_tls(&self) -> ClientTls {
        let config = doorwatch_tls::anonymous_client_config(&self.stack.pki.join("ca.pem"))
            .expect("the campus CA loads");
        ClientTls::from_config(
            config,
            ServerName::try_from(COLLECTOR_NAME).expect("a valid server name"),
        )
    }

    /// A gRPC channel to the collector over `tls`.
    async fn channel(&self, tls: &ClientTls) -> Channel {
        tls.connect(&self.stack.collector_address.to_string())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the collector: {e:?}"))
    }
}

/// The agent id in "enrolled" log lines (`agent_id=...`).
fn enrolled_id(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("enrolled"))
        .find_map(|l| {
            let rest = &l[l.find("agent_id=")? + "agent_id=".len()..];
            Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no enrolled agent_id in log:\n{log}"))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// The id part of a `dwt1-<id>-<secret>` token.
fn token_id(token: &str) -> &str {
    token.split('-').nth(1).expect("a dwt1-<id>-<secret> token")
}

/// The secret part of a token.
fn token_secret(token: &str) -> &str {
    token.split('-').nth(2).expect("a dwt1-<id>-<secret> token")
}

/// A command's exit status, stdout and stderr, for assertion messages.
fn text(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` to completion and returns its output; kills it and
/// panics if it runs longer than `timeout`.
fn output_within(command: &mut Command, timeout: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let start = Instant::now();
    while child.try_wait().expect("child status").is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output of a killed child");
            panic!(
                "{command:?} still ran after {timeout:?}:\n{}",
                text(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
        .wait_with_output()
        .expect("output of a finished child")
}

/// The first line of `process`'s log holding all of `needles`, waiting up
/// to `timeout` for it.
fn log_line(process: &Process, needles: &[&str], timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let log = process.log();
        if let Some(line) = log
            .lines()
            .find(|line| needles.iter().all(|n| line.contains(n)))
        {
            return line.to_owned();
        }
        assert!(
            start.elapsed() < timeout,
            "no line with all of {needles:?} within {timeout:?} in {}:\n{log}",
            process.log_path().display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tokio runtime whose worker keeps gRPC connections going while the
/// test thread waits for ClickHouse.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn enroll_request(token: &str, csr_der: Vec<u8>) -> EnrollRequest {
    EnrollRequest {
        token: token.to_owned(),
        csr_der,
        hostname: "e2e-client".to_owned(),
        os: "linux".to_owned(),
        agent_version: "e2e".to_owned(),
    }
}

fn openssl() -> PathBuf {
    require::tool("openssl", "openssl")
}

/// A new ECDSA P-256 key, `DIR/NAME.key`.
fn new_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(format!("{name}.key"));
    run(Command::new(openssl())
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key));
    key
}

/// A PKCS#10 request (DER) for `key`, signed with it.
fn signing_request(key: &Path) -> Vec<u8> {
    let csr = key.with_extension("csr");
    run(Command::new(openssl())
        .args(["req", "-new", "-subj", "/CN=e2e", "-outform", "DER", "-key"])
        .arg(key)
        .arg("-out")
        .arg(&csr));
    std::fs::read(&csr).expect("read the request")
}

/// The public key of `key` (SubjectPublicKeyInfo, DER).
fn public_key(key: &Path) -> Vec<u8> {
    let der = key.with_extension("spki");
    run(Command::new(openssl())
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(key)
        .arg("-out")
        .arg(&der));
    std::fs::read(&der).expect("read the public key")
}

/// `csr` with its public key `ours` replaced by `other`: its signature no
/// longer fits the key it names.
fn with_public_key(csr: &[u8], ours: &[u8], other: &[u8]) -> Vec<u8> {
    assert_eq!(ours.len(), other.len(), "P-256 keys encode alike");
    let at = csr
        .windows(ours.len())
        .position(|w| w == ours)
        .expect("the request holds its public key");
    let mut forged = csr.to_vec();
    forged[at..at + ours.len()].copy_from_slice(other);
    assert_ne!(forged, csr, "the key was swapped");
    forged
}

/// How far the clock of the process that wrote `log` is from ours: the
/// first line's timestamp minus `started` (when we started it), seconds.
fn clock_offset(log: &str, started: SystemTime) -> i64 {
    let stamp = log
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no timestamp in log:\n{log}"));
    let logged: i64 = run(Command::new("date").args(["-u", "-d", stamp, "+%s"]))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("timestamp {stamp:?}: {e}"));
    let started = started
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    logged - i64::try_from(started).expect("seconds fit i64")
}

#[test]
fn a_pc_enrolls_with_a_token_streams_and_renews_without_a_gap() {
    // 90 s certificates: renewal is due 60 s in.
    let setup = setup(1, "90s");
    let token = setup.token("library", &["--expires", "1h", "--max-uses", "5"]);
    let config = setup.agent_config(&setup.pcs[0], "pc-a", Some(&token));
    let mut agent = setup.start_agent(&setup.pcs[0], &config, "agent-a");
    agent.wait_for_log("enrolled", Duration::from_secs(30));
    agent.wait_for_log("connected to collector", Duration::from_secs(30));
    let agent_id = enrolled_id(&agent.log());
    assert!(
        uuid::Uuid::parse_str(&agent_id).is_ok(),
        "agent id {agent_id} is a UUID"
    );
    let home = setup.stack.dir.path().join("pc-a");
    assert_eq!(mode(&home.join("agent.key")), 0o600, "private key is 0600");
    let collector_log = setup.stack.collector.as_ref().expect("collector").log();
    assert!(
        collector_log.contains("agent enrolled") && collector_log.contains(&agent_id),
        "collector logs the enrollment:\n{collector_log}"
    );
    assert!(
        !collector_log.contains(&token) && !agent.log().contains(&token),
        "the token never appears in a log"
    );

    let agents = setup.agents();
    let row = agents
        .iter()
        .find(|a| a["agent_id"] == agent_id.as_str())
        .unwrap_or_else(|| panic!("agents list lacks {agent_id}: {agents:?}"));
    assert_eq!(row["group"], "library", "the group comes from the token");
    let serial = row["cert_serial"].as_str().expect("serial").to_owned();

    let before = setup.wait_for_heartbeats(&agent_id, 0, Duration::from_secs(20));
    // Renewal at two thirds of 90 s; then the stream resumes at once.
    agent.wait_for_log("certificate renewed", Duration::from_secs(90));
    let renewed_at = Instant::now();
    let collector = setup.stack.collector.as_ref().expect("collector");
    assert!(
        collector.log().contains("agent certificate renewed"),
        "collector logs the renewal"
    );
    let after = setup.wait_for_heartbeats(&agent_id, before + 1, Duration::from_secs(10));
    eprintln!(
        "renewed; heartbeats {before} -> {after}, stream back {:?} after renewal",
        renewed_at.elapsed()
    );
    let agents = setup.agents();
    let row = agents
        .iter()
        .find(|a| a["agent_id"] == agent_id.as_str())
        .expect("still listed");
    assert_ne!(row["cert_serial"], serial.as_str(), "a new certificate");
    assert_eq!(agents.len(), 1, "renewal keeps the same identity");
    assert_eq!(mode(&home.join("agent.key")), 0o600, "new key is 0600 too");
}

#[test]
fn bad_tokens_are_refused_with_the_reason_and_write_no_files() {
    let setup = setup(1, "30d");
    let pc = &setup.pcs[0];
    let tokens = BadTokens::create(&setup);
    a_single_use_token_enrolls_once(&setup, pc, &tokens.single);
    // Tokens expire in whole seconds: 2 s after a 1 s token it is gone.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(tokens.expired_made.elapsed()));
    for (name, token, id, reason) in &tokens.refused_cases() {
        enrolling_is_refused_with_the_reason_and_writes_no_files(
            &setup, pc, name, token, *id, reason,
        );
    }
    the_token_list_shows_each_status_and_use(&setup, &tokens);
    no_token_secret_is_listed_or_logged(&setup, &tokens);
    assert_eq!(setup.agents().len(), 1, "only the first PC enrolled");
}

/// The tokens of [`bad_tokens_are_refused_with_the_reason_and_write_no_files`],
/// all for group "lab".
struct BadTokens {
    /// Expires 1 s after `expired_made`.
    expired: String,
    expired_made: Instant,
    /// Valid for 1 h, for one enrollment.
    single: String,
    /// Valid for 1 h and five enrollments, but revoked.
    revoked: String,
}

impl BadTokens {
    /// Creates the tokens, and revokes `revoked` with `token revoke`.
    fn create(setup: &Setup) -> Self {
        let expired = setup.token("lab", &["--expires", "1s"]);
        let expired_made = Instant::now();
        let single = setup.token("lab", &["--expires", "1h", "--max-uses", "1"]);
        let revoked = setup.token("lab", &["--expires", "1h", "--max-uses", "5"]);
        let out = setup.collector(&["token", "revoke", token_id(&revoked)]);
        assert!(out.contains("revoked"), "token revoke says so: {out:?}");
        Self {
            expired,
            expired_made,
            single,
            revoked,
        }
    }

    /// Each token enrolling must refuse: (case name, token, the token id
    /// the collector logs if the token has one, the reason given).
    fn refused_cases(&self) -> [(&'static str, String, Option<&str>, String); 5] {
        let unknown = format!("dwt1-0123456789abcdef-{}", "5a".repeat(32));
        [
            (
                "unknown",
                unknown,
                Some("0123456789abcdef"),
                "token 0123456789abcdef is not known".to_owned(),
            ),
            (
                "malformed",
                "dwt1-0123-not-hex".to_owned(),
                None,
                "not a doorwatch enrollment token".to_owned(),
            ),
            (
                "expired",
                self.expired.clone(),
                Some(token_id(&self.expired)),
                format!("token {} expired at", token_id(&self.expired)),
            ),
            (
                "used-up",
                self.single.clone(),
                Some(token_id(&self.single)),
                format!(
                    "token {} is used up (1 of 1 enrollments)",
                    token_id(&self.single)
                ),
            ),
            (
                "revoked",
                self.revoked.clone(),
                Some(token_id(&self.revoked)),
                format!("token {} is revoked", token_id(&self.revoked)),
            ),
        ]
    }
}

/// A single-use token works once: `enroll` on `pc` as agent "first" writes
/// a certificate.
fn a_single_use_token_enrolls_once(setup: &Setup, pc: &Host, single: &str) {
    let first = setup.agent_config(pc, "first", None);
    let out = setup.enroll(pc, &first, single);
    assert!(
        out.status.success(),
        "the first use of a single-use token enrolls:\n{}",
        text(&out)
    );
    assert!(
        setup.home("first").join("agent.pem").exists(),
        "the first enrollment writes a certificate"
    );
}

/// `enroll` on `pc` as agent `name` with `token` fails with `reason` on
/// stderr and does not echo the token's secret; the collector logs the
/// refusal with the reason (and `token_id=ID` with an `id`); the agent's
/// folder holds only its agent.toml.
fn enrolling_is_refused_with_the_reason_and_writes_no_files(
    setup: &Setup,
    pc: &Host,
    name: &str,
    token: &str,
    id: Option<&str>,
    reason: &str,
) {
    let config = setup.agent_config(pc, name, None);
    let started = Instant::now();
    let out = setup.enroll(pc, &config, token);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{name} token: enroll must fail:\n{}",
        text(&out)
    );
    assert!(
        stderr.contains(reason),
        "{name} token: stderr gives the reason {reason:?}:\n{}",
        text(&out)
    );
    if let Some(secret) = token.split('-').nth(2).filter(|s| s.len() == 64) {
        assert!(
            !stderr.contains(secret),
            "{name} token: the secret is not echoed"
        );
    }
    let id_field = id.map(|id| format!("token_id={id}"));
    let mut needles = vec!["enrollment refused", "code=PermissionDenied", reason];
    needles.extend(id_field.as_deref());
    let line = setup.collector_line(&needles, Duration::from_secs(10));
    let mut left: Vec<String> = std::fs::read_dir(setup.home(name))
        .expect("agent folder")
        .map(|e| {
            e.expect("folder entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["agent.toml"],
        "{name} token: no certificate or key is written"
    );
    eprintln!("{name} token refused in {took:?}; collector: {line}");
}

/// `token list` gives each bad token's status, uses and maximum uses.
fn the_token_list_shows_each_status_and_use(setup: &Setup, bad: &BadTokens) {
    let tokens = setup.tokens();
    for (token, status, uses, max_uses) in [
        (&bad.expired, "expired", 0, 1),
        (&bad.single, "used up", 1, 1),
        (&bad.revoked, "revoked", 0, 5),
    ] {
        let row = tokens
            .iter()
            .find(|t| t["token_id"] == token_id(token))
            .unwrap_or_else(|| panic!("token list lacks {}: {tokens:?}", token_id(token)));
        assert_eq!(row["status"], status, "status of {row}");
        assert_eq!(row["uses"], uses, "uses of {row}");
        assert_eq!(row["max_uses"], max_uses, "max_uses of {row}");
    }
}

/// No token's secret is in `token list` (JSON or table) or the collector
/// log.
fn no_token_secret_is_listed_or_logged(setup: &Setup, bad: &BadTokens) {
    let json = setup.collector(&["token", "list", "--format", "json"]);
    let table = setup.collector(&["token", "list"]);
    let log = setup.collector_process().log();
    for token in [&bad.expired, &bad.single, &bad.revoked] {
        let secret = token_secret(token);
        assert!(
            !json.contains(secret) && !table.contains(secret),
            "token list never shows a secret:\n{json}\n{table}"
        );
        assert!(!log.contains(secret), "no secret in the collector log");
    }
}

#[test]
fn forged_replayed_and_hurried_enrollment_requests_are_refused() {
    let setup = setup_with(1, |pki| {
        format!(
            "{}enrolls_per_address_per_minute = 5\n",
            stack::enrollment_table(pki, "30d")
        )
    });
    let token = setup.token("lab", &["--expires", "1h", "--max-uses", "5"]);
    let requests = SigningRequests::new(&setup);

    // From the root namespace: three Enroll calls, one Renew.
    let rt = runtime();
    let first_call = Instant::now();
    let (forged, first, replayed, renewal) = rt.block_on(
        enroll_forged_genuine_and_replayed_then_renew(&setup, &token, &requests),
    );
    a_forged_request_is_refused_for_its_signature(&setup, forged);
    let agent_id = the_genuine_request_enrolls(first);
    a_replayed_request_is_refused_naming_the_agent(&setup, replayed, &agent_id);
    a_renewal_without_a_client_certificate_is_refused(&setup, renewal);
    refused_requests_use_nothing_and_enroll_no_one(&setup, &agent_id);

    // From the PC: five attempts a minute, the sixth is refused.
    let unknown = format!("dwt1-00000000000000ff-{}", "5a".repeat(32));
    the_sixth_attempt_a_minute_from_the_pc_is_refused(&setup, &unknown);
    the_limit_is_per_address(&setup, &rt, &unknown, &requests.genuine, first_call);
}

/// The signing requests (DER) of
/// [`forged_replayed_and_hurried_enrollment_requests_are_refused`], made
/// with two new keys, a and b, in `DIR/keys`.
struct SigningRequests {
    /// For key a, signed by key a.
    genuine: Vec<u8>,
    /// Key b's public key in a request signed by key a.
    forged: Vec<u8>,
    /// For key b, signed by key b: the one to renew with.
    renewal: Vec<u8>,
}

impl SigningRequests {
    fn new(setup: &Setup) -> Self {
        let keys = setup.stack.dir.path().join("keys");
        std::fs::create_dir_all(&keys).expect("keys folder");
        let (key_a, key_b) = (new_key(&keys, "a"), new_key(&keys, "b"));
        let genuine = signing_request(&key_a);
        let forged = with_public_key(&genuine, &public_key(&key_a), &public_key(&key_b));
        let renewal = signing_request(&key_b);
        Self {
            genuine,
            forged,
            renewal,
        }
    }
}

/// What the collector answered one Enroll or Renew call.
type EnrollReply = Result<tonic::Response<v1::EnrollResponse>, tonic::Status>;

/// Over one anonymous TLS connection: Enroll with the forged request, with
/// the genuine one, with the genuine one again, then Renew. Returns the four
/// answers in that order.
async fn enroll_forged_genuine_and_replayed_then_renew(
    setup: &Setup,
    token: &str,
    requests: &SigningRequests,
) -> (EnrollReply, EnrollReply, EnrollReply, EnrollReply) {
    let mut client = EnrollmentClient::new(setup.channel(&setup.anonymous_tls()).await);
    let forged = client
        .enroll(enroll_request(token, requests.forged.clone()))
        .await;
    let first = client
        .enroll(enroll_request(token, requests.genuine.clone()))
        .await;
    let replayed = client
        .enroll(enroll_request(token, requests.genuine.clone()))
        .await;
    let renewal = client
        .renew(RenewRequest {
            csr_der: requests.renewal.clone(),
            hostname: "e2e-client".to_owned(),
            agent_version: "e2e".to_owned(),
        })
        .await;
    (forged, first, replayed, renewal)
}

/// The forged request is refused as an invalid argument, for its signature,
/// and the collector logs the refusal.
fn a_forged_request_is_refused_for_its_signature(setup: &Setup, forged: EnrollReply) {
    let forged = forged.expect_err("a request whose signature does not fit its key");
    assert_eq!(forged.code(), Code::InvalidArgument, "{forged:?}");
    assert!(
        forged.message().contains("Invalid CSR signature"),
        "refused for its signature, not its format: {forged:?}"
    );
    eprintln!("forged request: {}", forged.message());
    setup.collector_line(
        &["enrollment refused", "code=InvalidArgument"],
        Duration::from_secs(10),
    );
}

/// The genuine request enrolls in group "lab" with a UUID and a two-part
/// chain. Returns the agent id.
fn the_genuine_request_enrolls(first: EnrollReply) -> String {
    let first = first.expect("the genuine request enrolls").into_inner();
    assert!(
        uuid::Uuid::parse_str(&first.agent_id).is_ok(),
        "agent id {} is a UUID",
        first.agent_id
    );
    assert_eq!(first.group, "lab");
    assert_eq!(
        first
            .certificate_chain_pem
            .matches("BEGIN CERTIFICATE")
            .count(),
        2,
        "certificate then issuing CA"
    );
    first.agent_id
}

/// The same request again is refused as already existing, naming
/// `agent_id`, which holds its key; the collector logs the refusal.
fn a_replayed_request_is_refused_naming_the_agent(
    setup: &Setup,
    replayed: EnrollReply,
    agent_id: &str,
) {
    let replayed = replayed.expect_err("the same request again");
    assert_eq!(replayed.code(), Code::AlreadyExists, "{replayed:?}");
    assert!(
        replayed.message().contains("already enrolled") && replayed.message().contains(agent_id),
        "the refusal names the agent holding the key: {replayed:?}"
    );
    setup.collector_line(
        &["enrollment refused", "code=AlreadyExists"],
        Duration::from_secs(10),
    );
}

/// Renew without a client certificate is unauthenticated; the collector
/// logs the refusal.
fn a_renewal_without_a_client_certificate_is_refused(setup: &Setup, renewal: EnrollReply) {
    let renewal = renewal.expect_err("renewal without a client certificate");
    assert_eq!(renewal.code(), Code::Unauthenticated, "{renewal:?}");
    setup.collector_line(
        &["renewal refused", "code=Unauthenticated"],
        Duration::from_secs(10),
    );
}

/// The token counts one use, and `agent_id` is the only agent.
fn refused_requests_use_nothing_and_enroll_no_one(setup: &Setup, agent_id: &str) {
    let tokens = setup.tokens();
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        tokens[0]["uses"], 1,
        "forged and replayed requests use nothing: {tokens:?}"
    );
    let agents = setup.agents();
    assert_eq!(agents.len(), 1, "one agent: {agents:?}");
    assert_eq!(agents[0]["agent_id"], agent_id);
}

/// `enroll` from the PC with the `unknown` token: five attempts are refused
/// as not known, the sixth as too many, and the collector logs the PC's
/// address with it.
fn the_sixth_attempt_a_minute_from_the_pc_is_refused(setup: &Setup, unknown: &str) {
    let pc = &setup.pcs[0];
    let config = setup.agent_config(pc, "hurried", None);
    for attempt in 1..=6 {
        let out = setup.enroll(pc, &config, unknown);
        let expected = if attempt <= 5 {
            "is not known"
        } else {
            "too many enrollment attempts"
        };
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(expected),
            "attempt {attempt} from the PC is refused with {expected:?}:\n{}",
            text(&out)
        );
    }
    let from_pc = format!(
        "too many enrollment attempts from {}",
        setup.uplinks[0].host_ip
    );
    setup.collector_line(&["enrollment refused", &from_pc], Duration::from_secs(10));
}

/// The limit is per address: the root namespace, whose first call was at
/// `first_call`, has calls left (refused only for the `unknown` token),
/// then runs out too, after at most five a minute.
fn the_limit_is_per_address(
    setup: &Setup,
    rt: &tokio::runtime::Runtime,
    unknown: &str,
    request: &[u8],
    first_call: Instant,
) {
    let (next, calls, hurried) = rt.block_on(async {
        let mut client = EnrollmentClient::new(setup.channel(&setup.anonymous_tls()).await);
        let next = client
            .enroll(enroll_request(unknown, request.to_vec()))
            .await;
        let mut calls = 4;
        loop {
            calls += 1;
            match client
                .enroll(enroll_request(unknown, request.to_vec()))
                .await
            {
                Err(status) if status.code() == Code::ResourceExhausted => {
                    return (next, calls, status);
                }
                other => assert!(
                    calls < 10,
                    "no rate limit after {calls} calls; last: {other:?}"
                ),
            }
        }
    });
    let next = next.expect_err("an unknown token");
    assert_eq!(
        next.code(),
        Code::PermissionDenied,
        "another address is not limited by the PC's attempts: {next:?}"
    );
    assert!(
        hurried.message().contains("too many enrollment attempts"),
        "{hurried:?}"
    );
    // Five a minute, plus one for each 12 s that passed.
    let refill = first_call.elapsed().as_secs() / 12;
    eprintln!(
        "root namespace refused at call {calls} ({:?} after its first; refill {refill})",
        first_call.elapsed()
    );
    assert!(
        calls - 1 <= 5 + refill,
        "at most five calls a minute got through, {} did",
        calls - 1
    );
}

#[test]
fn certificates_from_another_ca_or_expired_are_refused_and_a_token_enrolls_again() {
    let setup = setup(1, "30d");
    let pc = &setup.pcs[0];
    a_certificate_from_another_ca_never_gets_past_the_handshake(&setup, pc);

    // A certificate that expired, and no token: `run` stops and says why.
    let pki = setup.stack.pki.clone();
    issue_an_expired_certificate(&setup, &pki, "old-pc");
    an_expired_certificate_without_a_token_stops_the_agent(&setup, pc, &pki);

    // The same with a token: it enrolls again as a new agent and streams.
    an_expired_certificate_with_a_token_enrolls_again(&setup, pc, &pki);
}

/// An agent on `pc` with a certificate from another CA (with the same
/// names) is refused in the handshake, for its issuer, and never connects
/// or stores a heartbeat.
fn a_certificate_from_another_ca_never_gets_past_the_handshake(setup: &Setup, pc: &Host) {
    let collector_ip = setup.stack.collector_address.ip().to_string();
    let other = setup.stack.dir.path().join("other-pki");
    let other_arg = other.to_string_lossy().into_owned();
    setup.pki(&[
        "pki",
        "init",
        "--dir",
        &other_arg,
        "--name",
        COLLECTOR_NAME,
        "--ip",
        &collector_ip,
    ]);
    setup.pki(&[
        "pki",
        "issue-agent",
        "--dir",
        &other_arg,
        "--name",
        "foreign-pc",
    ]);
    let config = setup.agent_config(pc, "foreign", None);
    setup.install_certificate(&other, "foreign-pc", "foreign");
    let mut foreign = setup.start_agent(pc, &config, "agent-foreign");
    let refused = setup.collector_line(
        &[
            "refused agent connection",
            &format!("remote={}:", setup.uplinks[0].host_ip),
        ],
        Duration::from_secs(30),
    );
    // Both CAs carry the same names, so the chain is refused for its
    // signature (an unrelated CA would be UnknownIssuer).
    assert!(
        refused.contains("invalid peer certificate")
            && (refused.contains("BadSignature") || refused.contains("UnknownIssuer")),
        "refused for its issuer: {refused}"
    );
    foreign.wait_for_log("collector stream down", Duration::from_secs(30));
    // Give it time for a few more attempts.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !foreign.log().contains("connected to collector"),
        "the foreign agent never connects:\n{}",
        foreign.log()
    );
    assert_eq!(
        setup.heartbeats("foreign-pc"),
        0,
        "no heartbeat stored for it"
    );
    drop(foreign);
    eprintln!("foreign certificate: {refused}");
}

/// Issues agent `name` a certificate from `pki` that is valid for 0 days,
/// and waits until it has expired.
fn issue_an_expired_certificate(setup: &Setup, pki: &Path, name: &str) {
    let pki_arg = pki.to_string_lossy().into_owned();
    setup.pki(&[
        "pki",
        "issue-agent",
        "--dir",
        &pki_arg,
        "--name",
        name,
        "--days",
        "0",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
}

/// `run` on `pc` with the expired "old-pc" certificate from `pki` and no
/// token stops, naming the expiry and the fix (`collector.token`).
fn an_expired_certificate_without_a_token_stops_the_agent(setup: &Setup, pc: &Host, pki: &Path) {
    let config = setup.agent_config(pc, "old-no-token", None);
    setup.install_certificate(pki, "old-pc", "old-no-token");
    let out = output_within(
        pc.command(require::binary("doorwatch-agent"))
            .args(["run", "--config"])
            .arg(&config),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("expired") && stderr.contains("collector.token"),
        "an expired certificate without a token stops the agent, naming the fix:\n{}",
        text(&out)
    );
    eprintln!(
        "expired, no token: {}",
        stderr
            .lines()
            .find(|l| l.starts_with("Error:"))
            .unwrap_or_default()
    );
}

/// An agent on `pc` with the expired "old-pc" certificate from `pki` and a
/// token enrolls again, saying why, as a new UUID identity, and streams
/// under it (nothing under the old id).
fn an_expired_certificate_with_a_token_enrolls_again(setup: &Setup, pc: &Host, pki: &Path) {
    let token = setup.token("lab", &["--expires", "1h", "--max-uses", "1"]);
    let config = setup.agent_config(pc, "old-with-token", Some(&token));
    setup.install_certificate(pki, "old-pc", "old-with-token");
    let mut agent = setup.start_agent(pc, &config, "agent-old-with-token");
    agent.wait_for_log(
        "enrolling with the configured token",
        Duration::from_secs(30),
    );
    let reason = log_line(
        &agent,
        &["enrolling with the configured token"],
        Duration::from_secs(1),
    );
    assert!(reason.contains("expired"), "it says why: {reason}");
    agent.wait_for_log("connected to collector", Duration::from_secs(30));
    let agent_id = enrolled_id(&agent.log());
    assert!(
        agent_id != "old-pc" && uuid::Uuid::parse_str(&agent_id).is_ok(),
        "a new UUID identity, not {agent_id}"
    );
    let beats = setup.wait_for_heartbeats(&agent_id, 0, Duration::from_secs(20));
    assert_eq!(setup.heartbeats("old-pc"), 0, "nothing under the old id");
    eprintln!("expired, with token: enrolled again as {agent_id}, {beats} heartbeats");
}

/// The uptime in the impostor's heartbeats, to find its rows by.
const IMPOSTOR_UPTIME: u64 = 987_654_321;

#[test]
fn a_stream_counts_for_its_certificate_not_for_the_agent_it_claims_to_be() {
    let setup = setup(2, "30d");
    let token = setup.token("lab", &["--expires", "1h", "--max-uses", "5"]);

    // Agent A streams from pc0; PC 1 enrolls as B but runs no agent.
    let config_a = setup.agent_config(&setup.pcs[0], "pc-a", Some(&token));
    let (_agent_a, a_id) = setup.start_streaming_agent(&setup.pcs[0], &config_a, "agent-a");
    let b_id = pc_1_enrolls_as_b(&setup, &token);
    assert_ne!(a_id, b_id);

    // With B's certificate: Hello claiming to be A, then heartbeats.
    let tls = b_tls(&setup);
    let rt = runtime();
    // The stream stays open (the inbound half kept) until the rows are in.
    let _inbound = rt.block_on(stream_as_b_claiming_to_be_a(&setup, &tls, &a_id));
    let connected = setup.collector_line(
        &[
            "agent connected",
            &format!("agent_id={b_id}"),
            &format!("claimed_hostname={a_id}"),
        ],
        Duration::from_secs(10),
    );
    the_heartbeats_are_bs_with_as_id_only_as_the_claim(&setup, &a_id, &b_id);
    a_goes_on_as_before(&setup, &a_id);
    eprintln!("impostor stream: {connected}");
}

/// `enroll` on PC 1 as agent "pc-b" with `token`, running no agent.
/// Returns B's agent id.
fn pc_1_enrolls_as_b(setup: &Setup, token: &str) -> String {
    let config_b = setup.agent_config(&setup.pcs[1], "pc-b", None);
    let out = setup.enroll(&setup.pcs[1], &config_b, token);
    assert!(out.status.success(), "B enrolls:\n{}", text(&out));
    enrolled_id(&String::from_utf8_lossy(&out.stderr))
}

/// A TLS client with the certificate and key B enrolled for.
fn b_tls(setup: &Setup) -> ClientTls {
    let home_b = setup.home("pc-b");
    ClientTls::load(
        &setup.stack.pki.join("ca.pem"),
        &home_b.join("agent.pem"),
        &home_b.join("agent.key"),
        COLLECTOR_NAME,
    )
    .expect("B's certificate and key work")
}

/// Opens a stream over `tls` (B's certificate) and sends a Hello whose
/// hostname is `a_id`, then three heartbeats with [`IMPOSTOR_UPTIME`];
/// checks the collector answers with the policy. Returns the inbound half,
/// which keeps the stream open.
async fn stream_as_b_claiming_to_be_a(
    setup: &Setup,
    tls: &ClientTls,
    a_id: &str,
) -> tonic::Streaming<v1::CollectorMessage> {
    let hello = AgentMessage {
        body: Some(agent_message::Body::Hello(v1::Hello {
            protocol_version: doorwatch_proto::PROTOCOL_VERSION,
            agent_version: "impostor".to_owned(),
            hostname: a_id.to_owned(),
            os: "linux".to_owned(),
            local_ips: vec![],
        })),
    };
    let heartbeat = AgentMessage {
        body: Some(agent_message::Body::Heartbeat(v1::Heartbeat {
            uptime_seconds: IMPOSTOR_UPTIME,
            agent_version: "impostor".to_owned(),
            ..Default::default()
        })),
    };
    let messages = vec![hello, heartbeat.clone(), heartbeat.clone(), heartbeat];
    let mut client = v1::agent_stream_client::AgentStreamClient::new(setup.channel(tls).await);
    let mut inbound = client
        .session(tokio_stream::iter(messages).chain(tokio_stream::pending()))
        .await
        .expect("the collector takes B's stream")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("the collector answers within 10 s")
        .expect("no error");
    assert!(
        matches!(
            first.and_then(|m| m.body),
            Some(v1::collector_message::Body::Policy(_))
        ),
        "the collector answers Hello with the policy"
    );
    inbound
}

/// The impostor's three heartbeats are stored as B's, with A's id only as
/// the claimed hostname; none of them is A's.
fn the_heartbeats_are_bs_with_as_id_only_as_the_claim(setup: &Setup, a_id: &str, b_id: &str) {
    let expected = format!("{b_id}\t{a_id}\t3");
    let rows = setup.stack.clickhouse.poll(
        &format!(
            "SELECT agent_id, claimed_hostname, count() FROM doorwatch.agent_heartbeats \
             WHERE uptime_seconds = {IMPOSTOR_UPTIME} GROUP BY agent_id, claimed_hostname FORMAT TSV"
        ),
        Duration::from_secs(20),
        |r| r.trim() == expected,
    );
    assert_eq!(
        rows.trim(),
        expected,
        "the heartbeats are B's, with A's id only as the claimed hostname"
    );
    let as_a = setup.stack.clickhouse.query_ok(&format!(
        "SELECT count() FROM doorwatch.agent_heartbeats WHERE agent_id = '{a_id}' \
         AND (uptime_seconds = {IMPOSTOR_UPTIME} OR agent_version = 'impostor' OR claimed_hostname = '{a_id}')"
    ));
    assert_eq!(as_a.trim(), "0", "nothing of the impostor's is A's");
}

/// A itself goes on as before: a new heartbeat, and its record untouched.
fn a_goes_on_as_before(setup: &Setup, a_id: &str) {
    let before = setup.heartbeats(a_id);
    setup.wait_for_heartbeats(a_id, before, Duration::from_secs(10));
    let agents = setup.agents();
    let row_a = agents
        .iter()
        .find(|a| a["agent_id"] == a_id)
        .expect("A is listed");
    assert_ne!(row_a["claimed_hostname"], a_id, "A's record is untouched");
}

#[test]
fn a_revoked_agent_is_cut_off_within_seconds_and_stays_refused_everywhere() {
    let mut setup = setup(1, "30d");
    let pc = setup.pcs[0].clone();
    let token = setup.token("lab", &["--expires", "1h", "--max-uses", "1"]);
    let config = setup.agent_config(&pc, "pc-a", Some(&token));
    let (mut agent, agent_id) = setup.start_streaming_agent(&pc, &config, "agent-a");
    revoking_ends_the_stream_within_seconds(&mut setup, &mut agent, &agent_id);

    // The agent tries again at once (its backoff starts at 0.5 s). How
    // the collector refused it is asserted last, so that everything else
    // is checked too.
    let first_refusal = the_revoked_agent_tries_again(&setup);
    let stopped_at = no_heartbeat_after_revocation(&setup, &agent_id);
    it_is_listed_as_revoked(&setup, &agent_id);
    drop(agent);

    a_restarted_collector_still_refuses_it(&mut setup, &pc, &config, &agent_id);
    let (_collector_b, _agent_b) = so_does_a_second_collector_on_the_same_database(
        &setup, &pc, &config, &agent_id, stopped_at,
    );
    the_first_reconnect_was_refused_in_the_tls_handshake(&first_refusal);
}

/// `agents revoke` ends `agent_id`'s stream within 5 s; both sides log the
/// reason.
fn revoking_ends_the_stream_within_seconds(setup: &mut Setup, agent: &mut Process, agent_id: &str) {
    let revoking = Instant::now();
    let out = setup.collector(&["agents", "revoke", agent_id, "--reason", "laptop stolen"]);
    assert!(out.contains("revoked"), "agents revoke says so: {out:?}");
    setup
        .stack
        .collector
        .as_mut()
        .expect("the collector runs")
        .wait_for_log(
            "this agent's certificate is revoked: laptop stolen",
            Duration::from_secs(5),
        );
    let cut_off = revoking.elapsed();
    let ended = setup.collector_line(
        &["agent stream ended", agent_id, "laptop stolen"],
        Duration::from_secs(1),
    );
    eprintln!("stream ended {cut_off:?} after `agents revoke`: {ended}");
    agent.wait_for_log("laptop stolen", Duration::from_secs(5));
}

/// Waits up to 30 s for the collector to refuse the revoked agent's next
/// connection or stream. Returns the log line.
fn the_revoked_agent_tries_again(setup: &Setup) -> String {
    let start = Instant::now();
    loop {
        let log = setup.collector_process().log();
        if let Some(line) = log.lines().find(|l| {
            l.contains("refused agent connection")
                || l.contains("refused a stream of a revoked agent")
        }) {
            break line.to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the revoked agent did not try again within 30 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Heartbeats already received are written within 2 s; then no more come
/// for `agent_id`. Returns its heartbeat count.
fn no_heartbeat_after_revocation(setup: &Setup, agent_id: &str) -> u64 {
    std::thread::sleep(Duration::from_secs(3));
    let stopped_at = setup.heartbeats(agent_id);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        setup.heartbeats(agent_id),
        stopped_at,
        "no heartbeat after revocation"
    );
    stopped_at
}

/// `agents list` shows `agent_id` as revoked, with the reason.
fn it_is_listed_as_revoked(setup: &Setup, agent_id: &str) {
    let agents = setup.agents();
    let row = agents
        .iter()
        .find(|a| a["agent_id"] == agent_id)
        .expect("still listed");
    assert_eq!(row["status"], "revoked", "{row}");
    assert_eq!(row["revoked_reason"], "laptop stolen", "{row}");
}

/// After a restart the collector still refuses the agent (started again on
/// `pc` with `config`) as revoked; the first collector took no stream of it
/// after the one it cut off.
fn a_restarted_collector_still_refuses_it(
    setup: &mut Setup,
    pc: &Host,
    config: &Path,
    agent_id: &str,
) {
    setup.stack.stop_collector();
    let first_log = std::fs::read_to_string(setup.stack.dir.path().join("collector.log"))
        .expect("the first collector's log");
    assert_eq!(
        first_log
            .lines()
            .filter(|l| l.contains("agent connected") && l.contains(agent_id))
            .count(),
        1,
        "no stream of the revoked agent was taken:\n{first_log}"
    );
    setup.stack.restart_collector("collector-2");
    let agent = setup.start_agent(pc, config, "agent-a-2");
    let refused = setup.collector_line(&["refused agent connection"], Duration::from_secs(30));
    assert!(
        refused.contains("Revoked"),
        "refused as revoked after a restart: {refused}"
    );
    assert!(
        !agent.log().contains("connected to collector"),
        "the agent never connects:\n{}",
        agent.log()
    );
    drop(agent);
}

/// So does a second collector on the same database: the agent, moved to it
/// (a copy of `config` naming its address), is refused as revoked, stores
/// no heartbeat past `stopped_at`, and neither collector takes a stream of
/// it. Returns the second collector and the moved agent, still running.
fn so_does_a_second_collector_on_the_same_database(
    setup: &Setup,
    pc: &Host,
    config: &Path,
    agent_id: &str,
    stopped_at: u64,
) -> (Process, Process) {
    let second = setup.stack.dir.path().join("second");
    std::fs::create_dir_all(&second).expect("second collector's folder");
    let address = SocketAddr::new(setup.stack.collector_address.ip(), free_port());
    let second_config = stack::collector_config(
        &second,
        address,
        &setup.stack.pki,
        &setup.stack.clickhouse,
        "doorwatch",
        &stack::enrollment_table(&setup.stack.pki, "30d"),
    );
    let second_collector = stack::start_collector_named(&second, &second_config, "collector-b");
    let text = std::fs::read_to_string(config).expect("read agent.toml");
    let moved = text.replace(
        &format!("address = \"{}\"", setup.stack.collector_address),
        &format!("address = \"{address}\""),
    );
    assert_ne!(moved, text, "agent.toml names the collector");
    let config_b = setup.home("pc-a").join("agent-b.toml");
    std::fs::write(&config_b, moved).expect("write agent-b.toml");
    let agent = setup.start_agent(pc, &config_b, "agent-a-3");
    let refused = log_line(
        &second_collector,
        &["refused agent connection"],
        Duration::from_secs(30),
    );
    assert!(
        refused.contains("Revoked"),
        "the second collector refuses it as revoked: {refused}"
    );
    assert!(
        !agent.log().contains("connected to collector"),
        "the agent never connects to the second collector:\n{}",
        agent.log()
    );
    assert_eq!(setup.heartbeats(agent_id), stopped_at, "still no heartbeat");
    for log in [setup.collector_process().log(), second_collector.log()] {
        assert!(
            !log.contains("agent connected"),
            "no stream of the revoked agent after the restart:\n{log}"
        );
    }
    (second_collector, agent)
}

/// Like the restarted and the second collector, the first must refuse the
/// reconnects in the TLS handshake, not only the stream after it:
/// `first_refusal` is its log line for the first reconnect.
fn the_first_reconnect_was_refused_in_the_tls_handshake(first_refusal: &str) {
    assert!(
        first_refusal.contains("refused agent connection") && first_refusal.contains("Revoked"),
        "the revoked agent's first reconnect got through the TLS handshake \
         (a resumed TLS session skips the client certificate check); \
         the collector logged:\n{first_refusal}"
    );
}

#[test]
fn agents_whose_clocks_are_four_minutes_off_enroll_and_stream() {
    let setup = setup(2, "30d");
    let token = setup.token("lab", &["--expires", "1h", "--max-uses", "2"]);
    let mut agents = Vec::new();
    for (pc, (name, skew)) in setup.pcs.iter().zip([("ahead", "+4m"), ("behind", "-4m")]) {
        let config = setup.agent_config(pc, name, Some(&token));
        let started = SystemTime::now();
        let agent = setup.start_skewed_agent(pc, &config, &format!("agent-{name}"), skew);
        agents.push((name, skew, started, agent));
    }
    for (name, skew, started, agent) in &mut agents {
        agent.wait_for_log("connected to collector", Duration::from_secs(30));
        let log = agent.log();
        let offset = clock_offset(&log, *started);
        let expected = if *skew == "+4m" { 240 } else { -240 };
        assert!(
            (offset - expected).abs() <= 20,
            "{name}: the agent's clock is {offset} s off ours, not {skew}:\n{log}"
        );
        let agent_id = enrolled_id(&log);
        let beats = setup.wait_for_heartbeats(&agent_id, 1, Duration::from_secs(20));
        eprintln!(
            "{name} ({skew}, clock {offset:+} s): enrolled as {agent_id}, {beats} heartbeats"
        );
    }
}

#[test]
fn simultaneous_requests_cannot_overdraw_a_token_or_enroll_one_key_twice() {
    let setup = setup(1, "30d");
    let keys = setup.stack.dir.path().join("keys");
    std::fs::create_dir_all(&keys).expect("keys folder");
    let csrs: Vec<Vec<u8>> = (0..3)
        .map(|i| signing_request(&new_key(&keys, &format!("k{i}"))))
        .collect();
    let single = setup.token("lab", &["--expires", "1h", "--max-uses", "1"]);
    let many = setup.token("lab", &["--expires", "1h", "--max-uses", "5"]);
    let rt = runtime();
    let (last_use, same_key) = rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(EnrollmentClient::new(
                setup.channel(&setup.anonymous_tls()).await,
            ));
        }
        let [c1, c2, c3, c4] = &mut clients[..] else {
            unreachable!("four clients")
        };
        let last_use = tokio::join!(
            c1.enroll(enroll_request(&single, csrs[0].clone())),
            c2.enroll(enroll_request(&single, csrs[1].clone())),
        );
        let same_key = tokio::join!(
            c3.enroll(enroll_request(&many, csrs[2].clone())),
            c4.enroll(enroll_request(&many, csrs[2].clone())),
        );
        (
            [last_use.0.is_ok(), last_use.1.is_ok()],
            [same_key.0.is_ok(), same_key.1.is_ok()],
        )
    });
    assert_eq!(
        last_use.iter().filter(|ok| **ok).count(),
        1,
        "a single-use token enrolls one PC even when two ask at once: {last_use:?}"
    );
    assert_eq!(
        same_key.iter().filter(|ok| **ok).count(),
        1,
        "one key enrolls once even when sent twice at once: {same_key:?}"
    );
    assert_eq!(setup.agents().len(), 2, "two agents in all");
}

/// A stolen PC keeps its agent.toml, token included. Revoking its agent
/// revokes that token too (it could still enroll PCs), so the PC cannot
/// enroll again with it. Should it come back with another token under its
/// hostname, or should a crafted request present its key, the alert
/// channels say so, once each (two collectors alert on the database, and
/// one restarts), and every alert is recorded.
#[test]
fn revoking_a_stolen_pc_revokes_its_token_and_flags_its_return() {
    let (webhook_port, webhook) = webhook_receiver();
    let (syslog_port, syslog) = syslog_listener();
    let alerts = format!(
        "[alerts]\nwebhook_url = \"http://127.0.0.1:{webhook_port}/hook\"\n\
         syslog = \"udp://127.0.0.1:{syslog_port}\"\n\
         console_url = \"https://doorwatch.campus.test\"\n"
    );
    let mut setup = setup_with(1, |pki| {
        format!("{}{alerts}", stack::enrollment_table(pki, "30d"))
    });
    let second = a_second_collector_alerting(&setup, &alerts);
    let pc = setup.pcs[0].clone();
    let token = setup.token("lab", &["--expires", "1h", "--max-uses", "5"]);
    let stolen = the_pc_enrolls(&setup, &pc, "stolen", &token);

    let said = setup.collector(&["agents", "revoke", &stolen, "--reason", "laptop stolen"]);
    assert!(
        said.contains(&format!(
            "bootstrap token {} is revoked too",
            token_id(&token)
        )),
        "agents revoke says the token went with it: {said}"
    );
    let listed = setup.tokens();
    let row = listed
        .iter()
        .find(|t| t["token_id"] == token_id(&token))
        .expect("the token is listed");
    assert_eq!(row["status"], "revoked", "{row}");

    // The thief wipes the PC's identity and enrolls with the kept token.
    let config = setup.agent_config(&pc, "stolen-again", None);
    let out = setup.enroll(&pc, &config, &token);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("revoked"),
        "the kept token no longer enrolls:\n{}",
        text(&out)
    );

    // With another token it gets in, and the collector flags it.
    let other = setup.token("lab", &["--expires", "1h", "--max-uses", "1"]);
    let returned = the_pc_enrolls(&setup, &pc, "returned", &other);
    let line = setup.collector_line(
        &["a revoked PC's hostname enrolled again", &stolen, &returned],
        Duration::from_secs(10),
    );
    assert!(line.contains(token_id(&other)), "{line}");
    let from_pc = setup.uplinks[0].host_ip.to_string();
    let back = the_alert(&webhook, &[&returned], Duration::from_secs(30));
    let back: serde_json::Value = serde_json::from_str(&back).expect("the webhook gets JSON");
    assert_eq!(back["event"], "revoked_pc_returned", "{back}");
    let r = &back["return"];
    assert_eq!(r["matched"], serde_json::json!(["hostname"]), "{back}");
    assert_eq!(r["outcome"], "enrolled", "{back}");
    assert_eq!(r["agent_id"], returned.as_str(), "{back}");
    assert_eq!(r["revoked_agent"]["id"], stolen.as_str(), "{back}");
    assert_eq!(r["revoked_agent"]["reason"], "laptop stolen", "{back}");
    assert_eq!(r["token_id"], token_id(&other), "{back}");
    assert_eq!(r["remote"], from_pc.as_str(), "{back}");
    assert_eq!(
        r["claimed_hostname"], r["revoked_agent"]["hostname"],
        "{back}"
    );
    let said = back["text"].as_str().expect("a text");
    assert!(
        said.contains(&format!("doorwatch-collector agents revoke {returned}"))
            && said.contains(&format!("also revokes token {}", token_id(&other))),
        "the alert says what to do: {said}"
    );
    let logged = the_alert(
        &syslog,
        &["revoked-pc-returned", &stolen, &returned, token_id(&other)],
        Duration::from_secs(10),
    );
    assert!(logged.contains(&format!("cs5={from_pc}")), "{logged}");

    // "Or key": a crafted request with the stolen PC's own key, and a
    // token the thief got hold of, is refused, and the channels say so.
    let third = setup.token("lab", &["--expires", "1h", "--max-uses", "1"]);
    let csr = signing_request(&setup.home("stolen").join("agent.key"));
    let refused = runtime().block_on(async {
        EnrollmentClient::new(setup.channel(&setup.anonymous_tls()).await)
            .enroll(enroll_request(&third, csr))
            .await
    });
    let status = refused.expect_err("a revoked agent's key does not enroll");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains(&stolen), "{status:?}");
    let key = the_alert(&webhook, &[token_id(&third)], Duration::from_secs(30));
    let key: serde_json::Value = serde_json::from_str(&key).expect("JSON");
    assert_eq!(
        key["return"]["matched"],
        serde_json::json!(["key"]),
        "{key}"
    );
    assert_eq!(key["return"]["outcome"], "refused", "{key}");
    assert_eq!(key["return"]["agent_id"], serde_json::Value::Null, "{key}");
    assert_eq!(
        key["return"]["revoked_agent"]["id"],
        stolen.as_str(),
        "{key}"
    );
    assert_eq!(key["return"]["claimed_hostname"], "e2e-client", "{key}");
    assert!(
        key["text"].as_str().is_some_and(|t| t.contains(&format!(
            "doorwatch-collector token revoke {}",
            token_id(&third)
        ))),
        "{key}"
    );
    the_alert(
        &syslog,
        &["revoked-pc-returned", &stolen, token_id(&third)],
        Duration::from_secs(10),
    );
    each_return_is_recorded_once_per_channel(&setup);

    // Restarted, with the other collector gone, the collector takes over
    // alerting and sends neither again: the record is the memory.
    drop(second);
    setup.stack.stop_collector();
    setup.stack.restart_collector("collector-2");
    let holds = setup.collector_line(
        &["lease holder changed", "alerts", "held=true"],
        Duration::from_secs(40),
    );
    eprintln!("restarted: {holds}");
    std::thread::sleep(Duration::from_secs(4));
    for (needle, what) in [(returned.as_str(), "hostname"), (token_id(&third), "key")] {
        assert_eq!(
            mentioning(&webhook, needle).len(),
            1,
            "one webhook alert for the {what} return, across two collectors and a restart"
        );
        assert_eq!(
            mentioning(&syslog, needle).len(),
            1,
            "one syslog alert for the {what} return"
        );
    }
    each_return_is_recorded_once_per_channel(&setup);
}

/// A second collector on the stack's database, alerting to the same
/// channels (`alerts` is its `[alerts]` table).
fn a_second_collector_alerting(setup: &Setup, alerts: &str) -> Process {
    let dir = setup.stack.dir.path().join("second");
    std::fs::create_dir_all(&dir).expect("second collector's folder");
    let config = stack::collector_config(
        &dir,
        SocketAddr::new(setup.stack.collector_address.ip(), free_port()),
        &setup.stack.pki,
        &setup.stack.clickhouse,
        "doorwatch",
        &format!(
            "{}{alerts}",
            stack::enrollment_table(&setup.stack.pki, "30d")
        ),
    );
    stack::start_collector_named(&dir, &config, "collector-b")
}

/// Waits up to `timeout` for exactly one entry of `received` to hold all
/// of `needles`, then returns it.
fn the_alert(received: &Received, needles: &[&str], timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let found: Vec<String> = mentioning(received, needles[0])
            .into_iter()
            .filter(|e| needles.iter().all(|n| e.contains(n)))
            .collect();
        match &found[..] {
            [one] => return one.clone(),
            [] if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(200)),
            _ => panic!(
                "{} alerts holding {needles:?} within {timeout:?}, not one: {found:#?}",
                found.len()
            ),
        }
    }
}

/// Two returns (by hostname, by key), each recorded as sent on each
/// channel, once.
fn each_return_is_recorded_once_per_channel(setup: &Setup) {
    let sql = "SELECT channel, status, count() FROM doorwatch.alerts \
               WHERE subject = 'revoked_pc_returned' \
               GROUP BY campaign_id, channel, status ORDER BY channel, status \
               FORMAT TSV";
    let want = "syslog\tsent\t1\nsyslog\tsent\t1\nwebhook\tsent\t1\nwebhook\tsent\t1";
    let got = setup
        .stack
        .clickhouse
        .poll(sql, Duration::from_secs(10), |r| r.trim() == want);
    assert_eq!(got.trim(), want, "every return alert is recorded once");
}

/// `pc` enrolls as agent folder `name` with `token`; returns the new
/// agent's id.
fn the_pc_enrolls(setup: &Setup, pc: &Host, name: &str, token: &str) -> String {
    let before: Vec<String> = setup
        .agents()
        .iter()
        .filter_map(|a| a["agent_id"].as_str().map(str::to_owned))
        .collect();
    let config = setup.agent_config(pc, name, None);
    let out = setup.enroll(pc, &config, token);
    assert!(out.status.success(), "{name} enrolls:\n{}", text(&out));
    setup
        .agents()
        .iter()
        .filter_map(|a| a["agent_id"].as_str().map(str::to_owned))
        .find(|id| !before.contains(id))
        .expect("a new agent is listed")
}

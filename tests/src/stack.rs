//! The doorwatch pieces on top of a campus: PKI, collector and agents as
//! real processes with generated configuration files.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::clickhouse::ClickHouse;
use crate::netns::Host;
use crate::process::{Process, run};
use crate::require;

/// TLS name every test collector certificate carries.
pub const COLLECTOR_NAME: &str = "collector.doorwatch.test";

/// Creates a dev PKI in `DIR/pki` whose collector certificate is valid for
/// [`COLLECTOR_NAME`] and `ips`.
pub fn pki_init(dir: &Path, ips: &[IpAddr]) -> PathBuf {
    let pki = dir.join("pki");
    let mut c = Command::new(require::binary("doorwatch-collector"));
    c.args(["pki", "init", "--dir"])
        .arg(&pki)
        .args(["--name", COLLECTOR_NAME]);
    for ip in ips {
        c.args(["--ip", &ip.to_string()]);
    }
    run(&mut c);
    pki
}

/// Issues a client certificate for agent `name`.
pub fn issue_agent(pki: &Path, name: &str) {
    run(Command::new(require::binary("doorwatch-collector"))
        .args(["pki", "issue-agent", "--dir"])
        .arg(pki)
        .args(["--name", name]));
}

/// Writes a collector.toml into `dir` and returns its path. `extra` holds
/// further tables (see [`enrollment_table`]).
pub fn collector_config(
    dir: &Path,
    listen: SocketAddr,
    pki: &Path,
    clickhouse: &ClickHouse,
    database: &str,
    extra: &str,
) -> PathBuf {
    let path = dir.join("collector.toml");
    let text = format!(
        r#"[listen]
address = "{listen}"
[tls]
client_ca = "{pki}/ca.pem"
server_cert = "{pki}/collector.pem"
server_key = "{pki}/collector.key"
[clickhouse]
url = "{url}"
database = "{database}"
{extra}
"#,
        pki = pki.display(),
        url = clickhouse.url(),
    );
    std::fs::write(&path, text).expect("write collector.toml");
    path
}

/// An `[enrollment]` table that turns enrollment on with the issuing CA in
/// `pki`, certificates living `lifetime` (e.g. "30d", "90s"), and the
/// revocation list read every second.
pub fn enrollment_table(pki: &Path, lifetime: &str) -> String {
    format!(
        r#"[enrollment]
issuing_cert = "{pki}/issuing.pem"
issuing_key = "{pki}/issuing.key"
certificate_lifetime = "{lifetime}"
revocation_check_seconds = 1
"#,
        pki = pki.display()
    )
}

/// Starts the collector and waits until it accepts agents.
pub fn start_collector(dir: &Path, config: &Path) -> Process {
    start_collector_named(dir, config, "collector")
}

/// [`start_collector`], logging to `DIR/NAME.log` (a restarted collector
/// gets a new name, so the earlier log stays for inspection).
pub fn start_collector_named(dir: &Path, config: &Path, name: &str) -> Process {
    let mut command = Command::new(require::binary("doorwatch-collector"));
    command
        .args([
            "--log-level",
            "info,doorwatch_collector=debug",
            "serve",
            "--config",
        ])
        .arg(config);
    let mut process = Process::spawn(name, command, dir).expect("start collector");
    process.wait_for_log("accepting agents", Duration::from_secs(60));
    process
}

/// Writes an agent.toml for `host`, reporting to `collector`, with its
/// spool in `DIR/NAME-spool`. `delivery` holds extra lines for the
/// `[delivery]` table; `extra` whole further tables.
pub fn agent_config(
    dir: &Path,
    host: &Host,
    collector: SocketAddr,
    pki: &Path,
    name: &str,
    delivery: &str,
    extra: &str,
) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let local: Vec<String> = host.ips.iter().map(|ip| format!("\"{ip}\"")).collect();
    let text = format!(
        r#"interface = "{interface}"
local_ips = [{local}]
[collector]
address = "{collector}"
server_name = "{COLLECTOR_NAME}"
ca = "{pki}/ca.pem"
cert = "{pki}/agents/{name}.pem"
key = "{pki}/agents/{name}.key"
[delivery]
spool_dir = "{spool}"
{delivery}
{extra}
"#,
        spool = dir.join(format!("{name}-spool")).display(),
        interface = host.interface,
        local = local.join(", "),
        pki = pki.display(),
    );
    std::fs::write(&path, text).expect("write agent.toml");
    path
}

/// Starts an agent inside `host`'s namespace.
pub fn start_agent(dir: &Path, host: &Host, config: &Path, name: &str) -> Process {
    let mut command = host.command(require::binary("doorwatch-agent"));
    command
        .args([
            "--log-level",
            "info,doorwatch_agent=debug",
            "run",
            "--config",
        ])
        .arg(config);
    Process::spawn(name, command, dir).expect("start agent")
}

/// A ready stack: ClickHouse, PKI, collector on `uplink`'s root side.
#[derive(Debug)]
pub struct Stack {
    // Fields drop in order: processes first, the folder holding their data
    // and logs last.
    pub collector: Option<Process>,
    pub clickhouse: ClickHouse,
    pub pki: PathBuf,
    pub collector_config: PathBuf,
    pub collector_address: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Starts ClickHouse and a collector listening on `listen_ip` (the
    /// root side of an uplink, or loopback).
    pub fn start(listen_ip: IpAddr) -> Self {
        Self::start_with(listen_ip, |_| String::new())
    }

    /// [`Stack::start`] with further collector.toml tables, made from the
    /// PKI folder (e.g. `|pki| enrollment_table(pki, "30d")`).
    pub fn start_with(listen_ip: IpAddr, extra: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("doorwatch-e2e-")
            .tempdir()
            .expect("temp dir");
        let clickhouse = ClickHouse::start(&dir.path().join("clickhouse"), dir.path());
        let pki = pki_init(dir.path(), &[listen_ip]);
        let collector_address = SocketAddr::new(listen_ip, crate::process::free_port());
        let collector_config = collector_config(
            dir.path(),
            collector_address,
            &pki,
            &clickhouse,
            "doorwatch",
            &extra(&pki),
        );
        let collector = Some(start_collector(dir.path(), &collector_config));
        Self {
            dir,
            clickhouse,
            pki,
            collector_config,
            collector_address,
            collector,
        }
    }

    /// Stops the collector (SIGTERM, 10 s grace) if it runs.
    pub fn stop_collector(&mut self) {
        if let Some(mut collector) = self.collector.take() {
            collector.stop(Duration::from_secs(10));
        }
    }

    /// Starts the collector again with the stack's config, logging to
    /// `DIR/NAME.log`.
    pub fn restart_collector(&mut self, name: &str) {
        self.collector = Some(start_collector_named(
            self.dir.path(),
            &self.collector_config,
            name,
        ));
    }

    /// Issues a certificate and starts an agent for `host`; `delivery` holds
    /// extra lines for its `[delivery]` table.
    pub fn agent(&self, host: &Host, name: &str, delivery: &str) -> Process {
        issue_agent(&self.pki, name);
        let config = agent_config(
            self.dir.path(),
            host,
            self.collector_address,
            &self.pki,
            name,
            delivery,
            "",
        );
        start_agent(self.dir.path(), host, &config, name)
    }

    /// `doorwatch-collector events --format json --since …`, parsed.
    pub fn events_json(&self, since: &str) -> Vec<serde_json::Value> {
        let out = run(Command::new(require::binary("doorwatch-collector"))
            .args(["events", "--format", "json", "--since", since, "--config"])
            .arg(&self.collector_config));
        out.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"))
            })
            .collect()
    }
}

impl Drop for Stack {
    /// A failed test keeps its folder (logs, configs, ClickHouse data) for
    /// inspection and says where it is.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(placeholder) = tempfile::tempdir() else {
            return;
        };
        let dir = std::mem::replace(&mut self.dir, placeholder);
        eprintln!("test files kept in {}", dir.keep().display());
    }
}

/// For capture benchmarks: an agent in `host` with its own PKI in `dir`
/// and no collector (it captures, detects and spools while retrying the
/// uplink), and `tcpdump -s 256 -w /dev/null` on the same interface.
/// Returns (agent, tcpdump), both capturing.
pub fn offline_agent_and_tcpdump(dir: &Path, host: &Host) -> (Process, Process) {
    let pki = pki_init(dir, &["127.0.0.1".parse().expect("literal")]);
    issue_agent(&pki, "bench-pc");
    let unreachable: SocketAddr = "127.0.0.1:9".parse().expect("literal");
    let config = agent_config(dir, host, unreachable, &pki, "bench-pc", "", "");
    let mut agent = start_agent(dir, host, &config, "bench-pc");
    agent.wait_for_log("agent starting", Duration::from_secs(10));
    let mut command = host.command(require::tool("tcpdump", "tcpdump"));
    command.args(["-i", &host.interface, "-s", "256", "-w", "/dev/null"]);
    let mut tcpdump = Process::spawn("tcpdump", command, dir).expect("start tcpdump");
    tcpdump.wait_for_log("listening on", Duration::from_secs(10));
    (agent, tcpdump)
}

/// The number after `name=` in the last `name=N` of `log` (a tracing
/// key-value), or 0.
pub fn log_field(log: &str, name: &str) -> u64 {
    log.split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix(&format!("{name}="))?.parse().ok())
        .unwrap_or(0)
}

//! `doorwatch-agent`: the command-line entry point. `run` wires capture (its
//! own OS thread), detection and the uplink (async) together; `replay`
//! runs the same detector over a capture file.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use doorwatch_agent::capture::Capture;
use doorwatch_agent::config::{AgentConfig, ValidConfig};
use doorwatch_agent::detect::{Detector, DetectorConfig, EpisodeReport, EpisodeState, Report};
use doorwatch_agent::enroll::{self, Claims, IdentityFiles, Renewal};
use doorwatch_agent::events::{self, EventBuilder};
use doorwatch_agent::outbound::{Baseline, Monitor, OutboundReport, ProcessRate, inventory};
use doorwatch_agent::spool::Spool;
use doorwatch_agent::status::{self, Status};
use doorwatch_agent::tls::ClientTls;
use doorwatch_agent::uplink::{Backoff, Counters, Uplink};
use doorwatch_agent::{decode, explain, pcap, state_file};
use doorwatch_agent::{procfs, sockets};
use doorwatch_proto::v1;
use tokio::sync::{mpsc, oneshot, watch};

/// Watches this PC's network interface for port scans against it and for
/// suspicious traffic from it (big uploads, scanning, spam), names the
/// program responsible, and reports to the campus doorwatch collector over
/// mutual TLS.
///
/// Needs the CAP_NET_RAW capability (not full root). Typical use:
///   doorwatch-agent check-config --config /etc/doorwatch/agent.toml
///   doorwatch-agent run --config /etc/doorwatch/agent.toml
/// With collector.token in agent.toml, `run` enrolls by itself on first
/// start. To enroll by hand instead (once per PC):
///   doorwatch-agent enroll --collector collector.campus.example:4443 --token dwt1-...
/// Help desk, on the PC (as root):
///   doorwatch-agent status        what the agent saw recently, in plain words
///   doorwatch-agent top           live upload and download rates per program
/// Offline analysis of a capture file:
///   doorwatch-agent replay --pcap scan.pcap --local-ip 192.0.2.10
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter, e.g. "info" or "doorwatch_agent=debug".
    /// The RUST_LOG environment variable overrides it.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture, detect and report until SIGTERM or Ctrl-C.
    Run {
        /// Path to agent.toml.
        #[arg(long, default_value = "/etc/doorwatch/agent.toml")]
        config: PathBuf,
    },
    /// Get this PC's identity: make a key pair (kept on this PC, mode
    /// 0600), send a signing request with the bootstrap token, and write the
    /// certificate the collector returns. Files go where agent.toml's
    /// [collector] cert and key say. Enrolling again makes a new agent.
    Enroll {
        /// Path to agent.toml (for the cert, key and CA file locations).
        #[arg(long, default_value = "/etc/doorwatch/agent.toml")]
        config: PathBuf,
        /// Collector host:port (default: collector.address from agent.toml).
        #[arg(long)]
        collector: Option<String>,
        /// Bootstrap token from `doorwatch-collector token create`
        /// (default: collector.token from agent.toml).
        #[arg(long)]
        token: Option<String>,
        /// CA bundle the collector's certificate must chain to (default:
        /// collector.ca from agent.toml).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Check a configuration file and the files it names, then exit.
    CheckConfig {
        /// Path to agent.toml.
        #[arg(long, default_value = "/etc/doorwatch/agent.toml")]
        config: PathBuf,
    },
    /// Show, refreshed every second, which programs on this PC send and
    /// receive how much, and to where (like bandwhich). Run it as root: it
    /// captures packets and reads other users' processes. Ctrl-C ends it.
    Top {
        /// Path to agent.toml (for the interface and this PC's addresses).
        #[arg(long, default_value = "/etc/doorwatch/agent.toml")]
        config: PathBuf,
        /// Measure for --seconds, print once and exit (for scripts).
        #[arg(long)]
        once: bool,
        /// With --once: how long to measure.
        #[arg(long, default_value_t = 6)]
        seconds: u64,
        /// table for people, json for scripts (one array).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Tell, in plain words, what the running agent saw recently: scans
    /// of this PC, suspicious traffic from it, risky open ports.
    Status {
        /// Path to agent.toml (the status file sits next to the spool).
        #[arg(long, default_value = "/etc/doorwatch/agent.toml")]
        config: PathBuf,
    },
    /// Run the detector over a pcap file, using the capture's timestamps.
    Replay {
        /// Capture file (classic pcap, Ethernet).
        #[arg(long)]
        pcap: PathBuf,
        /// This PC's address in the capture (repeatable).
        #[arg(long = "local-ip", required = true)]
        local_ips: Vec<IpAddr>,
        /// table for people, json for scripts (one object per line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Run { config } => run(load_config(&config)?),
        Command::Top {
            config,
            once,
            seconds,
            format,
        } => top(&load_config(&config)?, once.then_some(seconds), format),
        Command::Status { config } => {
            let config = load_config(&config)?;
            let path = status::path_for(&config.spool_dir);
            let status = Status::read(&path).with_context(|| {
                format!(
                    "cannot read {}; is the agent running (doorwatch-agent run)?",
                    path.display()
                )
            })?;
            print!("{}", status.describe(unix_ms()));
            Ok(())
        }
        Command::Enroll {
            config,
            collector,
            token,
            ca,
        } => enroll_once(load_config(&config)?, collector, token, ca),
        Command::CheckConfig { config } => {
            let valid = load_config(&config)?;
            if valid.token.is_some() && !valid.cert.exists() {
                doorwatch_tls::load_roots(&valid.ca)
                    .context("the CA bundle named in collector.ca does not work")?;
                println!(
                    "{}: ok (enrolls with its token on first start)",
                    config.display()
                );
                return Ok(());
            }
            ClientTls::load(&valid.ca, &valid.cert, &valid.key, &valid.server_name)
                .context("the TLS files named in [collector] do not work")?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Replay {
            pcap,
            local_ips,
            format,
        } => replay(&pcap, local_ips, format),
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour only for people at a terminal; journald and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(path: &std::path::Path) -> anyhow::Result<ValidConfig> {
    AgentConfig::load(path)
        .and_then(AgentConfig::validate)
        .with_context(|| format!("invalid configuration {}", path.display()))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What this PC says about itself when enrolling.
fn claims() -> Claims {
    Claims {
        hostname: hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        os: std::env::consts::OS.to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

fn identity_files(config: &ValidConfig) -> IdentityFiles {
    IdentityFiles {
        cert: config.cert.clone(),
        key: config.key.clone(),
        ca: config.ca.clone(),
        address: config.collector_address.clone(),
        server_name: config.server_name.clone(),
    }
}

fn enroll_once(
    config: ValidConfig,
    collector: Option<String>,
    token: Option<String>,
    ca: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut files = identity_files(&config);
    if let Some(address) = collector {
        // Accept a URL as well as host:port.
        let address = address
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let host = address
            .rsplit_once(':')
            .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
            .with_context(|| format!("--collector {address:?} is not host:port"))?;
        files.server_name = host.to_owned();
        files.address = address;
    }
    if let Some(ca) = ca {
        files.ca = ca;
    }
    let token = token
        .or_else(|| config.token.as_ref().map(|t| t.expose().to_owned()))
        .context("no token: pass --token or set collector.token in agent.toml")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let enrolled = runtime
        .block_on(enroll::enroll(&files, &token, &claims()))
        .with_context(|| format!("enrollment with {} failed", files.address))?;
    tracing::info!(agent_id = %enrolled.agent_id, group = %enrolled.group, "enrolled");
    println!(
        "enrolled as agent {} (group {})",
        enrolled.agent_id, enrolled.group
    );
    println!("certificate: {}", files.cert.display());
    println!("key (0600):  {}", files.key.display());
    Ok(())
}

/// Makes sure a usable certificate is in place before the agent starts:
/// enrolls with the configured token when there is none yet, when it has
/// expired, or when it does not fit the key. Waits out an unreachable
/// collector; a refusal (bad token, say) stops the agent with the reason.
async fn ensure_identity(config: &ValidConfig) -> anyhow::Result<()> {
    let problem = match enroll::validity(&config.cert) {
        Ok(validity) if validity.expired(SystemTime::now()) => Some(format!(
            "the certificate {} expired at {}",
            config.cert.display(),
            rfc3339(unix_ms_of(validity.not_after))
        )),
        Ok(_) => ClientTls::load(&config.ca, &config.cert, &config.key, &config.server_name)
            .err()
            .map(|e| format!("the certificate and key do not work: {e}")),
        Err(_) if !config.cert.exists() => {
            Some(format!("no certificate at {} yet", config.cert.display()))
        }
        Err(e) => return Err(e).context("cannot read the agent certificate"),
    };
    let Some(problem) = problem else {
        return Ok(());
    };
    let Some(token) = &config.token else {
        bail!(
            "{problem}; set collector.token in the configuration or run `doorwatch-agent enroll --token ...`"
        );
    };
    tracing::info!(reason = %problem, collector = %config.collector_address, "enrolling with the configured token");
    let files = identity_files(config);
    let mut backoff = Backoff::new();
    loop {
        match enroll::enroll(&files, token.expose(), &claims()).await {
            Ok(enrolled) => {
                tracing::info!(agent_id = %enrolled.agent_id, group = %enrolled.group, "enrolled");
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay(&mut rand::rng());
                tracing::warn!(error = %e, retry_in = ?delay, "cannot enroll yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wait_for_signal() => bail!("stopped before enrolling"),
                }
            }
            Err(e) => return Err(e).context("enrollment refused"),
        }
    }
}

fn unix_ms_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn run(config: ValidConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(ensure_identity(&config))?;
    let tls = ClientTls::load(&config.ca, &config.cert, &config.key, &config.server_name)
        .context("cannot load the agent's TLS files")?;
    let renewal = Renewal::new(identity_files(&config), claims(), config.token.clone())
        .context("cannot read the agent certificate")?;
    let capture = Capture::open(&config.interface)?;
    let (spool, recovery) = Spool::open(&config.spool_dir, config.spool_max_bytes)
        .with_context(|| format!("cannot open the spool in {}", config.spool_dir.display()))?;
    tracing::info!(
        dir = %config.spool_dir.display(),
        unacknowledged_batches = recovery.batches,
        torn_bytes_cut = recovery.truncated_bytes,
        quarantined = recovery.quarantined.len(),
        "spool opened"
    );
    for path in &recovery.quarantined {
        tracing::error!(path = %path.display(), "corrupt spool segment quarantined; its events are lost");
    }
    let local_ips = if config.local_ips.is_empty() {
        capture.interface_ips()
    } else {
        config.local_ips.clone()
    };
    if local_ips.is_empty() {
        bail!(
            "interface {} has no IP addresses; set local_ips in the configuration",
            config.interface
        );
    }
    tracing::info!(interface = %config.interface, local_ips = ?local_ips, collector = %config.collector_address, "agent starting");

    let counters = Arc::new(Counters::default());
    let (event_tx, event_rx) = mpsc::channel(4096);
    let (policy_tx, policy_rx) = watch::channel(None);
    let stop = Arc::new(AtomicBool::new(false));
    let (failed_tx, failed_rx) = oneshot::channel();

    let claims = claims();
    let hello = v1::Hello {
        protocol_version: doorwatch_proto::PROTOCOL_VERSION,
        agent_version: claims.agent_version.clone(),
        hostname: claims.hostname.clone(),
        os: claims.os.clone(),
        local_ips: local_ips.iter().map(|&ip| events::ip_bytes(ip)).collect(),
    };
    let uplink = Uplink::new(
        tls,
        config.collector_address.clone(),
        hello,
        config.heartbeat,
        event_rx,
        spool,
        policy_tx,
        counters.clone(),
    )
    .with_renewal(renewal);
    let uplink = runtime.spawn(uplink.run());

    let capture_thread = {
        let outbound = config.outbound.clone().map(|c| {
            OutboundLoop::new(
                Monitor::new(c, local_ips.clone()),
                config.inventory_every,
                state_file::beside_spool(&config.spool_dir, "baseline.json"),
            )
        });
        let detector = Detector::new(config.detector.clone(), local_ips);
        let status = Status {
            started_ms: unix_ms(),
            interface: config.interface.clone(),
            ..Status::default()
        };
        let loop_state = CaptureLoop {
            capture,
            detector,
            outbound,
            status,
            status_path: status::path_for(&config.spool_dir),
            status_written_ms: 0,
            exposed_episodes: HashSet::new(),
            base: config.detector.clone(),
            builder: EventBuilder::default(),
            events: event_tx,
            policy: policy_rx,
            counters,
            stop: stop.clone(),
        };
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                if let Err(e) = loop_state.run() {
                    let _ = failed_tx.send(e);
                }
            })
            .context("cannot start the capture thread")?
    };

    let failure = runtime.block_on(async {
        tokio::select! {
            _ = wait_for_signal() => None,
            failed = failed_rx => failed.ok(),
        }
    });
    stop.store(true, Ordering::Relaxed);
    if capture_thread.join().is_err() {
        tracing::error!("capture thread panicked");
    }
    // Give delivery a moment to send the closing reports.
    if runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), uplink).await })
        .is_err()
    {
        tracing::warn!("stopping with undelivered events");
    }
    match failure {
        Some(e) => Err(e).context("capture stopped"),
        None => {
            tracing::info!("agent stopped");
            Ok(())
        }
    }
}

/// The capture thread: read, decode, detect, hand events to the uplink.
struct CaptureLoop {
    capture: Capture,
    detector: Detector,
    /// Outbound accounting and anomalies; `None` when turned off.
    outbound: Option<OutboundLoop>,
    /// What `doorwatch-agent status` shows, written every few seconds.
    status: Status,
    status_path: PathBuf,
    status_written_ms: u64,
    /// Scan episodes already told to have reached a risky exposure.
    exposed_episodes: HashSet<u64>,
    /// The configured thresholds; a pushed policy overrides them.
    base: DetectorConfig,
    builder: EventBuilder,
    events: mpsc::Sender<v1::Event>,
    policy: watch::Receiver<Option<v1::Policy>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

/// How often timers run in the detector.
const TICK_MS: u64 = 200;

impl CaptureLoop {
    fn run(mut self) -> Result<(), anyhow::Error> {
        let mut last_tick = unix_ms();
        let mut packets = 0u64;
        let mut decode_errors = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let detector = &mut self.detector;
            let mut monitor = self.outbound.as_mut().map(|o| &mut o.monitor);
            self.capture.next_frames(&mut |frame, captured_ms| {
                packets += 1;
                match decode::ethernet(frame) {
                    Ok(Some(packet)) => {
                        detector.observe(&packet, captured_ms);
                        if let Some(m) = monitor.as_mut() {
                            m.observe(&packet, captured_ms);
                        }
                    }
                    Ok(None) => {}
                    Err(_) => decode_errors += 1,
                }
            })?;
            let now = unix_ms();
            if now.saturating_sub(last_tick) >= TICK_MS {
                last_tick = now;
                self.flush_counters(packets, decode_errors);
                (packets, decode_errors) = (0, 0);
                self.apply_policy();
                self.detector.tick(now);
                self.forward(now);
                self.outbound_tick(now);
                self.write_status(now, false);
            }
        }
        self.flush_counters(packets, decode_errors);
        self.detector.finish();
        self.forward(unix_ms());
        if let Some(o) = self.outbound.as_mut() {
            o.monitor.finish(unix_ms());
            o.save_baseline(unix_ms(), true);
        }
        self.outbound_tick(unix_ms());
        self.write_status(unix_ms(), true);
        let stats = self.detector.stats();
        tracing::info!(
            packets_seen = self.counters.packets_seen.load(Ordering::Relaxed),
            kernel_drops = self.counters.kernel_drops.load(Ordering::Relaxed),
            decode_errors = self.counters.decode_errors.load(Ordering::Relaxed),
            probation_evictions = stats.probation_evictions,
            tracked_evictions = stats.tracked_evictions,
            "capture stopped"
        );
        Ok(())
    }

    fn apply_policy(&mut self) {
        if !self.policy.has_changed().unwrap_or(false) {
            return;
        }
        let Some(policy) = self.policy.borrow_and_update().clone() else {
            return;
        };
        let mut config = self.base.clone();
        if policy.scan_min_ports > 0 {
            config.scan_min_ports = policy.scan_min_ports;
            config.blind_min_ports = config.blind_min_ports.max(policy.scan_min_ports);
        }
        if policy.episode_idle_seconds > 0 {
            config.episode_idle_ms = u64::from(policy.episode_idle_seconds) * 1000;
        }
        for bytes in &policy.allowlisted_sources {
            if let Ok(v4) = <[u8; 4]>::try_from(bytes.as_slice()) {
                config.allowlist.insert(IpAddr::from(v4));
            } else if let Ok(v6) = <[u8; 16]>::try_from(bytes.as_slice()) {
                config.allowlist.insert(IpAddr::from(v6));
            }
        }
        self.detector.set_config(config);
        self.counters
            .policy_version
            .store(policy.version, Ordering::Relaxed);
        tracing::info!(version = policy.version, "applied policy");
    }

    /// Adds the capture thread's local counts to the shared counters.
    fn flush_counters(&self, packets: u64, decode_errors: u64) {
        let c = &self.counters;
        c.packets_seen.fetch_add(packets, Ordering::Relaxed);
        c.decode_errors.fetch_add(decode_errors, Ordering::Relaxed);
        c.kernel_drops
            .fetch_add(self.capture.take_kernel_drops(), Ordering::Relaxed);
    }

    /// Writes the status file every 5 s (or now, if `force`).
    fn write_status(&mut self, now: u64, force: bool) {
        if !force && now.saturating_sub(self.status_written_ms) < 5_000 {
            return;
        }
        self.status_written_ms = now;
        let c = &self.counters;
        self.status.updated_ms = now;
        self.status.packets_seen = c.packets_seen.load(Ordering::Relaxed);
        self.status.kernel_drops = c.kernel_drops.load(Ordering::Relaxed);
        self.status.events_created = c.events_created.load(Ordering::Relaxed);
        self.status.events_dropped = c.events_dropped.load(Ordering::Relaxed);
        if let Err(e) = self.status.write(&self.status_path) {
            tracing::debug!(error = %e, path = %self.status_path.display(), "cannot write the status file");
        }
    }

    /// Runs the outbound monitor's timers, reads procfs when it needs
    /// owners or the inventory is due, and hands its events on.
    fn outbound_tick(&mut self, now: u64) {
        let Some(o) = self.outbound.as_mut() else {
            return;
        };
        let mut events = o.tick(now);
        o.save_baseline(now, false);
        for risk in o.new_risks.drain(..) {
            self.status.record(now, "risky open port", &risk);
        }
        for report in o.monitor.drain_reports() {
            if let OutboundReport::Anomaly(a) = &report
                && a.state == EpisodeState::Detected
            {
                tracing::warn!(kind = ?a.kind, process = a.process.as_ref().map(|p| p.name.as_str()).unwrap_or("unknown"), explanation = %a.explanation, "outbound anomaly");
                self.status
                    .record(now, "suspicious traffic from this PC", &a.explanation);
            }
            events.push(self.builder.outbound_event(&report, now));
        }
        for event in events {
            self.counters.events_created.fetch_add(1, Ordering::Relaxed);
            if self.events.try_send(event).is_err() {
                self.counters.dropped(&self.counters.dropped_queue_full, 1);
                tracing::warn!("event queue full; dropped an event");
            }
        }
    }

    fn forward(&mut self, now: u64) {
        let reports: Vec<Report> = self.detector.drain_reports().collect();
        for mut report in reports {
            if let Report::Scan(scan) = &mut report {
                self.mark_exposures(scan, now);
            }
            match &report {
                Report::Scan(scan) if scan.state == EpisodeState::Detected => {
                    tracing::info!(scanner = %scan.scanner, target = %scan.target, kinds = ?scan.kinds, ports = scan.ports_probed, "scan detected");
                    self.status
                        .record(now, "scan of this PC", &scan.explanation);
                }
                Report::Flood(flood) if flood.state == EpisodeState::Detected => {
                    tracing::warn!(target = %flood.target, sources = flood.sources, "flood detected");
                    self.status
                        .record(now, "flood against this PC", &flood.explanation);
                }
                Report::Knocks(knocks) => {
                    tracing::debug!(
                        knocks = knocks.knocks.len(),
                        unlisted = knocks.unlisted,
                        "single tries at closed ports"
                    );
                }
                _ => {}
            }
            let event = self.builder.event(&report, now);
            self.counters.events_created.fetch_add(1, Ordering::Relaxed);
            if self.events.try_send(event).is_err() {
                self.counters.dropped(&self.counters.dropped_queue_full, 1);
                tracing::warn!("event queue full; dropped an event");
            }
        }
    }

    /// Names the risky exposures of this PC (from the listening-port
    /// inventory) that a scan found open, which makes the episode high
    /// severity, and tells the log and status file once per episode.
    fn mark_exposures(&mut self, scan: &mut EpisodeReport, now: u64) {
        let Some(listeners) = self.outbound.as_ref().and_then(|o| o.listeners.as_deref()) else {
            return;
        };
        scan.exposed = inventory::exposures(listeners, scan.target, &scan.open_ports);
        let closed = scan.state == EpisodeState::Closed;
        if scan.exposed.is_empty() {
            if closed {
                self.exposed_episodes.remove(&scan.episode);
            }
            return;
        }
        scan.explanation = explain::scan(scan);
        if closed {
            self.exposed_episodes.remove(&scan.episode);
        } else if self.exposed_episodes.insert(scan.episode) {
            let ports: Vec<u16> = scan.exposed.iter().map(|e| e.port).collect();
            tracing::warn!(scanner = %scan.scanner, target = %scan.target, ?ports, "scan reached a risky open port");
            self.status
                .record(now, "scan reached a risky open port", &scan.explanation);
        }
    }
}

fn replay(path: &std::path::Path, local_ips: Vec<IpAddr>, format: Format) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let reader = pcap::Reader::new(&bytes).with_context(|| format!("{}", path.display()))?;
    let mut detector = Detector::new(DetectorConfig::default(), local_ips);
    let mut last_tick = 0;
    let mut bad_frames = 0u64;
    let mut finals = Vec::new();
    let mut keep_finals = |detector: &mut Detector| {
        finals.extend(detector.drain_reports().filter(|r| match r {
            Report::Scan(s) => s.state == EpisodeState::Closed,
            Report::Flood(f) => f.state == EpisodeState::Closed,
            Report::Knocks(_) => true,
        }));
    };
    for record in reader {
        let record = record.with_context(|| format!("{}", path.display()))?;
        match decode::ethernet(record.data) {
            Ok(Some(packet)) => detector.observe(&packet, record.unix_ms),
            Ok(None) => {}
            Err(_) => bad_frames += 1,
        }
        if record.unix_ms.saturating_sub(last_tick) >= TICK_MS {
            last_tick = record.unix_ms;
            detector.tick(record.unix_ms);
            keep_finals(&mut detector);
        }
    }
    detector.finish();
    keep_finals(&mut detector);
    if bad_frames > 0 {
        tracing::warn!(bad_frames, "some frames could not be decoded");
    }
    for report in &finals {
        match format {
            Format::Json => println!("{}", replay_json(report)),
            Format::Table => match report {
                Report::Scan(s) => println!(
                    "scan  {} -> {}  [{}]  ports={} open={:?} probes={}\n      {}",
                    s.scanner,
                    s.target,
                    s.kinds
                        .iter()
                        .map(|k| k.label())
                        .collect::<Vec<_>>()
                        .join(","),
                    s.ports_probed,
                    s.open_ports,
                    s.probes,
                    s.explanation
                ),
                Report::Flood(f) => println!(
                    "flood -> {}  ports={:?} sources={}\n      {}",
                    f.target, f.ports, f.sources, f.explanation
                ),
                Report::Knocks(k) => println!(
                    "knocks  {} tries at closed ports (+{} unlisted)\n      {}",
                    k.knocks.len(),
                    k.unlisted,
                    k.explanation
                ),
            },
        }
    }
    Ok(())
}

fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// One line of `replay --format json`.
fn replay_json(report: &Report) -> serde_json::Value {
    match report {
        Report::Scan(s) => serde_json::json!({
            "kind": "scan",
            "scanner": s.scanner.to_string(),
            "target": s.target.to_string(),
            "scan_types": s.kinds.iter().map(|k| k.label()).collect::<Vec<_>>(),
            "ports_probed": s.ports_probed,
            "port_sample": s.port_sample,
            "open_ports": s.open_ports,
            "probes": s.probes,
            "first_seen": rfc3339(s.first_seen_ms),
            "last_seen": rfc3339(s.last_seen_ms),
            "companions": s.companions.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "fragmented": s.fragmented,
            "confidence": s.confidence,
            "explanation": s.explanation,
        }),
        Report::Flood(f) => serde_json::json!({
            "kind": "flood",
            "target": f.target.to_string(),
            "ports": f.ports,
            "sources": f.sources,
            "first_seen": rfc3339(f.first_seen_ms),
            "last_seen": rfc3339(f.last_seen_ms),
            "explanation": f.explanation,
        }),
        Report::Knocks(k) => serde_json::json!({
            "kind": "knocks",
            "knocks": k.knocks.iter().map(|k| serde_json::json!({
                "source": k.source.to_string(),
                "target": k.target.to_string(),
                "port": k.port,
                "protocol": if k.protocol == 17 { "udp" } else { "tcp" },
                "refused": k.refused,
                "probes": k.probes,
                "first_seen": rfc3339(k.first_seen_ms),
            })).collect::<Vec<_>>(),
            "unlisted": k.unlisted,
            "explanation": k.explanation,
        }),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The outbound monitor with its procfs reads: owners when it needs them
/// (at most twice a second), the listening ports every `inventory_every`.
struct OutboundLoop {
    monitor: Monitor,
    inventory_every: Duration,
    last_read_ms: u64,
    last_inventory_ms: u64,
    listeners: Option<Vec<inventory::Listener>>,
    last_error_ms: u64,
    /// Plain words about risky ports newly open, for the status file.
    new_risks: Vec<String>,
    /// Where the learned upload baseline is kept across restarts.
    baseline_path: PathBuf,
    baseline_saved: (u64, Baseline),
}

/// Least milliseconds between two procfs reads for owners.
const OWNER_READ_MS: u64 = 500;

impl OutboundLoop {
    /// Starts from the baseline saved at `baseline_path` by an earlier
    /// run, if there is a readable one.
    fn new(mut monitor: Monitor, inventory_every: Duration, baseline_path: PathBuf) -> Self {
        match state_file::read::<Baseline>(&baseline_path) {
            Ok(learned) => {
                let hours = learned.per_hour_of_day.iter().flatten().count();
                tracing::info!(path = %baseline_path.display(), hours_of_day = hours, "restored the upload baseline");
                monitor.restore_baseline(learned);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %baseline_path.display(), error = %e, "cannot read the saved upload baseline; learning it anew");
            }
        }
        Self {
            baseline_saved: (0, monitor.baseline()),
            monitor,
            inventory_every,
            last_read_ms: 0,
            last_inventory_ms: 0,
            listeners: None,
            last_error_ms: 0,
            new_risks: Vec::new(),
            baseline_path,
        }
    }

    /// Saves the baseline once a minute when it changed (or now, if
    /// `force`): a crash loses at most a minute of learning.
    fn save_baseline(&mut self, now: u64, force: bool) {
        if !force && now.saturating_sub(self.baseline_saved.0) < 60_000 {
            return;
        }
        let learned = self.monitor.baseline();
        if learned == self.baseline_saved.1 {
            return;
        }
        if let Err(e) = state_file::write(&self.baseline_path, &learned) {
            tracing::warn!(path = %self.baseline_path.display(), error = %e, "cannot save the upload baseline");
        }
        self.baseline_saved = (now, learned);
    }

    /// Advances the monitor; returns a listening-ports event if they changed.
    fn tick(&mut self, now: u64) -> Vec<v1::Event> {
        self.monitor.tick(now);
        let inventory_due =
            now.saturating_sub(self.last_inventory_ms) >= self.inventory_every.as_millis() as u64;
        let owners_due =
            self.monitor.needs_owners() && now.saturating_sub(self.last_read_ms) >= OWNER_READ_MS;
        if !inventory_due && !owners_due {
            return Vec::new();
        }
        self.last_read_ms = now;
        let snapshot = match sockets::read() {
            Ok(s) => s,
            Err(e) => {
                if now.saturating_sub(self.last_error_ms) >= 60_000 {
                    self.last_error_ms = now;
                    tracing::warn!(error = %e, "cannot read the socket owners; traffic is reported without its processes");
                }
                procfs::Snapshot::default()
            }
        };
        let (flows, owned) = self.monitor.attribute(&snapshot);
        tracing::debug!(
            sockets = snapshot.sockets.len(),
            processes = snapshot.owners.len(),
            new_flows = flows,
            owned,
            "read socket owners"
        );
        let mut events = Vec::new();
        if inventory_due {
            self.last_inventory_ms = now;
            let listeners = inventory::listeners(&snapshot);
            if self.listeners.as_ref() != Some(&listeners) {
                for l in listeners.iter().filter(|l| !l.risk.is_empty()) {
                    let was = self.listeners.as_ref().is_some_and(|old| {
                        old.iter()
                            .any(|o| o.port == l.port && o.protocol == l.protocol)
                    });
                    if !was {
                        let process = l
                            .process
                            .as_ref()
                            .map_or("an unknown program", |p| p.name.as_str());
                        tracing::warn!(port = l.port, process, risk = %l.risk, "risky listening port");
                        self.new_risks.push(format!(
                            "{process} opened port {} to the network: {}.",
                            l.port, l.risk
                        ));
                    }
                }
                events.push(events::listening_event(&listeners, now));
                self.listeners = Some(listeners);
            }
        }
        events
    }
}

/// `doorwatch-agent top`: live rates per program, or one measurement with
/// `once = Some(seconds)`.
fn top(config: &ValidConfig, once: Option<u64>, format: Format) -> anyhow::Result<()> {
    let mut capture = Capture::open(&config.interface)?;
    let local_ips = if config.local_ips.is_empty() {
        capture.interface_ips()
    } else {
        config.local_ips.clone()
    };
    let mut monitor = Monitor::new(config.outbound.clone().unwrap_or_default(), local_ips);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Ctrl-C ends the loop; a failure to install the handler only
        // means Ctrl-C kills the process the usual way.
        let _ = ctrlc_handler(move || stop.store(true, Ordering::Relaxed));
    }
    let started = unix_ms();
    let mut last_refresh = 0;
    while !stop.load(Ordering::Relaxed) {
        capture.next_frames(&mut |frame, captured_ms| {
            if let Ok(Some(packet)) = decode::ethernet(frame) {
                monitor.observe(&packet, captured_ms);
            }
        })?;
        let now = unix_ms();
        if now.saturating_sub(last_refresh) < 1_000 {
            continue;
        }
        last_refresh = now;
        monitor.tick(now);
        match sockets::read() {
            Ok(snapshot) => {
                monitor.attribute(&snapshot);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the socket owners"),
        }
        monitor.drain_reports().for_each(drop);
        let rates = monitor.rates(now);
        match once {
            Some(seconds) if now.saturating_sub(started) < seconds * 1000 => {}
            Some(_) => {
                print_rates(&rates, format)?;
                return Ok(());
            }
            None => {
                // Clear the terminal and draw from the top left.
                print!("\x1b[2J\x1b[H");
                println!(
                    "doorwatch top: {} (rates over the last 5 seconds; Ctrl-C quits)\n",
                    config.interface
                );
                print_rates(&rates, format)?;
            }
        }
    }
    Ok(())
}

fn print_rates(rates: &[ProcessRate], format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string(rates)?);
        return Ok(());
    }
    println!(
        "{:<20} {:>8} {:<10} {:>12} {:>12} {:>6}  TOP DESTINATION",
        "PROGRAM", "PID", "USER", "SENT/s", "RECEIVED/s", "FLOWS"
    );
    for r in rates {
        println!(
            "{:<20} {:>8} {:<10} {:>12} {:>12} {:>6}  {}",
            r.process,
            r.pid,
            r.user,
            explain::bytes(r.sent_per_sec),
            explain::bytes(r.received_per_sec),
            r.connections,
            r.top_destination
        );
    }
    Ok(())
}

/// Runs `f` on SIGINT or SIGTERM, from a small background runtime.
fn ctrlc_handler(f: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(wait_for_signal());
            f();
        })?;
    Ok(())
}

//! `doorwatch-loadgen`: many simulated agents against one running
//! collector, to size a deployment and to test delivery under faults.
//!
//! On the wire each simulated agent is a real one: its own client
//! certificate (issued in memory from the dev CA), its own mutual-TLS
//! connection and Session stream, Hello, event batches with increasing
//! seqs, heartbeats, cumulative Acks, reconnects with capped exponential
//! backoff and full jitter, and resends of every unacknowledged batch with
//! its original seq. Unlike a real agent it keeps unacknowledged batches in
//! memory instead of a spool. The events come from `doorwatch_e2e::mix`.
//!
//! It must stay lean: 10,000 idle agents are one task, one socket and a
//! few kilobytes each; nothing is allocated per agent before it is needed.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use doorwatch_agent::tls::{ClientTls, error_chain};
use doorwatch_collector::trust::identity::is_valid_agent_id;
use doorwatch_collector::trust::pki::AgentIssuer;
use doorwatch_e2e::mix::{AgentMix, agent_ipv4};
use doorwatch_proto::codec::LeanCodec;
use doorwatch_proto::v1::{self, AgentMessage, CollectorMessage, agent_message, collector_message};
use doorwatch_proto::{MAX_EVENTS_PER_BATCH, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use prost::Message as _;
use prost::bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustls::pki_types::ServerName;
use tokio::sync::{mpsc, watch};

/// The same allocator as the collector, so the generator spends its CPU on
/// generating rather than in glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// The Session RPC of `doorwatch.v1.AgentStream`.
const SESSION_PATH: &str = "/doorwatch.v1.AgentStream/Session";

/// Simulates many doorwatch agents (campus PCs) against a running
/// collector and reports how fast their events were stored and
/// acknowledged.
///
/// Every simulated agent gets its own client certificate, issued in memory
/// from the development CA in --pki, opens its own mutual-TLS connection,
/// and sends a realistic mix of scan and flood reports with Hello,
/// heartbeats, acknowledgements, reconnects and resends like a real agent.
/// Agent ids are PREFIX-00000, PREFIX-00001, ...
///
/// After --duration it stops generating, waits until every event is
/// acknowledged (at most --drain-timeout), closes the streams and prints a
/// report. Exit status 0 means every generated event was acknowledged;
/// 1 means some were not (the message says how many).
///
/// Sizing: the collector puts the batches of all agents into shared
/// INSERTs (see `[ingest]` in collector.toml), so the load on ClickHouse
/// follows events per second, not agents. Watch the ack latency and the
/// throttles in the report: they grow when the collector or ClickHouse
/// falls behind.
///
/// Examples:
///   # 10,000 idle PCs connecting over a minute: memory per agent
///   doorwatch-loadgen --collector 127.0.0.1:4443 --pki /etc/doorwatch/pki \
///       --agents 10000 --rate 0 --ramp 60 --duration 180
///   # 1,000 PCs sending 5,000 events/s in total for two minutes
///   doorwatch-loadgen --collector 127.0.0.1:4443 --pki ./pki \
///       --agents 1000 --rate 5000 --duration 120 --format json
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Collector address the agents connect to.
    #[arg(long, value_name = "HOST:PORT")]
    collector: String,
    /// Name the collector's certificate carries (agents check it).
    #[arg(long, value_name = "NAME", default_value = "collector.doorwatch.test")]
    server_name: String,
    /// Development PKI folder holding ca.pem and ca.key (made by
    /// `doorwatch-collector pki init`). Certificates are issued in memory;
    /// nothing is written there.
    #[arg(long, value_name = "DIR")]
    pki: PathBuf,
    /// Simulated agents, one connection each.
    #[arg(long, value_name = "N", default_value_t = 100)]
    agents: u32,
    /// Agent ids are PREFIX-00000, PREFIX-00001, ...
    #[arg(long, default_value = "loadgen")]
    prefix: String,
    /// Events per second across all agents; 0 keeps them idle (Hello and
    /// heartbeats only).
    #[arg(long, value_name = "EVENTS_PER_SEC", default_value_t = 100.0)]
    rate: f64,
    /// Most events in one batch.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=MAX_EVENTS_PER_BATCH as i64))]
    batch_max: u32,
    /// Each agent sends the events it has at least this often (ms).
    #[arg(long, value_name = "MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    flush_ms: u64,
    /// How long to generate events, counted from the start (includes
    /// --ramp), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    duration: u64,
    /// Spread the agents' first connects evenly over this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    ramp: u64,
    /// Seconds after every agent has connected before the steady-state
    /// rate starts counting (`acked_per_s_steady`): connecting 1,000 agents
    /// costs TLS handshakes that a sustained rate should not include.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    warmup: u64,
    /// After --duration, wait at most this long for outstanding
    /// acknowledgements (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    drain_timeout: u64,
    /// Seconds between heartbeats of each agent.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat: u64,
    /// Write every generated event id (hyphenated UUID, one per line) to
    /// FILE at the end, to check storage against.
    #[arg(long, value_name = "FILE")]
    ids_out: Option<PathBuf>,
    /// Final report: text for people, json (one line) for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Seed of the event mix (default: a random one, printed at start).
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    progress: u64,
    /// Log filter, e.g. "info" or "doorwatch_loadgen=debug" (debug logs
    /// every agent's reconnects). RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// First reconnect delay ceiling, and the largest.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// A session that lasted this long resets the backoff (an Ack does too).
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// With batches in flight and no Ack for this long, reconnect.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// TCP connect, TLS handshake, and the stream's response headers, each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a drained agent waits for the collector to end its stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued towards one stream (h2 flow control is behind it).
const SEND_QUEUE: usize = 8;
/// While a batch fills, due events are made at most this late, so their
/// timestamps stay close to when they were due without a wakeup per event.
const GENERATE_TICK: Duration = Duration::from_millis(100);
/// File descriptors the process needs besides one socket per agent.
const SPARE_FDS: u64 = 64;

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Generating events.
    Run,
    /// Not generating; delivering what is left.
    Drain,
    /// Giving up: agents return at once.
    Stop,
}

/// Counters every agent adds to.
#[derive(Debug, Default)]
struct Stats {
    started: AtomicU64,
    connected: AtomicU64,
    connected_peak: AtomicU64,
    /// Milliseconds from the start until every agent was connected once
    /// (0: not yet).
    all_connected_ms: AtomicU64,
    ever_connected: AtomicU64,
    generated: AtomicU64,
    acked: AtomicU64,
    batches_acked: AtomicU64,
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
    stream_errors: AtomicU64,
    resent_batches: AtomicU64,
    throttles: AtomicU64,
    invalid_argument: AtomicU64,
    refused_events: AtomicU64,
    setup_failures: AtomicU64,
}

impl Stats {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What every agent shares.
struct Shared {
    address: String,
    server_name: ServerName<'static>,
    roots: Arc<rustls::RootCertStore>,
    issuer: AgentIssuer,
    prefix: String,
    agents: u32,
    rate_per_agent: f64,
    batch_max: usize,
    flush: Duration,
    heartbeat: Duration,
    ramp: Duration,
    keep_ids: bool,
    seed: u64,
    started: Instant,
    stats: Stats,
}

/// What an agent hands back at the end.
#[derive(Debug, Default)]
struct AgentResult {
    latencies_us: Vec<u32>,
    ids: Vec<[u8; 16]>,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    validate(&cli)?;
    let nofile = rlimit::increase_nofile_limit(u64::MAX)
        .context("cannot raise the open-files limit (RLIMIT_NOFILE)")?;
    let needed = u64::from(cli.agents) + SPARE_FDS;
    if nofile < needed {
        bail!(
            "{} agents need about {needed} open files, but the hard limit is {nofile}; \
             raise it (ulimit -Hn, or LimitNOFILE= in a systemd unit)",
            cli.agents
        );
    }
    let issuer = AgentIssuer::load(&cli.pki).with_context(|| {
        format!(
            "cannot load the development CA from {} (needs ca.pem and ca.key)",
            cli.pki.display()
        )
    })?;
    // Fail now, not in 10,000 tasks, if the CA cannot issue.
    issuer
        .issue(&agent_id(&cli.prefix, 0), 1)
        .context("the CA cannot issue agent certificates")?;
    let ca_path = cli.pki.join("ca.pem");
    let ca =
        std::fs::read(&ca_path).with_context(|| format!("cannot read {}", ca_path.display()))?;
    let roots = doorwatch_tls::roots_from_pem(&ca)
        .with_context(|| format!("cannot use {} as trust anchor", ca_path.display()))?;
    let server_name = ServerName::try_from(cli.server_name.clone())
        .with_context(|| format!("{:?} is not a valid TLS server name", cli.server_name))?;
    let seed = cli.seed.unwrap_or_else(|| rand::rng().random());
    tracing::info!(
        agents = cli.agents,
        rate = cli.rate,
        collector = %cli.collector,
        open_files_limit = nofile,
        seed,
        "starting"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let shared = Arc::new(Shared {
        address: cli.collector.clone(),
        server_name,
        roots: Arc::new(roots),
        issuer,
        prefix: cli.prefix.clone(),
        agents: cli.agents,
        rate_per_agent: if cli.agents == 0 {
            0.0
        } else {
            cli.rate / f64::from(cli.agents)
        },
        batch_max: cli.batch_max as usize,
        flush: Duration::from_millis(cli.flush_ms),
        heartbeat: Duration::from_secs(cli.heartbeat),
        ramp: Duration::from_secs(cli.ramp),
        keep_ids: cli.ids_out.is_some(),
        seed,
        started: Instant::now(),
        stats: Stats::default(),
    });
    let outcome = runtime.block_on(run(&cli, shared.clone()));
    // Agents are done; do not wait for lingering connection tasks.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let outcome = outcome?;

    if let Some(path) = &cli.ids_out {
        write_ids(path, &outcome.results)
            .with_context(|| format!("cannot write event ids to {}", path.display()))?;
    }
    let report = Report::new(&cli, &shared, &outcome);
    match cli.format {
        Format::Text => print!("{}", report.text()),
        Format::Json => println!("{}", report.json()),
    }
    std::io::stdout()
        .flush()
        .context("cannot write the report")?;
    let missing = report.generated.saturating_sub(report.acked);
    if missing == 0 && outcome.panicked == 0 {
        eprintln!(
            "ok: all {} generated events were acknowledged",
            report.generated
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "FAILED: {missing} of {} generated events were not acknowledged \
             ({} refused as invalid, {} agent tasks crashed)",
            report.generated, report.refused_events, outcome.panicked
        );
        Ok(ExitCode::from(1))
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn validate(cli: &Cli) -> anyhow::Result<()> {
    if !cli.rate.is_finite() || cli.rate < 0.0 {
        bail!("--rate must be 0 or more events per second");
    }
    if cli.agents == 0 {
        bail!("--agents must be at least 1");
    }
    let last = agent_id(&cli.prefix, cli.agents - 1);
    if !is_valid_agent_id(&last) {
        bail!(
            "--prefix {:?} makes agent ids like {last:?}; use A-Z a-z 0-9 . _ - (ids at most 128 characters)",
            cli.prefix
        );
    }
    if cli.duration == 0 {
        bail!("--duration must be at least 1 second");
    }
    Ok(())
}

fn agent_id(prefix: &str, index: u32) -> String {
    format!("{prefix}-{index:05}")
}

/// What the run left behind.
struct Outcome {
    results: Vec<AgentResult>,
    panicked: u64,
    window: Duration,
    acked_in_window: u64,
    /// From the end of the warm-up to the end of generation: how long, and
    /// how many events were acknowledged (`None`: generation ended first).
    steady: Option<(Duration, u64)>,
    connected_at_stop: u64,
    total: Duration,
    drain: Duration,
    drain_timed_out: bool,
}

async fn run(cli: &Cli, shared: Arc<Shared>) -> anyhow::Result<Outcome> {
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let phase_tx = Arc::new(phase_tx);
    let mut tasks = JoinSet::new();
    for index in 0..cli.agents {
        tasks.spawn(run_agent(index, shared.clone(), phase_rx.clone()));
    }
    tokio::spawn(on_signals(phase_tx.clone()));
    if cli.progress > 0 {
        tokio::spawn(progress(
            shared.clone(),
            Duration::from_secs(cli.progress),
            phase_rx.clone(),
        ));
    }

    // Generate until --duration or an interrupt, marking the end of the
    // warm-up on the way.
    let mut phase = phase_rx.clone();
    let end = shared.started + Duration::from_secs(cli.duration);
    let warmed_up = warm_up(&shared, Duration::from_secs(cli.warmup));
    tokio::pin!(warmed_up);
    let mut steady_from = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = phase.wait_for(|p| *p != Phase::Run) => break,
            mark = &mut warmed_up, if steady_from.is_none() => steady_from = Some(mark),
        }
    }
    let window = shared.started.elapsed();
    let acked_in_window = Stats::get(&shared.stats.acked);
    let steady = steady_from
        .map(|(at, acked): (Instant, u64)| (at.elapsed(), acked_in_window.saturating_sub(acked)));
    let connected_at_stop = Stats::get(&shared.stats.connected);
    phase_tx.send_if_modified(|p| {
        let run = *p == Phase::Run;
        if run {
            *p = Phase::Drain;
        }
        run
    });
    tracing::info!(
        generated = Stats::get(&shared.stats.generated),
        acked = acked_in_window,
        "stopped generating; waiting for acknowledgements"
    );

    let drain_start = Instant::now();
    let drain_deadline = drain_start + Duration::from_secs(cli.drain_timeout);
    let mut drain_timed_out = false;
    let mut results = Vec::with_capacity(cli.agents as usize);
    let mut panicked = 0;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(result)) => results.push(result),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "an agent task crashed");
                    panicked += 1;
                }
                None => break,
            },
            _ = tokio::time::sleep_until(drain_deadline), if !drain_timed_out => {
                drain_timed_out = true;
                let pending = Stats::get(&shared.stats.generated)
                    .saturating_sub(Stats::get(&shared.stats.acked));
                tracing::error!(pending, drain_timeout_s = cli.drain_timeout, "drain timeout; giving up on the rest");
                phase_tx.send_replace(Phase::Stop);
            }
        }
    }
    Ok(Outcome {
        results,
        panicked,
        window,
        acked_in_window,
        steady,
        connected_at_stop,
        total: shared.started.elapsed(),
        drain: drain_start.elapsed(),
        drain_timed_out,
    })
}

/// Resolves `warmup` after every agent has connected, with the time and
/// the events acknowledged so far.
async fn warm_up(shared: &Shared, warmup: Duration) -> (Instant, u64) {
    while Stats::get(&shared.stats.all_connected_ms) == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(warmup).await;
    (Instant::now(), Stats::get(&shared.stats.acked))
}

/// First Ctrl-C or SIGTERM: stop generating and drain. Second: give up.
async fn on_signals(phase: Arc<watch::Sender<Phase>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    for next in [Phase::Drain, Phase::Stop] {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::warn!(phase = ?next, "interrupted");
        phase.send_replace(next);
    }
}

async fn progress(shared: Arc<Shared>, every: Duration, mut phase: watch::Receiver<Phase>) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = phase.wait_for(|p| *p == Phase::Stop) => return,
        }
        let s = &shared.stats;
        let generated = Stats::get(&s.generated);
        let acked = Stats::get(&s.acked);
        tracing::info!(
            elapsed_s = shared.started.elapsed().as_secs(),
            started = Stats::get(&s.started),
            connected = Stats::get(&s.connected),
            generated,
            acked,
            pending = generated.saturating_sub(acked + Stats::get(&s.refused_events)),
            reconnects = Stats::get(&s.reconnects),
            connect_failures = Stats::get(&s.connect_failures),
            resent_batches = Stats::get(&s.resent_batches),
            "progress"
        );
    }
}

async fn run_agent(index: u32, shared: Arc<Shared>, phase: watch::Receiver<Phase>) -> AgentResult {
    let offset = shared
        .ramp
        .mul_f64(f64::from(index) / f64::from(shared.agents));
    tokio::time::sleep_until(shared.started + offset).await;
    if *phase.borrow() != Phase::Run {
        return AgentResult::default();
    }
    let id = agent_id(&shared.prefix, index);
    let tls = match client_config(&shared, &id) {
        Ok(tls) => tls,
        Err(e) => {
            Stats::add(&shared.stats.setup_failures, 1);
            tracing::error!(agent_id = %id, error = %format!("{e:#}"), "cannot set up the agent's TLS");
            return AgentResult::default();
        }
    };
    Stats::add(&shared.stats.started, 1);
    let seed = shared.seed ^ u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut jitter = SmallRng::seed_from_u64(!seed);
    let agent = Agent {
        mix: AgentMix::new(agent_ipv4(index)),
        rng: SmallRng::seed_from_u64(seed),
        gen_phase: jitter.random(),
        jitter,
        id,
        tls,
        phase,
        gen_start: Instant::now(),
        generated: 0,
        generated_at: Instant::now(),
        buffer: Vec::new(),
        buffer_since: Instant::now(),
        next_seq: 1,
        unacked: VecDeque::new(),
        backoff_attempt: 0,
        ever_connected: false,
        result: AgentResult::default(),
        shared,
    };
    agent.run().await
}

/// A client config with a certificate issued for `id`. Resumption keeps a
/// couple of sessions instead of rustls's default 256-entry cache, which
/// would cost tens of kilobytes per simulated agent.
fn client_config(shared: &Shared, id: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pem = shared.issuer.issue(id, 1)?;
    let chain = doorwatch_tls::certs_from_pem("agent certificate", pem.cert_pem.as_bytes())?;
    let key = doorwatch_tls::key_from_pem("agent key", pem.key_pem.as_bytes())?;
    let config = doorwatch_tls::client_config_with(shared.roots.clone(), chain, key)?;
    let mut config = Arc::unwrap_or_clone(config);
    config.resumption = rustls::client::Resumption::in_memory_sessions(2);
    Ok(Arc::new(config))
}

/// A batch kept until an Ack covers it, encoded once: a resend sends the
/// same bytes, and an ack frees one buffer rather than every event's.
struct Pending {
    seq: u64,
    events: u64,
    message: Encoded,
    sent_at: Option<Instant>,
    sends: u32,
}

/// An `AgentMessage` already encoded. It goes on the wire as it is, so the
/// generator spends its CPU once per batch, not once per send.
#[derive(Debug, Clone, Default)]
struct Encoded(Bytes);

impl Encoded {
    fn of(message: &AgentMessage) -> Self {
        Self(Bytes::from(message.encode_to_vec()))
    }
}

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever sent, never received.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Why a session ended.
#[derive(Debug)]
enum SessionError {
    Connect(String),
    Refused(tonic::Status),
    Status(tonic::Status),
    Closed,
    AckTimeout,
    Stopped,
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Refused(s) => write!(f, "collector refused the stream: {s}"),
            Self::Status(s) => write!(f, "stream ended: {s}"),
            Self::Closed => f.write_str("collector closed the stream"),
            Self::AckTimeout => write!(f, "no acknowledgement for {ACK_TIMEOUT:?}"),
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

/// One simulated agent.
struct Agent {
    id: String,
    shared: Arc<Shared>,
    tls: Arc<rustls::ClientConfig>,
    phase: watch::Receiver<Phase>,
    mix: AgentMix,
    rng: SmallRng,
    jitter: SmallRng,
    gen_start: Instant,
    generated: u64,
    /// Where in its first inter-event interval this agent starts (0 to 1),
    /// so agents with under one event per second are not in lockstep.
    gen_phase: f64,
    /// When [`Agent::generate`] last ran.
    generated_at: Instant,
    buffer: Vec<v1::Event>,
    buffer_since: Instant,
    next_seq: u64,
    unacked: VecDeque<Pending>,
    backoff_attempt: u32,
    ever_connected: bool,
    result: AgentResult,
}

impl Agent {
    fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    fn done(&self) -> bool {
        self.phase() != Phase::Run && self.buffer.is_empty() && self.unacked.is_empty()
    }

    async fn run(mut self) -> AgentResult {
        loop {
            if self.done() || self.phase() == Phase::Stop {
                break;
            }
            let began = Instant::now();
            match self.session().await {
                Ok(()) => break,
                Err(SessionError::Stopped) => break,
                Err(e) => {
                    let stats = &self.shared.stats;
                    match e {
                        SessionError::Connect(_) | SessionError::Refused(_) => {
                            Stats::add(&stats.connect_failures, 1);
                        }
                        _ => Stats::add(&stats.stream_errors, 1),
                    }
                    tracing::debug!(agent_id = %self.id, error = %e, unacked_batches = self.unacked.len(), "session ended");
                }
            }
            if began.elapsed() >= HEALTHY_SESSION {
                self.backoff_attempt = 0;
            }
            let delay = self.next_backoff();
            if !self.pause(delay).await {
                break;
            }
        }
        self.result
    }

    /// Capped exponential backoff with full jitter (see [`backoff_delay`]).
    fn next_backoff(&mut self) -> Duration {
        let delay = backoff_delay(self.backoff_attempt, self.jitter.random::<f64>());
        self.backoff_attempt = self.backoff_attempt.saturating_add(1);
        delay
    }

    /// Waits `delay` while still generating. False if told to stop.
    async fn pause(&mut self, delay: Duration) -> bool {
        let wake = Instant::now() + delay;
        loop {
            let phase = self.phase();
            if phase == Phase::Stop {
                return false;
            }
            if Instant::now() >= wake {
                return true;
            }
            let generate_at = self.next_generation(phase);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => return true,
                _ = sleep_until_some(generate_at) => self.generate(phase),
                changed = self.phase.changed() => if changed.is_err() { return false },
            }
        }
    }

    /// One connection and stream: open it, deliver, and return Ok once
    /// drained and closed.
    async fn session(&mut self) -> Result<(), SessionError> {
        let (tx, rx) = mpsc::channel::<Encoded>(SEND_QUEUE);
        let hello = Encoded::of(&AgentMessage {
            body: Some(agent_message::Body::Hello(v1::Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "loadgen".into(),
                hostname: self.id.clone(),
                os: std::env::consts::OS.into(),
                local_ips: vec![self.mix.target().octets().to_vec()],
            })),
        });
        // The queue is empty, so this cannot fail.
        let _ = tx.try_send(hello);
        let open = open_stream(
            self.shared.address.clone(),
            self.shared.server_name.clone(),
            self.tls.clone(),
            rx,
        );
        tokio::pin!(open);
        let (_client, mut inbound) = loop {
            let phase = self.phase();
            if phase == Phase::Stop {
                return Err(SessionError::Stopped);
            }
            let generate_at = self.next_generation(phase);
            tokio::select! {
                opened = &mut open => break opened?,
                _ = sleep_until_some(generate_at) => self.generate(phase),
                changed = self.phase.changed() => if changed.is_err() { return Err(SessionError::Stopped) },
            }
        };

        let stats = &self.shared.stats;
        let now_connected = stats.connected.fetch_add(1, Ordering::Relaxed) + 1;
        stats
            .connected_peak
            .fetch_max(now_connected, Ordering::Relaxed);
        if self.ever_connected {
            Stats::add(&stats.reconnects, 1);
        } else {
            self.ever_connected = true;
            let ever = stats.ever_connected.fetch_add(1, Ordering::Relaxed) + 1;
            if ever == u64::from(self.shared.agents) {
                let ms = self.shared.started.elapsed().as_millis();
                stats.all_connected_ms.store(
                    u64::try_from(ms).unwrap_or(u64::MAX).max(1),
                    Ordering::Relaxed,
                );
                tracing::info!(
                    agents = self.shared.agents,
                    after_s = ms as f64 / 1000.0,
                    "every agent has connected"
                );
            }
        }
        tracing::debug!(agent_id = %self.id, unacked_batches = self.unacked.len(), "connected");
        let outcome = self.deliver(tx, &mut inbound).await;
        self.shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
        outcome
    }

    /// Sends batches and heartbeats, takes Acks, until drained or broken.
    async fn deliver(
        &mut self,
        tx: mpsc::Sender<Encoded>,
        inbound: &mut Streaming<CollectorMessage>,
    ) -> Result<(), SessionError> {
        let opened = Instant::now();
        let mut sent = 0usize;
        let mut throttled_until: Option<Instant> = None;
        let mut ack_deadline = Instant::now() + ACK_TIMEOUT;
        let heartbeat_every = self.shared.heartbeat;
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let phase = self.phase();
            if phase == Phase::Stop {
                return Err(SessionError::Stopped);
            }
            if self.done() {
                // Drained: end our side and let the collector end its own.
                drop(tx);
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                return Ok(());
            }
            let now = Instant::now();
            let throttled = throttled_until.filter(|until| *until > now);
            let can_send = sent < self.unacked.len() && throttled.is_none();
            let generate_at = self.next_generation(phase);
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Some(until) = self.on_message(message, &mut sent, &mut ack_deadline) {
                            throttled_until = Some(until);
                        }
                    }
                    Ok(None) => return Err(SessionError::Closed),
                    Err(status) => return Err(self.on_error_status(status)),
                },
                permit = tx.reserve(), if can_send => {
                    let Ok(permit) = permit else { return Err(SessionError::Closed) };
                    let pending = &mut self.unacked[sent];
                    if pending.sends > 0 {
                        Stats::add(&self.shared.stats.resent_batches, 1);
                    }
                    pending.sends += 1;
                    pending.sent_at = Some(Instant::now());
                    permit.send(pending.message.clone());
                    if sent == 0 {
                        ack_deadline = Instant::now() + ACK_TIMEOUT;
                    }
                    sent += 1;
                }
                _ = sleep_until_some(generate_at) => self.generate(phase),
                _ = sleep_until_some(throttled), if sent < self.unacked.len() => {}
                _ = heartbeat.tick() => {
                    let _ = tx.try_send(self.heartbeat_message(opened));
                }
                _ = tokio::time::sleep_until(ack_deadline), if sent > 0 => {
                    return Err(SessionError::AckTimeout);
                }
                changed = self.phase.changed() => if changed.is_err() { return Err(SessionError::Stopped) },
            }
        }
    }

    /// Handles one collector message; returns a pause if it was a Throttle.
    fn on_message(
        &mut self,
        message: CollectorMessage,
        sent: &mut usize,
        ack_deadline: &mut Instant,
    ) -> Option<Instant> {
        match message.body? {
            collector_message::Body::Ack(ack) => {
                let stats = &self.shared.stats;
                let mut events = 0;
                let mut batches = 0;
                while self
                    .unacked
                    .front()
                    .is_some_and(|p| p.seq <= ack.seq && p.sends > 0)
                {
                    let Some(done) = self.unacked.pop_front() else {
                        break;
                    };
                    if let Some(at) = done.sent_at {
                        let us = at.elapsed().as_micros();
                        self.result
                            .latencies_us
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    events += done.events;
                    batches += 1;
                    *sent = sent.saturating_sub(1);
                }
                Stats::add(&stats.acked, events);
                Stats::add(&stats.batches_acked, batches);
                *ack_deadline = Instant::now() + ACK_TIMEOUT;
                if batches > 0 {
                    self.backoff_attempt = 0;
                }
                None
            }
            collector_message::Body::Throttle(throttle) => {
                Stats::add(&self.shared.stats.throttles, 1);
                tracing::debug!(agent_id = %self.id, retry_after_ms = throttle.retry_after_ms, reason = %throttle.reason, "throttled");
                Some(Instant::now() + Duration::from_millis(u64::from(throttle.retry_after_ms)))
            }
            collector_message::Body::Policy(_) => None,
        }
    }

    /// INVALID_ARGUMENT means the collector will never take the oldest
    /// unacknowledged batch: that is a generator bug. Say so loudly and
    /// drop the batch, or delivery would stall on it for ever.
    fn on_error_status(&mut self, status: tonic::Status) -> SessionError {
        if status.code() == tonic::Code::InvalidArgument {
            let stats = &self.shared.stats;
            Stats::add(&stats.invalid_argument, 1);
            if self.unacked.front().is_some_and(|p| p.sends > 0)
                && let Some(bad) = self.unacked.pop_front()
            {
                Stats::add(&stats.refused_events, bad.events);
                tracing::error!(
                    agent_id = %self.id,
                    seq = bad.seq,
                    events = bad.events,
                    reason = %status.message(),
                    "GENERATOR BUG: the collector refused a batch as invalid; dropped it"
                );
            } else {
                tracing::error!(agent_id = %self.id, reason = %status.message(), "GENERATOR BUG: the collector refused the stream as invalid");
            }
        }
        SessionError::Status(status)
    }

    fn heartbeat_message(&self, opened: Instant) -> Encoded {
        let pending = self.unacked.iter().map(|p| p.events).sum::<u64>() + self.buffer.len() as u64;
        Encoded::of(&AgentMessage {
            body: Some(agent_message::Body::Heartbeat(v1::Heartbeat {
                pending_events: pending,
                uptime_seconds: opened.elapsed().as_secs(),
                agent_version: "loadgen".into(),
                ..Default::default()
            })),
        })
    }

    /// When [`Agent::generate`] has something to do next: the next event is
    /// due (checked at most every [`GENERATE_TICK`] while a batch fills),
    /// the batch is full, or its flush time has come. After generation
    /// stops, a partial batch still waits for its flush time, so the drain
    /// does not turn into every agent inserting at the same instant.
    fn next_generation(&self, phase: Phase) -> Option<Instant> {
        let flush_at = self.buffer_since + self.shared.flush;
        let rate = self.shared.rate_per_agent;
        if phase != Phase::Run || rate <= 0.0 {
            return (!self.buffer.is_empty()).then_some(flush_at);
        }
        let due_at = |n: u64| {
            self.gen_start + Duration::from_secs_f64(((n as f64 - self.gen_phase) / rate).max(0.0))
        };
        let next_due = due_at(self.generated + 1);
        if self.buffer.is_empty() {
            return Some(next_due);
        }
        let room = (self.shared.batch_max - self.buffer.len()) as u64;
        let next_check = next_due.max(self.generated_at + GENERATE_TICK);
        Some(flush_at.min(due_at(self.generated + room)).min(next_check))
    }

    /// Makes the events due by now and seals full or old batches.
    fn generate(&mut self, phase: Phase) {
        let now = Instant::now();
        self.generated_at = now;
        let rate = self.shared.rate_per_agent;
        if phase == Phase::Run && rate > 0.0 {
            // The epsilon keeps float rounding from waking us a hair early
            // for ever.
            let due = ((now - self.gen_start).as_secs_f64() * rate + self.gen_phase + 1e-6) as u64;
            let fresh = due.saturating_sub(self.generated);
            let now_ms = unix_ms();
            for _ in 0..fresh {
                if self.buffer.is_empty() {
                    self.buffer_since = now;
                }
                let event = self.mix.next_event(&mut self.rng, now_ms);
                if self.shared.keep_ids
                    && let Ok(id) = <[u8; 16]>::try_from(event.id.as_slice())
                {
                    self.result.ids.push(id);
                }
                self.buffer.push(event);
                if self.buffer.len() >= self.shared.batch_max {
                    self.seal();
                }
            }
            self.generated += fresh;
            Stats::add(&self.shared.stats.generated, fresh);
        }
        if !self.buffer.is_empty() && now >= self.buffer_since + self.shared.flush {
            self.seal();
        }
    }

    /// Encodes the buffered events as the next batch and keeps it until
    /// acknowledged. The buffer's memory is reused for the next batch.
    fn seal(&mut self) {
        let seq = self.next_seq;
        let message = AgentMessage {
            body: Some(agent_message::Body::Batch(v1::EventBatch {
                seq,
                events: std::mem::take(&mut self.buffer),
            })),
        };
        let encoded = Encoded::of(&message);
        if let Some(agent_message::Body::Batch(batch)) = message.body {
            self.buffer = batch.events;
        }
        self.unacked.push_back(Pending {
            seq,
            events: self.buffer.len() as u64,
            message: encoded,
            sent_at: None,
            sends: 0,
        });
        self.buffer.clear();
        self.next_seq += 1;
    }
}

/// The reconnect delay after `attempt` failures, for `unit` drawn
/// uniformly from [0, 1): full jitter under min(cap, base·2ⁿ).
fn backoff_delay(attempt: u32, unit: f64) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// TCP, TLS and the Session stream, through the agent's own connector so
/// the TLS policy and timeouts are exactly the agents'.
async fn open_stream(
    address: String,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    requests: mpsc::Receiver<Encoded>,
) -> Result<(Grpc<Channel>, Streaming<CollectorMessage>), SessionError> {
    let channel = ClientTls::from_config(config, server_name)
        .connect(&address)
        .await
        .map_err(|e| SessionError::Connect(error_chain(&e)))?;
    let mut client = Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // The generated client's `session`, but for messages encoded already.
    let session = async {
        client
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
        let codec = LeanCodec::<Encoded, CollectorMessage>::default();
        let path = PathAndQuery::from_static(SESSION_PATH);
        client
            .streaming(
                tonic::Request::new(ReceiverStream::new(requests)),
                path,
                codec,
            )
            .await
    };
    let response = tokio::time::timeout(CONNECT_TIMEOUT, session)
        .await
        .map_err(|_| SessionError::Connect("no response to the stream within 10 s".into()))?
        .map_err(SessionError::Refused)?;
    Ok((client, response.into_inner()))
}

fn write_ids(path: &std::path::Path, results: &[AgentResult]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for id in results.iter().flat_map(|r| &r.ids) {
        writeln!(out, "{}", uuid::Uuid::from_bytes(*id).hyphenated())?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The numbers a run ends with.
struct Report {
    agents: u32,
    connected_peak: u64,
    connected_at_stop: u64,
    all_connected_after_s: Option<f64>,
    setup_failures: u64,
    generated: u64,
    acked: u64,
    refused_events: u64,
    window_s: f64,
    acked_per_s_window: f64,
    /// Seconds after the warm-up, and events acknowledged per second in them.
    steady: Option<(f64, f64)>,
    total_s: f64,
    acked_per_s_overall: f64,
    drain_s: f64,
    drain_timed_out: bool,
    batches_acked: u64,
    latency_ms: Option<[f64; 4]>,
    reconnects: u64,
    connect_failures: u64,
    stream_errors: u64,
    resent_batches: u64,
    throttles: u64,
    invalid_argument: u64,
}

impl Report {
    fn new(cli: &Cli, shared: &Shared, outcome: &Outcome) -> Self {
        let s = &shared.stats;
        let mut latencies: Vec<u32> = outcome
            .results
            .iter()
            .flat_map(|r| r.latencies_us.iter().copied())
            .collect();
        latencies.sort_unstable();
        let latency_ms = (!latencies.is_empty()).then(|| {
            let at = |q: f64| {
                let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
                f64::from(latencies[rank - 1]) / 1000.0
            };
            [at(0.50), at(0.90), at(0.99), at(1.0)]
        });
        let window_s = outcome.window.as_secs_f64();
        let total_s = outcome.total.as_secs_f64();
        let acked = Stats::get(&s.acked);
        let all_ms = Stats::get(&s.all_connected_ms);
        Self {
            agents: cli.agents,
            connected_peak: Stats::get(&s.connected_peak),
            connected_at_stop: outcome.connected_at_stop,
            all_connected_after_s: (all_ms > 0).then(|| all_ms as f64 / 1000.0),
            setup_failures: Stats::get(&s.setup_failures),
            generated: Stats::get(&s.generated),
            acked,
            refused_events: Stats::get(&s.refused_events),
            window_s,
            acked_per_s_window: outcome.acked_in_window as f64 / window_s.max(1e-9),
            steady: outcome.steady.map(|(d, acked)| {
                let s = d.as_secs_f64();
                (s, acked as f64 / s.max(1e-9))
            }),
            total_s,
            acked_per_s_overall: acked as f64 / total_s.max(1e-9),
            drain_s: outcome.drain.as_secs_f64(),
            drain_timed_out: outcome.drain_timed_out,
            batches_acked: Stats::get(&s.batches_acked),
            latency_ms,
            reconnects: Stats::get(&s.reconnects),
            connect_failures: Stats::get(&s.connect_failures),
            stream_errors: Stats::get(&s.stream_errors),
            resent_batches: Stats::get(&s.resent_batches),
            throttles: Stats::get(&s.throttles),
            invalid_argument: Stats::get(&s.invalid_argument),
        }
    }

    fn not_acked(&self) -> u64 {
        self.generated.saturating_sub(self.acked)
    }

    fn text(&self) -> String {
        let latency = match self.latency_ms {
            Some([p50, p90, p99, max]) => {
                format!("p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, max {max:.1} ms")
            }
            None => "none (no batches acknowledged)".into(),
        };
        let all = self
            .all_connected_after_s
            .map_or("never".into(), |s| format!("{s:.1} s after start"));
        format!(
            "agents:                 {agents} (setup failures {setup})\n\
             connected:              peak {peak}, {stop} when generation stopped; all connected {all}\n\
             events generated:       {generated}\n\
             events acknowledged:    {acked} ({not_acked} not acknowledged, {refused} refused as invalid)\n\
             acknowledged per second: {window:.0} over the {window_s:.1} s generating window, {overall:.0} overall ({total_s:.1} s)\n\
             steady state:           {steady}\n\
             drain:                  {drain_s:.1} s{timed_out}\n\
             batches acknowledged:   {batches}\n\
             ack latency:            {latency}\n\
             reconnects:             {reconnects} (failed connects {failed}, broken streams {broken})\n\
             resent batches:         {resent}\n\
             throttles:              {throttles}\n\
             invalid-argument errors: {invalid}\n",
            agents = self.agents,
            setup = self.setup_failures,
            peak = self.connected_peak,
            stop = self.connected_at_stop,
            generated = self.generated,
            acked = self.acked,
            not_acked = self.not_acked(),
            refused = self.refused_events,
            window = self.acked_per_s_window,
            steady = match self.steady {
                Some((s, rate)) => {
                    format!("{rate:.0} acknowledged per second over the last {s:.1} s")
                }
                None => "not reached (generation ended before every agent connected and warmed up)"
                    .into(),
            },
            window_s = self.window_s,
            overall = self.acked_per_s_overall,
            total_s = self.total_s,
            drain_s = self.drain_s,
            timed_out = if self.drain_timed_out {
                " (timed out)"
            } else {
                ""
            },
            batches = self.batches_acked,
            reconnects = self.reconnects,
            failed = self.connect_failures,
            broken = self.stream_errors,
            resent = self.resent_batches,
            throttles = self.throttles,
            invalid = self.invalid_argument,
        )
    }

    fn json(&self) -> serde_json::Value {
        let latency = self.latency_ms.map(|[p50, p90, p99, max]| {
            serde_json::json!({ "p50": p50, "p90": p90, "p99": p99, "max": max })
        });
        serde_json::json!({
            "agents": self.agents,
            "setup_failures": self.setup_failures,
            "connected_peak": self.connected_peak,
            "connected_at_stop": self.connected_at_stop,
            "all_connected_after_s": self.all_connected_after_s,
            "generated": self.generated,
            "acked": self.acked,
            "not_acked": self.not_acked(),
            "refused_events": self.refused_events,
            "window_s": self.window_s,
            "acked_per_s_window": self.acked_per_s_window,
            "steady_s": self.steady.map(|(s, _)| s),
            "acked_per_s_steady": self.steady.map(|(_, rate)| rate),
            "total_s": self.total_s,
            "acked_per_s_overall": self.acked_per_s_overall,
            "drain_s": self.drain_s,
            "drain_timed_out": self.drain_timed_out,
            "batches_acked": self.batches_acked,
            "ack_latency_ms": latency,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "stream_errors": self.stream_errors,
            "resent_batches": self.resent_batches,
            "throttles": self.throttles,
            "invalid_argument": self.invalid_argument,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_250_ms_and_stops_at_10_s() {
        assert_eq!(backoff_delay(0, 0.999_999).as_millis(), 249);
        assert_eq!(backoff_delay(1, 0.5), Duration::from_millis(250));
        assert_eq!(backoff_delay(5, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_delay(6, 1.0), BACKOFF_CAP);
        assert_eq!(backoff_delay(u32::MAX, 1.0), BACKOFF_CAP);
        assert_eq!(backoff_delay(3, 0.0), Duration::ZERO);
    }

    #[test]
    fn the_help_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

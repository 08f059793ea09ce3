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

mod agent;
mod cli;
mod report;

use std::collections::VecDeque;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use doorwatch_collector::trust::pki::AgentIssuer;
use doorwatch_e2e::mix::{AgentMix, agent_ipv4};
use doorwatch_process::logging::{LogArgs, LogFormat};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustls::pki_types::ServerName;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::agent::{Agent, client_config};
use crate::cli::{Cli, Format, validate};
use crate::report::{Report, write_ids};

/// The same allocator as the collector, so the generator spends its CPU on
/// generating rather than in glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    LogArgs {
        log_format: LogFormat::Text,
        log_level: cli.log_level.clone(),
    }
    .init();
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

//! `doorwatch-bench-ingest`: events per second through the real collector
//! into ClickHouse from many simulated agents, measured in the same run as
//! a raw batched insert of the same kind of rows straight into ClickHouse;
//! acknowledgement latency at a normal load; and the collector's memory per
//! connected idle agent.
//!
//! Everything runs on loopback: a private ClickHouse server, the release
//! collector and `doorwatch-loadgen` (real certificates, real mutual TLS).
//! Prints a Markdown table for BENCHMARKS.md.
//!
//! Run (as root): cargo build --release --workspace --bins &&
//!   target/release/doorwatch-bench-ingest --agents 1000 --rate 150000 --idle-agents 10000

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use doorwatch_collector::ingest::rows_from_batch;
use doorwatch_collector::trust::identity::AgentIdentity;
use doorwatch_e2e::clickhouse::ClickHouse;
use doorwatch_e2e::mix::{AgentMix, agent_ipv4};
use doorwatch_e2e::process::{Process, free_port};
use doorwatch_e2e::{require, stack};
use doorwatch_proto::v1;
use doorwatch_store::{EventRows, FloodEventRow, InsertLimits, ScanEventRow, Store, StoreConfig};
use rand::SeedableRng;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Measure doorwatch ingest throughput, ack latency and memory per agent"
)]
struct Args {
    /// Simulated agents for the throughput and latency runs.
    #[arg(long, default_value_t = 1000)]
    agents: u32,
    /// Offered load for the throughput run, events per second in total.
    #[arg(long, default_value_t = 300_000)]
    rate: u64,
    /// Length of the throughput run, including the 5 s ramp.
    #[arg(long, default_value_t = 45)]
    seconds: u64,
    /// Seconds after every agent has connected before the sustained rate
    /// counts (1,000 TLS handshakes are not ingest).
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Raw inserts of the same rows, each into a fresh database; the
    /// median counts (ClickHouse's own speed varies from run to run).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    raw_runs: u32,
    /// Runs of the search for the highest rate carried in full, between
    /// --min-rate and --rate (0: only the saturation run at --rate).
    #[arg(long, default_value_t = 5)]
    search_steps: u32,
    /// Lower end of that search, events per second.
    #[arg(long, default_value_t = 20_000)]
    min_rate: u64,
    /// Offered load for the latency run (a busy campus, not saturation).
    #[arg(long, default_value_t = 20_000)]
    latency_rate: u64,
    /// Connected idle agents for the memory run.
    #[arg(long, default_value_t = 10_000)]
    idle_agents: u32,
    /// How often each simulated agent sends what it has (ms); at a high
    /// rate a real agent's batches grow the same way.
    #[arg(long, default_value_t = 100)]
    flush_ms: u64,
    /// The collector's `ingest.insert_period_ms` (longer: fewer, larger
    /// INSERTs, less ClickHouse CPU per event, higher ack latency).
    #[arg(long, default_value_t = 200)]
    insert_period_ms: u64,
    /// The collector's `ingest.insert_period_max_ms`: how far the period
    /// grows while ingest is busy.
    #[arg(long, default_value_t = 1000)]
    insert_period_max_ms: u64,
    /// Turn the collector's correlation passes off, to see what ingest
    /// alone costs (by default they run every 2 s, as in production).
    #[arg(long)]
    no_correlation: bool,
    /// Which measurements to make.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "latency,throughput,idle"
    )]
    phases: Vec<Phase>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// Ack latency at --latency-rate.
    Latency,
    /// Saturation throughput, then the raw insert of as many rows.
    Throughput,
    /// Collector memory per connected idle agent.
    Idle,
}

/// Waits until ClickHouse has finished the merges the last phase caused,
/// so the next phase does not pay for them.
fn settle(clickhouse: &ClickHouse) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let merges = clickhouse
            .query("SELECT count() FROM system.merges")
            .unwrap_or_default();
        if merges.trim() == "0" {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2));
}

/// One raw insert: rows per second and CPU per row.
#[derive(Debug, Clone, Copy)]
struct RawRun {
    rate: f64,
    inserter_us: f64,
    clickhouse_us: f64,
}

/// What one loadgen run reported (its `--format json` line).
struct Run {
    report: serde_json::Value,
}

impl Run {
    fn number(&self, key: &str) -> f64 {
        self.report
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    }

    fn latency_ms(&self, percentile: &str) -> f64 {
        self.report
            .get("ack_latency_ms")
            .and_then(|l| l.get(percentile))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    }
}

/// Where the load goes.
struct Target<'a> {
    dir: &'a Path,
    collector: SocketAddr,
    pki: &'a Path,
    agents: u32,
    flush_ms: u64,
    warmup: u64,
}

/// Prints a run's CPU per event and ack latency.
fn report_run(run: &Measured, name: &str) {
    println!(
        "| CPU per stored event at {name}: collector / ClickHouse | {:.1} µs / {:.1} µs |",
        run.collector_us, run.clickhouse_us
    );
    println!(
        "| ack latency at {name}: p50 / p99 | {:.1} ms / {:.1} ms |",
        run.latency_ms("p50"),
        run.latency_ms("p99")
    );
    eprintln!("{name} report: {}", run.report);
}

/// A run is carried in full when at least 95 % of the offered rate is
/// acknowledged in the steady state and the p99 ack latency stays under
/// this (a growing backlog shows here first).
const SUSTAINED_P99_MS: f64 = 5_000.0;

/// A loadgen run with the CPU the collector and ClickHouse used per
/// acknowledged event, in µs.
struct Measured {
    run: Run,
    collector_us: f64,
    clickhouse_us: f64,
}

impl std::ops::Deref for Measured {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

/// [`loadgen`], measuring the CPU of the processes in `pids` (collector,
/// ClickHouse).
fn measured(
    target: &Target<'_>,
    rate: u64,
    seconds: u64,
    prefix: &str,
    pids: (u32, u32),
) -> anyhow::Result<Measured> {
    let before = (cpu_seconds(pids.0), cpu_seconds(pids.1));
    let run = loadgen(target, rate, seconds, prefix)?;
    let acked = run.number("acked");
    Ok(Measured {
        collector_us: cpu_us_per(pids.0, before.0, acked),
        clickhouse_us: cpu_us_per(pids.1, before.1, acked),
        run,
    })
}

/// Runs `doorwatch-loadgen` at `rate` for `seconds` and reads its report.
fn loadgen(target: &Target<'_>, rate: u64, seconds: u64, prefix: &str) -> anyhow::Result<Run> {
    let (dir, flush_ms, warmup) = (target.dir, target.flush_ms, target.warmup);
    let out = Command::new(require::binary("doorwatch-loadgen"))
        .args(["--collector", &target.collector.to_string(), "--pki"])
        .arg(target.pki)
        .args([
            "--agents",
            &target.agents.to_string(),
            "--rate",
            &rate.to_string(),
            "--duration",
            &seconds.to_string(),
            "--ramp",
            "5",
            "--prefix",
            prefix,
            "--flush-ms",
            &flush_ms.to_string(),
            "--warmup",
            &warmup.to_string(),
            "--format",
            "json",
        ])
        .current_dir(dir)
        .output()
        .context("cannot run doorwatch-loadgen")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| {
            format!(
                "loadgen printed no report:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let report = serde_json::from_str(line).context("loadgen report is not JSON")?;
    if !out.status.success() {
        anyhow::bail!(
            "loadgen failed: {line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Run { report })
}

/// User + system CPU seconds a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// CPU µs per item that process `pid` used since it stood at `before`
/// CPU seconds.
fn cpu_us_per(pid: u32, before: f64, items: f64) -> f64 {
    (cpu_seconds(pid) - before) / items * 1e6
}

/// `VmRSS` or `VmHWM` of a process, in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The same kind of rows the agents send, built in memory (not timed).
fn rows(count: usize, agents: u32) -> anyhow::Result<(Vec<ScanEventRow>, Vec<FloodEventRow>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut mixes: Vec<AgentMix> = (0..agents).map(|i| AgentMix::new(agent_ipv4(i))).collect();
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let received = u32::try_from(now_ms / 1000)?;
    let mut scans = Vec::with_capacity(count);
    let mut floods = Vec::new();
    let mut made = 0usize;
    let mut agent = 0u32;
    while made < count {
        let index = (agent % agents) as usize;
        let identity = AgentIdentity {
            agent_id: format!("raw-{index:05}"),
        };
        let events: Vec<v1::Event> = (0..100.min(count - made))
            .map(|_| mixes[index].next_event(&mut rng, now_ms))
            .collect();
        made += events.len();
        let batch = v1::EventBatch {
            seq: u64::from(agent) + 1,
            events,
        };
        let rows =
            rows_from_batch(&identity, received, batch).context("mix made an invalid batch")?;
        scans.extend(rows.scans);
        floods.extend(rows.floods);
        agent += 1;
    }
    Ok((scans, floods))
}

/// Inserts the rows into `database` with the collector's batched inserter
/// and limits, ending a full INSERT in the background while the next fills
/// (at most two at once, as the collector's writer does). Returns rows per
/// second.
async fn raw_insert(
    url: &str,
    database: &str,
    clickhouse_pid: u32,
    scans: &[ScanEventRow],
    floods: &[FloodEventRow],
) -> anyhow::Result<RawRun> {
    let store = Store::open(&StoreConfig {
        url: url.to_owned(),
        database: database.into(),
        user: "default".into(),
        password: None,
        compress: false,
        cluster: None,
    })
    .await?;
    let limits = InsertLimits::default();
    // The same batches of 100 as agents send, built before the clock starts.
    let flood_every = (scans.len() / floods.len().max(1)).max(1);
    let mut flood_rows = floods.iter();
    let batches: Vec<EventRows> = scans
        .chunks(100)
        .enumerate()
        .map(|(i, chunk)| EventRows {
            scans: chunk.to_vec(),
            floods: if i % (flood_every / 100).max(1) == 0 {
                flood_rows.next().cloned().into_iter().collect()
            } else {
                Vec::new()
            },
            ..EventRows::default()
        })
        .collect();
    let rest = EventRows {
        floods: flood_rows.cloned().collect(),
        ..EventRows::default()
    };
    let cpu_before = (cpu_seconds(std::process::id()), cpu_seconds(clickhouse_pid));
    let started = Instant::now();
    let mut inserter = store.event_inserter(limits);
    let mut ending = tokio::task::JoinSet::new();
    for batch in &batches {
        inserter.write(batch).await?;
        if inserter.due() {
            let full = std::mem::replace(&mut inserter, store.event_inserter(limits));
            if ending.len() >= 2
                && let Some(done) = ending.join_next().await
            {
                done??;
            }
            ending.spawn(full.end());
        }
    }
    inserter.write(&rest).await?;
    ending.spawn(inserter.end());
    while let Some(done) = ending.join_next().await {
        done??;
    }
    let rows = (scans.len() + floods.len()) as f64;
    Ok(RawRun {
        rate: rows / started.elapsed().as_secs_f64(),
        inserter_us: cpu_us_per(std::process::id(), cpu_before.0, rows),
        clickhouse_us: cpu_us_per(clickhouse_pid, cpu_before.1, rows),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    require::root();
    let dir = tempfile::Builder::new()
        .prefix("doorwatch-bench-")
        .tempdir()?;
    let clickhouse = ClickHouse::start(&dir.path().join("clickhouse"), dir.path());
    let loopback: IpAddr = "127.0.0.1".parse()?;
    let pki = stack::pki_init(dir.path(), &[loopback]);
    let address = SocketAddr::new(loopback, free_port());
    let config = stack::collector_config(dir.path(), address, &pki, &clickhouse, "doorwatch", "");
    // The benchmark offers far more than a campus PC's rate on purpose.
    let mut text = std::fs::read_to_string(&config)?;
    // Every simulated PC comes from 127.0.0.1, where a campus has one
    // address per PC.
    text = text.replacen(
        &format!("address = \"{address}\"\n"),
        &format!("address = \"{address}\"\nmax_connections_per_address = 50000\n"),
        1,
    );
    // ClickHouse is on this host: no LZ4 on the way (the raw peer skips it too).
    text.push_str("compress = false\n");
    text.push_str(&format!(
        "[ingest]\nagent_events_per_second = 1000000\nagent_burst_events = 10000000\n\
         insert_period_ms = {}\ninsert_period_max_ms = {}\n",
        args.insert_period_ms, args.insert_period_max_ms
    ));
    if args.no_correlation {
        text.push_str("[correlation]\nenabled = false\n");
    }
    std::fs::write(&config, text)?;

    let mut collector = stack::start_collector(dir.path(), &config);
    let target = Target {
        dir: dir.path(),
        collector: address,
        pki: &pki,
        agents: args.agents,
        flush_ms: args.flush_ms,
        warmup: args.warmup,
    };
    let mut latency = None;
    let mut throughput: Option<Measured> = None;
    let mut sustained: Option<(f64, Measured)> = None;
    let mut raw = Vec::new();
    let mut collector_peak = 0;
    if args.phases.contains(&Phase::Latency) {
        latency = Some(loadgen(&target, args.latency_rate, 20, "lat")?);
        settle(&clickhouse);
    }
    if args.phases.contains(&Phase::Throughput) {
        let clickhouse_pid = clickhouse.pid().unwrap_or(0);
        let pids = (collector.pid(), clickhouse_pid);
        let run = measured(&target, args.rate, args.seconds, "tp", pids)?;
        let acked = run.number("acked");
        collector_peak = memory_kib(collector.pid(), "VmHWM:");
        settle(&clickhouse);
        // The highest rate carried in full: at saturation the generator
        // makes events the path cannot take, and its CPU is taken from the
        // collector and ClickHouse.
        let (mut low, mut high) = (args.min_rate as f64, args.rate as f64);
        for step in 0..args.search_steps {
            let rate = ((low + high) / 2.0 / 1000.0).round() * 1000.0;
            let run = measured(
                &target,
                rate as u64,
                args.seconds,
                &format!("s{step}"),
                pids,
            )?;
            settle(&clickhouse);
            let carried = run.number("acked_per_s_steady");
            let p99 = run.latency_ms("p99");
            let full = carried >= 0.95 * rate && p99 <= SUSTAINED_P99_MS;
            eprintln!(
                "search {step}: offered {rate:.0}/s, carried {carried:.0}/s, ack p99 {p99:.0} ms: {}",
                if full {
                    "carried in full"
                } else {
                    "not carried"
                }
            );
            if full {
                low = rate;
                sustained = Some((rate, run));
            } else {
                high = rate;
            }
        }
        // The collector goes first: its correlation passes would keep
        // reading the millions of rows just stored and take ClickHouse's CPU
        // from the raw peer (which made the raw rate vary 93k-265k rows/s).
        collector.stop(Duration::from_secs(30));
        settle(&clickhouse);
        // The raw peer inserts as many rows as went through the collector.
        let count = if acked.is_finite() {
            acked as usize
        } else {
            1_000_000
        };
        let (scans, floods) = rows(count, args.agents)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        for i in 1..=args.raw_runs {
            let database = format!("doorwatch_raw_{i}");
            let raw_run = runtime.block_on(raw_insert(
                &clickhouse.url(),
                &database,
                clickhouse_pid,
                &scans,
                &floods,
            ))?;
            eprintln!(
                "raw insert {i}: {:.0} rows/s, CPU per row: inserter {:.1} µs, ClickHouse {:.1} µs",
                raw_run.rate, raw_run.inserter_us, raw_run.clickhouse_us
            );
            raw.push(raw_run);
            settle(&clickhouse);
        }
        throughput = Some(run);
    }

    let mut idle = None;
    if args.phases.contains(&Phase::Idle) && args.idle_agents > 0 {
        collector.stop(Duration::from_secs(30));
        let mut fresh = stack::start_collector(dir.path(), &config);
        std::thread::sleep(Duration::from_secs(2));
        let before = memory_kib(fresh.pid(), "VmRSS:");
        let mut idle_command = Command::new(require::binary("doorwatch-loadgen"));
        idle_command
            .args(["--collector", &address.to_string(), "--pki"])
            .arg(&pki)
            .args([
                "--agents",
                &args.idle_agents.to_string(),
                "--rate",
                "0",
                "--duration",
                "120",
                "--ramp",
                "40",
                "--prefix",
                "idle",
            ]);
        let mut idle_gen = Process::spawn("loadgen-idle", idle_command, dir.path())?;
        let started = Instant::now();
        let connected = loop {
            let n = fresh.log().matches("agent connected").count();
            if n >= args.idle_agents as usize || started.elapsed() > Duration::from_secs(110) {
                break n;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        let took = started.elapsed();
        // A few heartbeats later, the steady state.
        std::thread::sleep(Duration::from_secs(5));
        let after = memory_kib(fresh.pid(), "VmRSS:");
        idle = Some((connected, before, after, took));
        idle_gen.stop(Duration::from_secs(30));
        fresh.stop(Duration::from_secs(30));
    } else {
        collector.stop(Duration::from_secs(30));
    }

    println!("| measure | value |");
    println!("|---|---|");
    raw.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    // --raw-runs is at least 1, so a throughput run always has a median.
    if let (Some(run), Some(median)) = (&throughput, raw.get(raw.len() / 2)) {
        let rates: Vec<String> = raw.iter().map(|r| format!("{:.0}", r.rate)).collect();
        println!(
            "| raw batched insert of the same rows, median of {} ({}) | {:.0} rows/s |",
            raw.len(),
            rates.join(", "),
            median.rate
        );
        println!(
            "| CPU per row of the median raw insert: inserter / ClickHouse | {:.1} µs / {:.1} µs |",
            median.inserter_us, median.clickhouse_us
        );
        match &sustained {
            Some((rate, best)) => {
                let carried = best.number("acked_per_s_steady");
                println!(
                    "| **sustained**: highest offered rate carried in full ({} agents, {}-step search) | {rate:.0} events/s offered, {carried:.0} acknowledged/s |",
                    args.agents, args.search_steps
                );
                println!(
                    "| **ratio** (sustained / raw) | {:.2} |",
                    carried / median.rate
                );
                report_run(best, "sustained rate");
            }
            None if args.search_steps > 0 => println!(
                "| sustained | no rate from {} events/s up was carried in full |",
                args.min_rate
            ),
            None => {}
        }
        // Agents that connect while the others saturate the machine can
        // take long enough that the warm-up never ends; then the whole
        // generating window counts.
        let (through, counted) = match run.number("acked_per_s_steady") {
            steady if steady.is_finite() => {
                (steady, format!("the last {:.0} s", run.number("steady_s")))
            }
            _ => (
                run.number("acked_per_s_window"),
                format!("the whole {:.0} s window", run.number("window_s")),
            ),
        };
        println!(
            "| at saturation: {} agents offered {} events/s, generated {:.0}/s, acknowledged over {counted} | {through:.0} events/s |",
            args.agents,
            args.rate,
            run.number("generated") / run.number("window_s"),
        );
        println!("| ratio at saturation | {:.2} |", through / median.rate);
        report_run(run, "saturation");
        println!(
            "| collector peak RSS | {:.1} MiB |",
            collector_peak as f64 / 1024.0
        );
    }
    if let Some(run) = &latency {
        println!(
            "| ack latency at {} events/s: p50 / p99 | {:.1} ms / {:.1} ms |",
            args.latency_rate,
            run.latency_ms("p50"),
            run.latency_ms("p99")
        );
        eprintln!("latency report: {}", run.report);
    }
    if let Some((connected, before, after, took)) = idle {
        println!(
            "| idle agents connected | {connected} in {:.0} s |",
            took.as_secs_f64()
        );
        println!(
            "| collector RSS idle before / after | {:.1} MiB / {:.1} MiB |",
            before as f64 / 1024.0,
            after as f64 / 1024.0
        );
        println!(
            "| memory per connected idle agent | {:.1} KiB |",
            after.saturating_sub(before) as f64 / connected.max(1) as f64
        );
    }
    Ok(())
}

//! `doorwatch-bench-correlate`: one correlation pass over a large store.
//!
//! Starts a private ClickHouse, bulk-inserts N scan events (default 100
//! million) spread over the last 30 days: 50,000 outside sources and 5,000
//! campus PCs, the way a campus fills its store over a month, plus a fresh
//! sweep in the last minutes for the pass to find. Then times the
//! collector's correlation pass (`doorwatch_collector::correlate::pass`,
//! default settings) several times and prints a Markdown table.
//!
//! Run (as root): cargo build --release --workspace --bins &&
//!   target/release/doorwatch-bench-correlate [EVENTS] [PASSES]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use doorwatch_collector::correlate;
use doorwatch_e2e::clickhouse::ClickHouse;
use doorwatch_e2e::require;
use doorwatch_store::{
    EventRows, InsertLimits, ScanEventRow, Store, StoreConfig, episode_state, ip,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DAYS: u32 = 30;
const SOURCES: u32 = 50_000;
const PCS: u32 = 5_000;

/// A stored scan report: `source` scanning PC `pc` at `first_seen`.
fn row(rng: &mut SmallRng, source: u32, pc: u32, first_seen: u32) -> ScanEventRow {
    let scanner = std::net::Ipv4Addr::from(0xcb00_0000u32 | source); // 203.x.y.z
    let target = std::net::Ipv4Addr::from(0xc612_0000u32 | pc); // 198.18.x.y
    let ports = rng.random_range(4..200u32);
    ScanEventRow {
        event_id: uuid::Uuid::from_u128(rng.random()),
        episode_id: uuid::Uuid::from_u128(rng.random()),
        agent_id: format!("pc-{pc:05}"),
        received_at: first_seen,
        created_at: first_seen,
        state: episode_state::DETECTED,
        scanner: ip::to_fixed16(scanner.into()),
        target: ip::to_fixed16(target.into()),
        scan_types: vec!["syn".into()],
        ports_probed: ports,
        port_sample: (0..ports.min(8))
            .map(|_| rng.random_range(1..1024u16))
            .collect(),
        open_ports: Vec::new(),
        probes: u64::from(ports) + 1,
        first_seen,
        last_seen: first_seen + rng.random_range(0..120u32),
        confidence: 90,
        explanation: "A scan.".into(),
        companions: Vec::new(),
        fragmented: 0,
        exposed_ports: vec![],
        severity: 1,
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    require::root();
    let mut args = std::env::args().skip(1);
    let events: u64 = args
        .next()
        .map_or(Ok(100_000_000), |a| a.parse())
        .context("EVENTS")?;
    let passes: usize = args
        .next()
        .map_or(Ok(10), |a| a.parse())
        .context("PASSES")?;
    if events == 0 || passes == 0 {
        bail!("EVENTS and PASSES must be at least 1");
    }
    let dir = tempfile::Builder::new()
        .prefix("doorwatch-bench-correlate-")
        .tempdir()?;
    let clickhouse = ClickHouse::start(&dir.path().join("clickhouse"), dir.path());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let store = Store::open(&StoreConfig {
            url: clickhouse.url(),
            database: "doorwatch".into(),
            user: "default".into(),
            password: None,
            compress: false,
        })
        .await?;
        let now = unix_now();
        let start = now - DAYS * 86_400;
        eprintln!("inserting {events} events over {DAYS} days...");
        let loaded = Instant::now();
        let limits = InsertLimits {
            max_rows: 1_000_000,
            max_bytes: 256 << 20,
            period: Duration::from_secs(60),
            timeout: Duration::from_secs(600),
        };
        let mut rng = SmallRng::seed_from_u64(7);
        let mut inserter = store.event_inserter(limits);
        let mut batch = Vec::with_capacity(10_000);
        // Events in time order, as they arrive: day partitions fill one by one.
        for i in 0..events {
            let at = start + ((u64::from(DAYS * 86_400 - 3_600) * i) / events) as u32;
            let (source, pc) = (rng.random_range(0..SOURCES), rng.random_range(0..PCS));
            batch.push(row(&mut rng, source, pc, at));
            if batch.len() == 10_000 {
                let rows = EventRows {
                    scans: std::mem::replace(&mut batch, Vec::with_capacity(10_000)),
                    ..EventRows::default()
                };
                inserter.write(&rows).await?;
                if inserter.due() {
                    let full = std::mem::replace(&mut inserter, store.event_inserter(limits));
                    full.end().await?;
                }
            }
            if i > 0 && i % 10_000_000 == 0 {
                eprintln!(
                    "  {i} inserted, {:.0} rows/s",
                    i as f64 / loaded.elapsed().as_secs_f64()
                );
            }
        }
        // A fresh sweep: one source across 40 PCs in the last 5 minutes.
        for pc in 0..40 {
            batch.push(row(&mut rng, SOURCES + 1, pc, now - 300 + pc));
        }
        inserter
            .write(&EventRows {
                scans: batch,
                ..EventRows::default()
            })
            .await?;
        inserter.end().await?;
        let load_s = loaded.elapsed().as_secs_f64();
        eprintln!("loaded in {load_s:.0} s");
        let settings = correlate::Settings::default();
        let mut times = Vec::new();
        let mut found = 0;
        for n in 0..passes {
            let began = Instant::now();
            let changed = correlate::pass(&store, &settings, unix_now()).await?;
            let took = began.elapsed();
            if n == 0 {
                found = changed.len();
            }
            eprintln!(
                "pass {}: {took:.3?}, {} campaigns written",
                n + 1,
                changed.len()
            );
            times.push(took);
        }
        times.sort();
        let stored = clickhouse.query_ok("SELECT count() FROM doorwatch.scan_events");
        println!("| correlation pass, default settings | value |");
        println!("|---|---:|");
        println!("| events stored | {} |", stored.trim());
        println!(
            "| bulk load | {load_s:.0} s ({:.0} rows/s) |",
            events as f64 / load_s
        );
        println!("| campaigns found by the first pass | {found} |");
        println!(
            "| pass time, median of {passes} | {:.3} s |",
            times[times.len() / 2].as_secs_f64()
        );
        println!(
            "| pass time, max | {:.3} s |",
            times[times.len() - 1].as_secs_f64()
        );
        anyhow::Ok(())
    })?;
    drop(clickhouse);
    Ok(())
}

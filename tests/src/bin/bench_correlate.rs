//! `doorwatch-bench-correlate`: one correlation pass over a large store.
//!
//! Starts a private ClickHouse, bulk-inserts N scan events (default 100
//! million) spread over the last 30 days: 50,000 outside sources and 5,000
//! campus PCs, the way a campus fills its store over a month, plus a fresh
//! sweep in the last minutes for the pass to find. Then times the
//! collector's correlation pass (`doorwatch_collector::campaigns::correlate::pass`,
//! default settings) several times and prints a Markdown table.
//!
//! Run (as root): cargo build --release --workspace --bins &&
//!   target/release/doorwatch-bench-correlate [EVENTS] [PASSES]

use std::time::Instant;

use anyhow::{Context, bail};
use doorwatch_collector::campaigns::correlate;
use doorwatch_e2e::bulk;
use doorwatch_e2e::clickhouse::ClickHouse;
use doorwatch_e2e::require;
use doorwatch_store::Store;

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
        let store = Store::open(&clickhouse.store_config("doorwatch")).await?;
        eprintln!("inserting {events} events over {} days...", bulk::DAYS);
        let load_s = bulk::load_month(&store, events, 7).await?.as_secs_f64();
        eprintln!("loaded in {load_s:.0} s");
        let settings = correlate::Settings::default();
        let mut times = Vec::new();
        let mut found = 0;
        for n in 0..passes {
            let began = Instant::now();
            let changed = correlate::pass(&store, &settings, bulk::unix_now()).await?;
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

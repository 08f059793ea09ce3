//! `doorwatch-bench-console`: how fast the console's pages answer over a
//! large store.
//!
//! Starts a private ClickHouse, bulk-loads N scan events (default 10
//! million) over the last 30 days (see `doorwatch_e2e::bulk`), lets the
//! collector's correlator make campaigns of them, starts the real
//! `doorwatch-console` (a release build next to this binary), signs in as
//! the local admin and times every main page and API call, each several
//! times, end to end over HTTP. Prints a Markdown table.
//!
//! Run (as root): cargo build --release --workspace --bins &&
//!   target/release/doorwatch-bench-console [EVENTS] [REPEATS]
//! With DOORWATCH_BENCH_HOLD=1 it keeps ClickHouse and the console up
//! afterwards (for an hour) to look at queries by hand.

use std::time::Instant;

use anyhow::{Context, bail};
use doorwatch_collector::campaigns::correlate;
use doorwatch_e2e::bulk;
use doorwatch_e2e::clickhouse::ClickHouse;
use doorwatch_e2e::console::{Console, api_token, hash_password};
use doorwatch_e2e::http::request;
use doorwatch_e2e::process::free_port;
use doorwatch_e2e::require;
use doorwatch_store::Store;

fn main() -> anyhow::Result<()> {
    require::root();
    let mut args = std::env::args().skip(1);
    let events: u64 = args
        .next()
        .map_or(Ok(10_000_000), |a| a.parse())
        .context("EVENTS")?;
    let repeats: usize = args
        .next()
        .map_or(Ok(20), |a| a.parse())
        .context("REPEATS")?;
    if events == 0 || repeats == 0 {
        bail!("EVENTS and REPEATS must be at least 1");
    }
    let dir = tempfile::Builder::new()
        .prefix("doorwatch-bench-console-")
        .tempdir()?;
    let clickhouse = ClickHouse::start(&dir.path().join("clickhouse"), dir.path());
    let runtime = tokio::runtime::Runtime::new()?;
    let (load_s, campaign) = runtime.block_on(async {
        let store = Store::open(&clickhouse.store_config("doorwatch")).await?;
        eprintln!("inserting {events} events over {} days...", bulk::DAYS);
        let load_s = bulk::load_month(&store, events, 11).await?.as_secs_f64();
        let changed =
            correlate::pass(&store, &correlate::Settings::default(), bulk::unix_now()).await?;
        eprintln!("loaded in {load_s:.0} s; {} campaigns", changed.len());
        // The fresh sweep's campaign: the biggest, 40 PCs.
        let campaign = changed
            .iter()
            .max_by_key(|c| c.pcs)
            .map(|c| c.campaign_id.to_string())
            .context("the correlator found no campaign")?;
        anyhow::Ok((load_s, campaign))
    })?;

    let password = "benchmark password 0123";
    let (token, entry) = api_token("bench", "admin");
    let extra = format!(
        "[local_admin]\nusername = \"bench\"\npassword_hash = \"{}\"\n{entry}",
        hash_password(password)
    );
    let console = Console::start(
        dir.path(),
        "console",
        free_port(),
        &clickhouse,
        None,
        &extra,
    );
    let session = console.local_session("bench", password);
    let bearer = format!("Bearer {token}");
    let sweep = bulk::sweep_source();
    let pages = [
        ("overview", "/".to_owned()),
        ("campaigns", "/campaigns".to_owned()),
        ("campaign (40 PCs)", format!("/campaigns/{campaign}")),
        ("PC", format!("/hosts/{}", bulk::pc_id(7))),
        ("source", format!("/sources/{}", bulk::source_address(123))),
        ("source of the sweep", format!("/sources/{sweep}")),
        ("search, last 24 h", "/search".to_owned()),
        (
            "search, 7 days, page 5",
            "/search?since=7d&page=5".to_owned(),
        ),
        (
            "search, 30 days, source /16 + port",
            "/search?since=30d&source=203.0.0.0%2F16&port=22".to_owned(),
        ),
        (
            "search, 30 days, one PC",
            format!("/search?since=30d&pc={}", bulk::pc_id(42)),
        ),
        ("CSV export, 24 h", "/search.csv".to_owned()),
        ("agents", "/agents".to_owned()),
        ("audit log", "/audit".to_owned()),
        ("API overview", "/api/v1/overview".to_owned()),
        ("API events, 7 days", "/api/v1/events?since=7d".to_owned()),
    ];
    println!(
        "| page ({events} events stored, {repeats} requests each) | p50 ms | p95 ms | max ms | bytes |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, path) in &pages {
        let auth: (&str, &str) = if path.starts_with("/api/") {
            ("Authorization", &bearer)
        } else {
            ("Cookie", &session)
        };
        let mut times = Vec::with_capacity(repeats);
        let mut size = 0;
        for _ in 0..repeats {
            let began = Instant::now();
            let answer = request(console.port, "GET", path, &[auth], "");
            times.push(began.elapsed().as_secs_f64() * 1000.0);
            if answer.status != 200 {
                bail!("{path}: status {} {}", answer.status, answer.body);
            }
            size = answer.body.len();
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {size} |",
            at(0.5),
            at(0.95),
            times[times.len() - 1]
        );
    }
    println!("\nbulk load: {load_s:.0} s");
    // For profiling queries by hand: keep the store and console up.
    if std::env::var_os("DOORWATCH_BENCH_HOLD").is_some() {
        eprintln!(
            "holding: ClickHouse {} and the console {} (bearer {token}); kill to stop",
            clickhouse.url(),
            console.url()
        );
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
    drop(console);
    drop(clickhouse);
    Ok(())
}

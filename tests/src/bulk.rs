//! A month of campus scanning, bulk-loaded straight into a store for the
//! benchmarks that need a large one (the correlator's, the console's):
//! scan reports spread over the last 30 days from 50,000 outside sources
//! against 5,000 campus PCs, in time order as they would arrive, plus a
//! fresh sweep of 40 PCs by one source in the last five minutes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use doorwatch_store::{EpisodeState, EventRows, InsertLimits, ScanEventRow, Store, StoreError, ip};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const DAYS: u32 = 30;
pub const SOURCES: u32 = 50_000;
pub const PCS: u32 = 5_000;

/// The address of outside source number `n` (203.x.y.z).
pub fn source_address(n: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(0xcb00_0000u32 | n)
}

/// The agent id of PC number `n`.
pub fn pc_id(n: u32) -> String {
    format!("pc-{n:05}")
}

/// The fresh sweep's source.
pub fn sweep_source() -> std::net::Ipv4Addr {
    source_address(SOURCES + 1)
}

/// A stored scan report: `source` scanning PC `pc` at `first_seen`.
fn row(rng: &mut SmallRng, source: u32, pc: u32, first_seen: u32) -> ScanEventRow {
    let target = std::net::Ipv4Addr::from(0xc612_0000u32 | pc); // 198.18.x.y
    let ports = rng.random_range(4..200u32);
    let open = rng.random_bool(0.05);
    ScanEventRow {
        event_id: uuid::Uuid::from_u128(rng.random()),
        episode_id: uuid::Uuid::from_u128(rng.random()),
        agent_id: pc_id(pc),
        received_at: first_seen,
        created_at: first_seen,
        state: EpisodeState::Detected,
        scanner: ip::to_fixed16(source_address(source).into()),
        target: ip::to_fixed16(target.into()),
        scan_types: vec!["syn".into()],
        ports_probed: ports,
        port_sample: (0..ports.min(8))
            .map(|_| rng.random_range(1..1024u16))
            .collect(),
        open_ports: if open { vec![22] } else { Vec::new() },
        probes: u64::from(ports) + 1,
        first_seen,
        last_seen: first_seen + rng.random_range(0..120u32),
        confidence: 90,
        explanation:
            "203.0.113.7 tried 120 ports on this PC in 2 seconds using a half-open SYN scan. \
                      None of them were open, so the scanner found no way in."
                .into(),
        companions: Vec::new(),
        fragmented: 0,
        exposed_ports: vec![],
        severity: if open { 2 } else { 1 },
        handshake_verified: 0,
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// Inserts `events` reports and the fresh sweep; returns how long it took.
pub async fn load_month(store: &Store, events: u64, seed: u64) -> Result<Duration, StoreError> {
    let now = unix_now();
    let start = now - DAYS * 86_400;
    let loaded = Instant::now();
    let limits = InsertLimits {
        max_rows: 1_000_000,
        max_bytes: 256 << 20,
        period: Duration::from_secs(60),
        timeout: Duration::from_secs(600),
    };
    let mut rng = SmallRng::seed_from_u64(seed);
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
    Ok(loaded.elapsed())
}

//! The store against a real ClickHouse server (the crate's mock skips
//! schema checks, so every table is exercised here): migrations apply once
//! and are idempotent, rows round-trip, and a retried batch is counted once.

use doorwatch_e2e::clickhouse::ClickHouse;
use doorwatch_store::{
    EpisodeState, FloodEventRow, HeartbeatRow, MIGRATIONS, PolicyRow, ScanEventRow, Store,
    StoreConfig, ip,
};

fn row(scanner: &str, ports: u32) -> ScanEventRow {
    ScanEventRow {
        event_id: uuid::Uuid::now_v7(),
        episode_id: uuid::Uuid::now_v7(),
        agent_id: "pc-1".into(),
        received_at: 1_764_000_100,
        created_at: 1_764_000_050,
        state: EpisodeState::Active,
        scanner: ip::to_fixed16(scanner.parse().expect("literal")),
        target: ip::to_fixed16("fd00:d00::10".parse().expect("literal")),
        scan_types: vec!["syn".into()],
        ports_probed: ports,
        port_sample: vec![22, 80, 443],
        open_ports: vec![22],
        probes: u64::from(ports) + 3,
        first_seen: 1_764_000_000,
        last_seen: 1_764_000_002,
        confidence: 90,
        explanation: "a test scan with 'quotes' and ünïcode".into(),
        companions: vec![ip::to_fixed16("198.18.0.3".parse().expect("literal"))],
        fragmented: 1,
        exposed_ports: vec![],
        severity: 2,
        handshake_verified: 1,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn store_round_trips_and_counts_retried_batches_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clickhouse =
        tokio::task::block_in_place(|| ClickHouse::start(&dir.path().join("data"), dir.path()));
    let config = StoreConfig {
        compress: true,
        url: clickhouse.url(),
        database: "store_test".into(),
        user: "default".into(),
        password: None,
        cluster: None,
    };
    let store = Store::open(&config).await.expect("open");
    // A second collector starting against the same database changes nothing.
    let again = Store::open(&config).await.expect("open again");
    let all: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(again.applied_migrations().await.expect("migrations"), all);
    assert_eq!(
        clickhouse
            .query_ok("SELECT count() FROM store_test.schema_migrations")
            .trim(),
        all.len().to_string(),
        "each migration recorded once"
    );
    eprintln!(
        "server {} on the {:?} path",
        store.server().version,
        store.server().path()
    );

    let batch = vec![row("198.18.0.2", 1000), row("fd00:d00::2", 65_536)];
    store.insert_scan_events(&batch).await.expect("insert");
    // The agent resends the same batch after a lost ack.
    store
        .insert_scan_events(&batch)
        .await
        .expect("insert again");

    let counted = clickhouse.query_ok(
        "SELECT count(), uniqExact(event_id) FROM store_test.scan_events FINAL FORMAT TSV",
    );
    assert_eq!(
        counted.trim(),
        "2\t2",
        "FINAL counts each event once before merges"
    );

    let rows = store.recent_scan_events(0, 10).await.expect("select");
    assert_eq!(rows.len(), 2);
    for original in &batch {
        let stored = rows
            .iter()
            .find(|r| r.event_id == original.event_id)
            .expect("row read back");
        assert_eq!(stored, original);
    }
    assert_eq!(
        ip::from_fixed16(
            rows.iter()
                .find(|r| r.ports_probed == 65_536)
                .expect("v6 row")
                .scanner
        )
        .to_string(),
        "fd00:d00::2"
    );

    let flood = FloodEventRow {
        event_id: uuid::Uuid::now_v7(),
        episode_id: uuid::Uuid::now_v7(),
        agent_id: "pc-1".into(),
        received_at: 1_764_000_100,
        created_at: 1_764_000_050,
        state: EpisodeState::Closed,
        target: ip::to_fixed16("198.18.0.10".parse().expect("literal")),
        ports: vec![80],
        sources: 48_000,
        first_seen: 1_764_000_000,
        last_seen: 1_764_000_012,
        explanation: "a flood".into(),
    };
    let once = std::slice::from_ref(&flood);
    store.insert_flood_events(once).await.expect("insert flood");
    store
        .insert_flood_events(once)
        .await
        .expect("insert flood again");
    let floods = store
        .recent_flood_events(0, 10)
        .await
        .expect("select floods");
    assert_eq!(floods, vec![flood], "a resent flood is counted once");

    assert_eq!(store.latest_policy("default").await.expect("policy"), None);
    let mut policy = PolicyRow {
        policy_group: "default".into(),
        version: 1,
        scan_min_ports: 6,
        episode_idle_seconds: 0,
        allowlisted_sources: vec![ip::to_fixed16("198.18.0.5".parse().expect("literal"))],
        updated_at: 1_764_000_000,
        updated_by: "alice".into(),
    };
    store.insert_policy(&policy).await.expect("insert policy");
    policy.version = 2;
    policy.allowlisted_sources.clear();
    store
        .insert_policy(&policy)
        .await
        .expect("insert policy v2");
    assert_eq!(
        store.latest_policy("default").await.expect("policy"),
        Some(policy),
        "the newest version wins"
    );

    let heartbeat = |received_at: u32, pending_events: u64| HeartbeatRow {
        agent_id: "pc-1".into(),
        received_at,
        agent_version: "0.1.0".into(),
        claimed_hostname: "lab-17".into(),
        packets_seen: 10,
        kernel_drops: 0,
        pending_events,
        spool_bytes: 4096,
        events_dropped: 3,
        dropped_spool_cap: 1,
        dropped_spool_error: 0,
        dropped_invalid: 2,
        dropped_queue_full: 0,
        policy_version: 7,
        uptime_seconds: 60,
        events_created: 12,
    };
    store
        .insert_heartbeats(&[heartbeat(1_764_000_000, 5), heartbeat(1_764_000_030, 2)])
        .await
        .expect("insert heartbeats");
    let health = store.agent_health(1_763_000_000).await.expect("health");
    assert_eq!(health.len(), 1);
    assert_eq!(health[0].last_seen, 1_764_000_030);
    assert_eq!(health[0].pending_events, 2, "the newest heartbeat counts");
    assert_eq!(health[0].policy_version, 7);
}

fn knock(source: &str, pc: u32, port: u16, now: u32) -> doorwatch_store::KnockEventRow {
    doorwatch_store::KnockEventRow {
        event_id: uuid::Uuid::now_v7(),
        agent_id: format!("pc-{pc}"),
        received_at: now,
        source: ip::to_fixed16(source.parse().expect("literal")),
        target: ip::to_fixed16(format!("198.18.1.{pc}").parse().expect("literal")),
        port,
        protocol: 6,
        refused: 1,
        probes: 1,
        first_seen: now,
        last_seen: now,
        explanation: "one try".into(),
    }
}

/// Knocks alone (single tries, no scan on any PC) make one-port sweeps,
/// botnets and worms, and allowlisted sources stay out.
#[tokio::test(flavor = "multi_thread")]
async fn knocks_alone_make_sweeps_botnets_and_worms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clickhouse =
        tokio::task::block_in_place(|| ClickHouse::start(&dir.path().join("data"), dir.path()));
    let config = StoreConfig {
        compress: false,
        url: clickhouse.url(),
        database: "knocks_test".into(),
        user: "default".into(),
        password: None,
        cluster: None,
    };
    let store = Store::open(&config).await.expect("open");
    let now = doorwatch_process::clock::unix_now_u32();
    let mut rows = Vec::new();
    for pc in 1..=4 {
        // One source tries port 22 once on each PC: a horizontal sweep.
        rows.push(knock("203.0.113.5", pc, 22, now));
        // Three sources try 445 once each: a botnet.
        for bot in 1..=3 {
            rows.push(knock(&format!("192.0.2.{bot}"), pc, 445, now));
        }
        // A campus PC tries 445 on the others: a worm.
        rows.push(knock("198.18.1.9", pc, 445, now));
        // The campus vulnerability scanner, allowlisted.
        rows.push(knock("198.51.100.1", pc, 8080, now));
    }
    let count = rows.len() as u64;
    let rows = doorwatch_store::EventRows {
        knocks: rows,
        ..Default::default()
    };
    let mut inserter = store.event_inserter(doorwatch_store::InsertLimits::default());
    inserter.write(&rows).await.expect("write");
    // Resent: counted once all the same.
    inserter.write(&rows).await.expect("write again");
    assert_eq!(inserter.end().await.expect("end"), 2 * count);

    let filter = doorwatch_store::ActivityFilter {
        since: now - 60,
        campus: vec!["198.18.0.0/15".parse().expect("cidr")],
        allowlist: vec!["198.51.100.1/32".parse().expect("cidr")],
    };
    let sweeps = store.sweep_activity(&filter, 3).await.expect("sweeps");
    let keys: Vec<(String, usize, Vec<u16>)> = sweeps
        .iter()
        .map(|r| (r.group_key.clone(), r.pcs.len(), r.ports.clone()))
        .collect();
    // 203.0.113.0/24 and 192.0.2.0/24, as 16-byte hex.
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.contains(&("00000000000000000000FFFFCB007100".into(), 4, vec![22])),
        "{keys:?}"
    );
    let botnet = store
        .distributed_activity(&filter, 3, 3, 16)
        .await
        .expect("distributed");
    assert_eq!(botnet.len(), 1, "{botnet:?}");
    assert_eq!(botnet[0].group_key, "445");
    assert_eq!((botnet[0].sources.len(), botnet[0].pcs.len()), (3, 4));
    let worm = store.internal_activity(&filter, 3).await.expect("internal");
    assert_eq!(worm.len(), 1, "{worm:?}");
    assert_eq!(worm[0].pcs.len(), 4);
    assert_eq!(worm[0].ports, vec![445]);
}

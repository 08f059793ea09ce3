//! Every public method of `doorwatch_store::Store` against a real ClickHouse
//! engine (`DOORWATCH_TEST_CLICKHOUSE` picks 18.16 or 26.9), so every table
//! and every statement of the store crate runs where the crate's mock cannot
//! hide a mistake. On 26.9 the store turns the crate's row validation on:
//! a `Row` whose fields do not match a query's column names or types fails
//! here.
//!
//! Four tests, each with its own engine and database:
//! - detection and outbound events, written with single INSERTs and the
//!   batched inserter (all six event tables), read back whole, then through
//!   the correlator's activity queries and the console's overview, search
//!   and campaign views;
//! - enrollment (tokens, agents, revocations, the revoked agents an
//!   enrolling PC resembles, the returns recorded and their alerts),
//!   policies, the correlation allowlist, heartbeats, the audit log, a
//!   read-only `connect` and the grants check;
//! - campaigns, their members, alerts, triage and leases;
//! - retention: partitions, dropping one, deleting expired campaigns and
//!   old lease claims.
//!
//! Round trips compare whole rows, so the Enum8 columns (episode and
//! campaign state, anomaly and campaign kind, member, alert status and
//! subject, triage state) and the UUID columns are checked both ways, and
//! resent rows and older versions must not show. Data uses documentation and benchmarking
//! ranges only: 198.18.0.0/15 and fd00:d00::/64 are the campus,
//! 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32 the
//! outside. Nothing is sent anywhere but to the engine on loopback.

use std::time::{Duration, Instant};

use doorwatch_e2e::clickhouse::ClickHouse;
use doorwatch_store::{
    ActivityFilter, ActivityRow, AgentHealthRow, AgentRow, AlertRow, AlertStatus, AlertSubject,
    AllowlistRow, AnomalyKind, AuditRow, CampaignKind, CampaignMemberRow, CampaignRow,
    CampaignState, EpisodeRow, EpisodeState, EventRows, EventSearch, FeedSourceRow, FloodEventRow,
    FlowMinuteRow, HeartbeatRow, InsertLimits, KnockEventRow, ListeningPortRow, MIGRATIONS,
    MemberCounts, MemberKind, OutboundAnomalyRow, PartitionRow, PcHitRow, PolicyRow, PortRow,
    RevocationRow, RevokedMatch, RevokedReturnRow, ScanEventRow, ScannerRow, Store, StoreConfig,
    StoreError, TalkerRow, TimeBucket, TokenRow, TokenUse, TriageRow, TriageState, grants,
    hex_sha256, ip,
};
use uuid::Uuid;

/// The base time of every row: 2025-11-24 16:00:00 UTC, on an hour (and so
/// a five-minute) boundary.
const T: u32 = 1_764_000_000;
const DAY: u32 = 86_400;

/// One engine with a store on its own database. Fields drop in order: the
/// engine stops before its folder goes.
struct Setup {
    store: Store,
    clickhouse: ClickHouse,
    database: &'static str,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn open(database: &'static str, compress: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clickhouse =
            tokio::task::block_in_place(|| ClickHouse::start(&dir.path().join("data"), dir.path()));
        let config = StoreConfig {
            compress,
            ..clickhouse.store_config(database)
        };
        let store = Store::open(&config).await.expect("open the store");
        eprintln!(
            "{database}: server {} on the {:?} path, compress {compress}",
            store.server().version,
            store.server().path()
        );
        Self {
            store,
            clickhouse,
            database,
            _dir: dir,
        }
    }

    /// What the engine itself prints for `sql` (one value).
    fn value(&self, sql: &str) -> String {
        self.clickhouse.query_ok(sql).trim().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_round_trip_and_feed_correlation_and_the_console() {
    let setup = Setup::open("queries_events", true).await;
    let detection = detection();
    let outbound = outbound();
    store_events(&setup.store, &detection, &outbound).await;
    check_scan_and_flood_events(&setup.store, &detection).await;
    check_activity(&setup.store).await;
    check_overview(&setup).await;
    check_search(&setup.store, &detection).await;
    check_campaign_views(&setup.store).await;
    check_outbound(&setup.store, &outbound).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_policies_heartbeats_and_audit_round_trip() {
    let setup = Setup::open("queries_enrollment", false).await;
    check_connect(&setup).await;
    check_grants(&setup.store).await;
    check_heartbeats(&setup.store).await;
    check_policies(&setup.store).await;
    check_allowlist(&setup.store).await;
    check_tokens_and_agents(&setup.store).await;
    check_revocations(&setup.store).await;
    check_revoked_matches(&setup.store).await;
    check_revoked_returns(&setup.store).await;
    check_audit(&setup.store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn campaigns_alerts_triage_and_leases_round_trip() {
    let setup = Setup::open("queries_campaigns", true).await;
    let campaigns = campaigns();
    store_campaigns(&setup.store, &campaigns).await;
    check_campaigns(&setup.store, &campaigns).await;
    check_members(&setup.store, &campaigns).await;
    check_alerts(&setup.store, &campaigns).await;
    check_triage(&setup.store, &campaigns).await;
    check_leases(&setup.store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_drops_partitions_and_deletes_campaigns_and_leases() {
    let setup = Setup::open("queries_retention", false).await;
    check_partitions(&setup).await;
    check_campaign_expiry(&setup.store).await;
    check_lease_expiry(&setup.store).await;
}

// ---------------------------------------------------------------- helpers

fn addr(text: &str) -> [u8; 16] {
    ip::to_fixed16(text.parse().expect("address literal"))
}

/// The campus address of PC number `pc`.
fn pc_addr(pc: u32) -> [u8; 16] {
    addr(&format!("198.18.1.{pc}"))
}

fn pc(number: u32) -> String {
    format!("pc-{number}")
}

fn pcs(numbers: &[u32]) -> Vec<String> {
    numbers.iter().copied().map(pc).collect()
}

fn cidr(text: &str) -> ip::Cidr {
    text.parse().expect("cidr literal")
}

/// `rows` sorted by a key, for comparing sets of rows.
fn sorted_by<R, K: Ord>(mut rows: Vec<R>, key: impl FnMut(&R) -> K) -> Vec<R> {
    rows.sort_by_key(key);
    rows
}

/// Waits for what the server does in the background (mutations).
async fn eventually(what: &str, check: impl AsyncFn() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not happen within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------- detection and outbound

/// A scan report of `scanner` against PC `pc_number`: one episode, last probe at
/// T + 20, received a second later.
fn scan(scanner: &str, pc_number: u32) -> ScanEventRow {
    ScanEventRow {
        event_id: Uuid::now_v7(),
        episode_id: Uuid::now_v7(),
        agent_id: pc(pc_number),
        received_at: T + 21,
        created_at: T + 20,
        state: EpisodeState::Active,
        scanner: addr(scanner),
        target: pc_addr(pc_number),
        scan_types: vec!["syn".into()],
        ports_probed: 1000,
        port_sample: vec![22, 80, 443],
        open_ports: vec![],
        probes: 1200,
        first_seen: T,
        last_seen: T + 20,
        confidence: 90,
        explanation: format!("{scanner} probed 1000 ports of pc-{pc_number} ('syn', ünïcode)"),
        companions: vec![],
        fragmented: 0,
        exposed_ports: vec![],
        severity: 2,
        handshake_verified: 0,
    }
}

/// `row` with its last probe at `last_seen`, reported then and received a
/// second later.
fn last_seen_at(row: ScanEventRow, last_seen: u32) -> ScanEventRow {
    ScanEventRow {
        last_seen,
        created_at: last_seen,
        received_at: last_seen + 1,
        ..row
    }
}

fn knock(event_id: Uuid, source: &str, pc_number: u32, port: u16) -> KnockEventRow {
    KnockEventRow {
        event_id,
        agent_id: pc(pc_number),
        received_at: T + 335,
        source: addr(source),
        target: pc_addr(pc_number),
        port,
        protocol: 6,
        refused: 1,
        probes: 1,
        first_seen: T + 330,
        last_seen: T + 331,
        explanation: format!("{source} tried port {port} once").into(),
    }
}

fn flood(pc_number: u32, target: &str, state: EpisodeState, last_seen: u32) -> FloodEventRow {
    FloodEventRow {
        event_id: Uuid::now_v7(),
        episode_id: Uuid::now_v7(),
        agent_id: pc(pc_number),
        received_at: last_seen + 1,
        created_at: last_seen,
        state,
        target: addr(target),
        ports: vec![53, 443],
        sources: 48_000,
        first_seen: T + 40,
        last_seen,
        explanation: "48000 new sources in 10 s".into(),
    }
}

/// What the PCs reported about scans, floods and knocks, by name.
struct Detection {
    /// 203.0.113.5 sweeps pc-1..3. On pc-1 the episode has two reports.
    sweep_pc1_first: ScanEventRow,
    sweep_pc1_last: ScanEventRow,
    sweep_pc2: ScanEventRow,
    sweep_pc3: ScanEventRow,
    /// A campus PC (198.18.1.9) probing 445 on pc-1 and pc-2.
    worm_pc1: ScanEventRow,
    worm_pc2: ScanEventRow,
    /// An IPv6 scanner an hour later, with decoys and fragments.
    v6_pc1: ScanEventRow,
    /// pc-1's flood (single INSERT), pc-2's (batched).
    floods: [FloodEventRow; 2],
    /// Two bots knocking on 23 of pc-1 and pc-2 (one event per PC), and
    /// the allowlisted campus scanner knocking on 8080.
    knocks: Vec<KnockEventRow>,
}

impl Detection {
    fn scans(&self) -> Vec<ScanEventRow> {
        [
            &self.sweep_pc1_first,
            &self.sweep_pc1_last,
            &self.sweep_pc2,
            &self.sweep_pc3,
            &self.worm_pc1,
            &self.worm_pc2,
            &self.v6_pc1,
        ]
        .into_iter()
        .cloned()
        .collect()
    }
}

fn detection() -> Detection {
    let sweep_pc1_first = ScanEventRow {
        state: EpisodeState::Detected,
        ports_probed: 100,
        open_ports: vec![22],
        severity: 1,
        ..last_seen_at(scan("203.0.113.5", 1), T + 5)
    };
    let sweep_pc1_last = ScanEventRow {
        event_id: Uuid::now_v7(),
        state: EpisodeState::Closed,
        ports_probed: 1000,
        open_ports: vec![22, 80],
        severity: 3,
        ..last_seen_at(sweep_pc1_first.clone(), T + 20)
    };
    let sweep_pc2 = ScanEventRow {
        open_ports: vec![3389],
        exposed_ports: vec![3389],
        severity: 4,
        ..last_seen_at(scan("203.0.113.5", 2), T + 15)
    };
    let sweep_pc3 = last_seen_at(scan("203.0.113.5", 3), T + 12);
    let worm = |pc_number, last_seen| ScanEventRow {
        ports_probed: 1,
        port_sample: vec![445],
        ..last_seen_at(scan("198.18.1.9", pc_number), last_seen)
    };
    let worm_pc2 = ScanEventRow {
        open_ports: vec![445],
        exposed_ports: vec![445],
        handshake_verified: 1,
        ..worm(2, T + 9)
    };
    let v6_pc1 = ScanEventRow {
        first_seen: T + 3600,
        scan_types: vec!["udp".into(), "fin".into()],
        ports_probed: 500,
        port_sample: vec![22],
        companions: vec![addr("2001:db8:0:1::8"), addr("203.0.113.66")],
        fragmented: 1,
        handshake_verified: 1,
        confidence: 70,
        target: addr("fd00:d00::1"),
        ..last_seen_at(scan("2001:db8:0:1::7", 1), T + 3610)
    };
    let (k1, k2) = (Uuid::now_v7(), Uuid::now_v7());
    let knocks = vec![
        knock(k1, "192.0.2.1", 1, 23),
        knock(k1, "192.0.2.2", 1, 23),
        knock(k1, "198.51.100.1", 1, 8080),
        knock(k2, "192.0.2.1", 2, 23),
        knock(k2, "192.0.2.2", 2, 23),
        knock(k2, "198.51.100.1", 2, 8080),
    ];
    Detection {
        sweep_pc1_first,
        sweep_pc1_last,
        sweep_pc2,
        sweep_pc3,
        worm_pc1: worm(1, T + 8),
        worm_pc2,
        v6_pc1,
        floods: [
            flood(1, "198.18.1.1", EpisodeState::Active, T + 50),
            flood(2, "fd00:d00::2", EpisodeState::Closed, T + 60),
        ],
        knocks,
    }
}

/// One minute of traffic of a process of PC `pc_number` to `remote`.
fn flow(pc_number: u32, minute: u32, process: &str, remote: &str, port: u16) -> FlowMinuteRow {
    FlowMinuteRow {
        event_id: Uuid::now_v7(),
        agent_id: pc(pc_number),
        received_at: minute + 61,
        minute,
        pid: if process.is_empty() { 0 } else { 4242 },
        process: process.into(),
        exe: if process.is_empty() {
            String::new()
        } else {
            format!("/usr/bin/{process}")
        },
        user_name: if process.is_empty() { "" } else { "alice" }.into(),
        local_ip: pc_addr(pc_number),
        remote: addr(remote),
        remote_port: port,
        protocol: 6,
        bytes_out: 0,
        bytes_in: 0,
        packets_out: 10,
        packets_in: 5,
        connections: 1,
    }
}

fn anomaly(
    pc_number: u32,
    kind: AnomalyKind,
    state: EpisodeState,
    received_at: u32,
) -> OutboundAnomalyRow {
    OutboundAnomalyRow {
        event_id: Uuid::now_v7(),
        episode_id: Uuid::now_v7(),
        agent_id: pc(pc_number),
        received_at,
        created_at: received_at - 1,
        state,
        kind,
        pid: 4242,
        process: "curl".into(),
        exe: "/usr/bin/curl".into(),
        user_name: "alice".into(),
        remote: [0; 16],
        remote_port: 0,
        hosts: 1,
        ports: 1,
        bytes_out: 0,
        baseline_bytes_per_hour: 0,
        attempts: 0,
        failed: 0,
        first_seen: T,
        last_seen: received_at - 1,
        host_sample: vec![],
        port_sample: vec![],
        explanation: format!("{} on pc-{pc_number}", kind.label()),
    }
}

fn listening(
    event_id: Uuid,
    pc_number: u32,
    created_at: u32,
    protocol: u8,
    port: u16,
) -> ListeningPortRow {
    ListeningPortRow {
        event_id,
        agent_id: pc(pc_number),
        received_at: created_at + 1,
        created_at,
        protocol,
        local_ip: if port == 0 {
            [0; 16]
        } else {
            pc_addr(pc_number)
        },
        port,
        pid: if port == 0 { 0 } else { 700 + u32::from(port) },
        process: if port == 0 { "" } else { "daemon" }.into(),
        exe: if port == 0 { "" } else { "/usr/sbin/daemon" }.into(),
        user_name: if port == 0 { "" } else { "root" }.into(),
        risk: String::new(),
    }
}

/// What the PCs reported about their own traffic and open ports.
struct Outbound {
    flows: Vec<FlowMinuteRow>,
    /// Upload to 203.0.113.80:443 from pc-1 and pc-2, then failed
    /// connections, SMTP fan-out and a scan, one PC each; received in this
    /// order.
    anomalies: Vec<OutboundAnomalyRow>,
    listening: Vec<ListeningPortRow>,
    /// What `listening_ports` must return: pc-1's newer report, pc-2's.
    newest_listening: Vec<ListeningPortRow>,
}

fn outbound() -> Outbound {
    let flows = vec![
        FlowMinuteRow {
            bytes_out: 5000,
            bytes_in: 100,
            ..flow(1, T, "curl", "203.0.113.80", 443)
        },
        FlowMinuteRow {
            bytes_out: 700,
            bytes_in: 40,
            ..flow(1, T + 60, "", "192.0.2.50", 25)
        },
        // The sum of flows the agent did not list.
        FlowMinuteRow {
            protocol: 0,
            remote: [0; 16],
            bytes_out: 50,
            bytes_in: 10,
            ..flow(1, T + 60, "", "::", 0)
        },
        FlowMinuteRow {
            bytes_out: 9000,
            bytes_in: 300,
            local_ip: addr("fd00:d00::2"),
            ..flow(2, T, "rsync", "203.0.113.80", 443)
        },
    ];
    let upload = |pc_number, state, received_at| OutboundAnomalyRow {
        remote: addr("203.0.113.80"),
        remote_port: 443,
        bytes_out: 50_000_000,
        baseline_bytes_per_hour: 1_000_000,
        host_sample: vec![addr("203.0.113.80")],
        port_sample: vec![443],
        ..anomaly(pc_number, AnomalyKind::UploadVolume, state, received_at)
    };
    let anomalies = vec![
        upload(1, EpisodeState::Active, T + 121),
        upload(2, EpisodeState::Detected, T + 131),
        OutboundAnomalyRow {
            hosts: 40,
            ports: 3,
            attempts: 200,
            failed: 180,
            host_sample: vec![addr("192.0.2.60"), addr("2001:db8::60")],
            port_sample: vec![22, 23, 2323],
            ..anomaly(
                1,
                AnomalyKind::FailedConnections,
                EpisodeState::Closed,
                T + 141,
            )
        },
        OutboundAnomalyRow {
            remote_port: 25,
            hosts: 60,
            ..anomaly(2, AnomalyKind::SmtpFanout, EpisodeState::Active, T + 151)
        },
        OutboundAnomalyRow {
            remote_port: 22,
            hosts: 250,
            ..anomaly(3, AnomalyKind::Scan, EpisodeState::Detected, T + 161)
        },
    ];
    let (old, new, pc2, pc3) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let newest_listening = vec![
        listening(new, 1, T + 300, 6, 22),
        ListeningPortRow {
            risk: "multicast DNS answers anyone".into(),
            ..listening(pc2, 2, T + 10, 17, 5353)
        },
    ];
    let mut listening_rows = vec![
        listening(old, 1, T, 6, 22),
        ListeningPortRow {
            risk: "remote desktop".into(),
            ..listening(old, 1, T, 6, 3389)
        },
        // Nothing listening on pc-3: one row with protocol and port 0.
        listening(pc3, 3, T + 20, 0, 0),
    ];
    listening_rows.extend(newest_listening.iter().cloned());
    Outbound {
        flows,
        anomalies,
        listening: listening_rows,
        newest_listening,
    }
}

/// Writes the events: some with single INSERTs, the rest with the batched
/// inserter (every event table), each sent twice as after a lost ack.
async fn store_events(store: &Store, detection: &Detection, outbound: &Outbound) {
    let direct = [
        detection.sweep_pc1_first.clone(),
        detection.sweep_pc2.clone(),
        detection.v6_pc1.clone(),
    ];
    for _ in 0..2 {
        store
            .insert_scan_events(&direct)
            .await
            .expect("insert scans");
        store
            .insert_flood_events(&detection.floods[..1])
            .await
            .expect("insert a flood");
    }
    store.insert_scan_events(&[]).await.expect("insert nothing");
    let batch = EventRows {
        scans: vec![
            detection.sweep_pc1_last.clone(),
            detection.sweep_pc3.clone(),
            detection.worm_pc1.clone(),
            detection.worm_pc2.clone(),
        ],
        floods: detection.floods[1..].to_vec(),
        knocks: detection.knocks.clone(),
        flows: outbound.flows.clone(),
        anomalies: outbound.anomalies.clone(),
        listening: outbound.listening.clone(),
    };
    let rows = [
        batch.scans.len(),
        batch.floods.len(),
        batch.knocks.len(),
        batch.flows.len(),
        batch.anomalies.len(),
        batch.listening.len(),
    ]
    .iter()
    .sum::<usize>() as u64;
    let limits = InsertLimits {
        max_rows: 1_000_000,
        max_bytes: 1 << 30,
        period: Duration::from_secs(60),
        timeout: Duration::from_secs(30),
    };
    let mut inserter = store.event_inserter(limits);
    assert_eq!(inserter.pending_rows(), 0);
    inserter.write(&batch).await.expect("batched write");
    assert_eq!(inserter.pending_rows(), rows);
    assert!(!inserter.due(), "no limit is reached yet");
    let left = inserter.time_left().expect("a period is set");
    assert!(left <= Duration::from_secs(66), "{left:?}");
    assert_eq!(inserter.end().await.expect("end the batch"), rows);
    // Resent, into an inserter whose row limit the batch reaches.
    let mut resent = store.event_inserter(InsertLimits {
        max_rows: rows,
        ..limits
    });
    resent.write(&batch).await.expect("batched write again");
    assert!(resent.due(), "the row limit is reached");
    assert_eq!(resent.end().await.expect("end the resent batch"), rows);
}

async fn check_scan_and_flood_events(store: &Store, detection: &Detection) {
    let stored = store.recent_scan_events(T, 100).await.expect("scan events");
    assert_eq!(
        sorted_by(stored, |r| r.event_id),
        sorted_by(detection.scans(), |r| r.event_id),
        "each report once, every column (Enum8 state, UUIDs, addresses) as written"
    );
    let newest: Vec<Uuid> = store
        .recent_scan_events(T, 2)
        .await
        .expect("newest scan events")
        .iter()
        .map(|r| r.event_id)
        .collect();
    assert_eq!(
        newest,
        [detection.v6_pc1.event_id, detection.sweep_pc1_last.event_id]
    );
    assert_eq!(
        store.recent_scan_events(T + 100, 10).await.expect("late"),
        std::slice::from_ref(&detection.v6_pc1)
    );
    let verified = |since| async move {
        let mut found = store.verified_scanners(since).await.expect("verified");
        found.sort();
        found
    };
    assert_eq!(
        verified(T).await,
        [
            "198.18.1.9".parse::<std::net::IpAddr>().expect("ip"),
            "2001:db8:0:1::7".parse().expect("ip")
        ],
        "scanners that completed a handshake, once each"
    );
    assert_eq!(
        verified(T + 100).await,
        ["2001:db8:0:1::7".parse::<std::net::IpAddr>().expect("ip")]
    );
    let [first, second] = &detection.floods;
    assert_eq!(
        store.recent_flood_events(T, 10).await.expect("floods"),
        [second.clone(), first.clone()],
        "newest first, the resent flood once"
    );
    assert_eq!(
        store
            .recent_flood_events(T + 55, 10)
            .await
            .expect("late floods"),
        std::slice::from_ref(second)
    );
}

/// An activity row with its member lists sorted (the server's
/// `groupUniqArray` has no order).
fn normalized(mut row: ActivityRow) -> ActivityRow {
    row.sources.sort_unstable();
    row.pcs.sort_unstable();
    row.ports.sort_unstable();
    row.open_ports_hit.sort_unstable();
    row.exposed_ports_hit.sort_unstable();
    row
}

fn normalized_all(rows: Vec<ActivityRow>) -> Vec<ActivityRow> {
    rows.into_iter().map(normalized).collect()
}

/// Expected activity: `sources` and `pc_numbers` in sorted order.
struct Activity<'a> {
    key: &'a str,
    sources: &'a [&'a str],
    pcs: &'a [u32],
    ports: &'a [u16],
    open: &'a [u16],
    exposed: &'a [u16],
    span: (u32, u32),
}

impl Activity<'_> {
    fn row(&self) -> ActivityRow {
        ActivityRow {
            group_key: self.key.to_owned(),
            sources: self.sources.iter().map(|s| addr(s)).collect(),
            pcs: pcs(self.pcs),
            ports: self.ports.to_vec(),
            open_ports_hit: self.open.to_vec(),
            exposed_ports_hit: self.exposed.to_vec(),
            activity_start: self.span.0,
            activity_end: self.span.1,
        }
    }
}

fn keys(rows: &[ActivityRow]) -> Vec<&str> {
    rows.iter().map(|r| r.group_key.as_str()).collect()
}

async fn check_activity(store: &Store) {
    let filter = ActivityFilter {
        since: T,
        campus: vec![cidr("198.18.0.0/15"), cidr("fd00:d00::/64")],
        allowlist: vec![cidr("198.51.100.1/32")],
    };
    let bots = Activity {
        key: "00000000000000000000FFFFC0000200",
        sources: &["192.0.2.1", "192.0.2.2"],
        pcs: &[1, 2],
        ports: &[23],
        open: &[],
        exposed: &[],
        span: (T + 330, T + 331),
    };
    let sweep = Activity {
        key: "00000000000000000000FFFFCB007100",
        sources: &["203.0.113.5"],
        pcs: &[1, 2, 3],
        ports: &[22, 80, 443],
        open: &[22, 80, 3389],
        exposed: &[3389],
        span: (T, T + 20),
    };
    let sweeps = store.sweep_activity(&filter, 2).await.expect("sweeps");
    assert_eq!(normalized_all(sweeps), [bots.row(), sweep.row()]);
    let any = store
        .sweep_activity(&filter, 1)
        .await
        .expect("sweeps of one PC");
    assert_eq!(
        keys(&any),
        [bots.key, sweep.key, "20010DB8000000010000000000000000"],
        "the IPv6 scanner by its /64, the allowlisted and campus sources left out"
    );
    let botnet = store
        .distributed_activity(&filter, 2, 2, 16)
        .await
        .expect("distributed");
    assert_eq!(
        normalized_all(botnet),
        [Activity { key: "23", ..bots }.row()]
    );
    let wide = store
        .distributed_activity(&filter, 2, 2, 2000)
        .await
        .expect("distributed, full scans too");
    assert_eq!(keys(&wide), ["22", "23"]);
    let port_22 = normalized(wide[0].clone());
    assert_eq!(
        port_22.sources,
        [addr("203.0.113.5"), addr("2001:db8:0:1::7")]
    );
    assert_eq!(port_22.open_ports_hit, [22], "only the grouped port");
    let worm = store.internal_activity(&filter, 2).await.expect("internal");
    let worm_key = ip::hex(&addr("198.18.1.9"));
    assert_eq!(
        normalized_all(worm),
        [Activity {
            key: &worm_key,
            sources: &["198.18.1.9"],
            pcs: &[1, 2],
            ports: &[445],
            open: &[445],
            exposed: &[445],
            span: (T, T + 9),
        }
        .row()]
    );
    let none = ActivityFilter {
        since: T + 4000,
        ..filter
    };
    assert_eq!(store.sweep_activity(&none, 1).await.expect("sweeps"), []);
}

async fn check_overview(setup: &Setup) {
    let store = &setup.store;
    // Hours start where the engine's time zone says.
    let hour = |at: u32| -> u32 {
        setup
            .value(&format!("SELECT toUInt32(toStartOfHour(toDateTime({at})))"))
            .parse()
            .expect("an hour")
    };
    assert_eq!(
        store.scans_per_hour(T - 3600).await.expect("per hour"),
        [
            TimeBucket {
                at: hour(T),
                scans: 5
            },
            TimeBucket {
                at: hour(T + 3600),
                scans: 1
            }
        ],
        "episodes, not reports, by the hour they began"
    );
    let scanner = |text: &str, pcs, scans, last_seen| ScannerRow {
        scanner: addr(text),
        pcs,
        scans,
        last_seen,
    };
    assert_eq!(
        store.top_scanners(T, 10).await.expect("top scanners"),
        [
            scanner("203.0.113.5", 3, 3, T + 20),
            scanner("198.18.1.9", 2, 2, T + 9),
            scanner("2001:db8:0:1::7", 1, 1, T + 3610),
        ]
    );
    let port = |port, sources, pcs| PortRow { port, sources, pcs };
    assert_eq!(
        store.top_ports(T, 10).await.expect("top ports"),
        [
            port(22, 2, 3),
            port(80, 1, 3),
            port(443, 1, 3),
            port(445, 1, 2)
        ]
    );
    assert_eq!(
        store.top_ports(T, 1).await.expect("top port"),
        [port(22, 2, 3)]
    );
    assert_eq!(store.top_ports(T + 7200, 10).await.expect("no ports"), []);
    let hit = |number, sources, scans, last_seen| PcHitRow {
        agent_id: pc(number),
        sources,
        scans,
        last_seen,
    };
    assert_eq!(
        store.pcs_hit(T, 10).await.expect("PCs hit"),
        [
            hit(1, 3, 3, T + 3610),
            hit(2, 2, 2, T + 15),
            hit(3, 1, 1, T + 12)
        ]
    );
    assert_eq!(
        store.pcs_hit(T, 1).await.expect("PC hit most").len(),
        1,
        "the limit holds"
    );
}

/// The episode a console listing shows for its newest report `row`.
fn episode(row: &ScanEventRow) -> EpisodeRow {
    EpisodeRow {
        episode_id: row.episode_id,
        agent_id: row.agent_id.clone(),
        scanner: row.scanner,
        target: row.target,
        scan_types: row.scan_types.clone(),
        ports_probed: row.ports_probed,
        open_ports: row.open_ports.clone(),
        first_seen: row.first_seen,
        last_seen: row.last_seen,
        severity: row.severity,
        explanation: row.explanation.clone(),
    }
}

async fn check_search(store: &Store, detection: &Detection) {
    let d = detection;
    let all = EventSearch {
        since: T,
        until: T + 7200,
        limit: 10,
        count: true,
        ..EventSearch::default()
    };
    let newest_first = [
        &d.v6_pc1,
        &d.sweep_pc1_last,
        &d.sweep_pc2,
        &d.sweep_pc3,
        &d.worm_pc2,
        &d.worm_pc1,
    ];
    let sweep_range = cidr("203.0.113.0/24").range();
    let cases: Vec<(&str, EventSearch, Vec<&ScanEventRow>, u64)> = vec![
        ("all", all.clone(), newest_first.to_vec(), 6),
        (
            "an export, read in one sort",
            EventSearch {
                limit: 5000,
                ..all.clone()
            },
            newest_first.to_vec(),
            6,
        ),
        (
            "the second page, uncounted",
            EventSearch {
                offset: 1,
                limit: 2,
                count: false,
                ..all.clone()
            },
            newest_first[1..3].to_vec(),
            0,
        ),
        (
            "one PC",
            EventSearch {
                agent_id: Some(pc(2)),
                ..all.clone()
            },
            vec![&d.sweep_pc2, &d.worm_pc2],
            2,
        ),
        (
            "a source network",
            EventSearch {
                source_range: Some(sweep_range),
                ..all.clone()
            },
            newest_first[1..4].to_vec(),
            3,
        ),
        (
            "an open port outside the sample",
            EventSearch {
                port: Some(3389),
                ..all.clone()
            },
            vec![&d.sweep_pc2],
            1,
        ),
        (
            "a scan type",
            EventSearch {
                scan_type: Some("udp".into()),
                ..all.clone()
            },
            vec![&d.v6_pc1],
            1,
        ),
        (
            "until before the IPv6 scan",
            EventSearch {
                until: T + 100,
                ..all.clone()
            },
            newest_first[1..].to_vec(),
            5,
        ),
    ];
    for (what, search, expected, total) in cases {
        let expected: Vec<EpisodeRow> = expected.into_iter().map(episode).collect();
        assert_eq!(
            store.search_episodes(&search).await.expect(what),
            (expected, total),
            "{what}"
        );
    }
}

async fn check_campaign_views(store: &Store) {
    let sources = [addr("203.0.113.5"), addr("192.0.2.1")];
    assert_eq!(
        store
            .campaign_timeline(&sources, &pcs(&[1, 2]), T, T + 400)
            .await
            .expect("timeline"),
        [
            TimeBucket { at: T, scans: 2 },
            TimeBucket {
                at: T + 300,
                scans: 2
            }
        ],
        "scan episodes, then knock events, per five minutes"
    );
    assert_eq!(
        store
            .campaign_open_ports(&sources[..1], &pcs(&[1, 2, 3]), T, T + 400)
            .await
            .expect("open ports"),
        [(pc(1), vec![22, 80]), (pc(2), vec![3389])]
    );
}

async fn check_outbound(store: &Store, outbound: &Outbound) {
    let talker = |name: &str, bytes_out, bytes_in, pcs| TalkerRow {
        name: name.to_owned(),
        bytes_out,
        bytes_in,
        pcs,
    };
    assert_eq!(
        store.top_talkers(&pc(1), T, 10).await.expect("top talkers"),
        [
            talker("curl", 5000, 100, 1),
            talker("(unknown)", 750, 50, 1)
        ],
        "the resent batch counted once"
    );
    assert_eq!(
        store
            .top_talkers(&pc(1), T + 60, 10)
            .await
            .expect("later talkers"),
        [talker("(unknown)", 750, 50, 1)]
    );
    assert_eq!(
        store
            .top_talkers(&pc(1), T, 1)
            .await
            .expect("top talker")
            .len(),
        1
    );
    let web = format!("{}:443", ip::hex(&addr("203.0.113.80")));
    let mail = format!("{}:25", ip::hex(&addr("192.0.2.50")));
    assert_eq!(
        store.top_destinations(T, 10).await.expect("destinations"),
        [talker(&web, 14_000, 400, 2), talker(&mail, 700, 40, 1)],
        "the unlisted-flows row has no destination"
    );
    let newest_first: Vec<OutboundAnomalyRow> = outbound.anomalies.iter().rev().cloned().collect();
    assert_eq!(
        store.outbound_anomalies(T, 10).await.expect("anomalies"),
        newest_first,
        "each once, every column (Enum8 kind and state) as written"
    );
    assert_eq!(
        store
            .outbound_anomalies(T, 2)
            .await
            .expect("newest anomalies"),
        newest_first[..2]
    );
    check_outbound_activity(store).await;
    assert_eq!(
        store.listening_ports(None).await.expect("listening"),
        outbound.newest_listening,
        "each PC's newest report; pc-3 listens on nothing"
    );
    assert_eq!(
        store
            .listening_ports(Some("pc-1"))
            .await
            .expect("pc-1 listening"),
        outbound.newest_listening[..1]
    );
    assert_eq!(
        store
            .listening_ports(Some("pc-3"))
            .await
            .expect("pc-3 listening"),
        []
    );
}

async fn check_outbound_activity(store: &Store) {
    let web = addr("203.0.113.80");
    let upload = Activity {
        key: &format!("upload_volume:{}:443", ip::hex(&web)),
        sources: &["203.0.113.80"],
        pcs: &[1, 2],
        ports: &[443],
        open: &[],
        exposed: &[],
        span: (T, T + 130),
    }
    .row();
    assert_eq!(
        normalized_all(store.outbound_activity(T, 2).await.expect("outbound")),
        [upload]
    );
    let nowhere = ip::hex(&[0; 16]);
    let one_pc = store
        .outbound_activity(T, 1)
        .await
        .expect("outbound on one PC");
    assert_eq!(
        keys(&one_pc),
        [
            format!("failed_connections:{nowhere}:0"),
            format!("scan:{nowhere}:22"),
            format!("smtp_fanout:{nowhere}:25"),
            format!("upload_volume:{}:443", ip::hex(&web)),
        ],
        "the kind by its label"
    );
    assert_eq!(one_pc[0].ports, Vec::<u16>::new(), "port 0 is no port");
    assert_eq!(one_pc[0].sources, [[0; 16]]);
}

// ------------------------------------------- enrollment, policy, audit

async fn check_connect(setup: &Setup) {
    let config = StoreConfig {
        compress: false,
        ..setup.clickhouse.store_config(setup.database)
    };
    let reader = Store::connect(&config).await.expect("connect read-only");
    assert_eq!(reader.server().version, setup.store.server().version);
    let all: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(reader.applied_migrations().await.expect("migrations"), all);
    assert_eq!(
        setup.value(&format!(
            "SELECT count() FROM {}.schema_migrations",
            setup.database
        )),
        all.len().to_string(),
        "each migration recorded once"
    );
}

/// The default user holds every privilege either component needs (18.16
/// has no SQL access control and is not asked); a server with access
/// control names each privilege's parent.
async fn check_grants(store: &Store) {
    store
        .check_grants(grants::COLLECTOR)
        .await
        .expect("the collector's grants");
    store
        .check_grants(grants::CONSOLE)
        .await
        .expect("the console's grants");
    if store.server().has_access_control() {
        let parents = store.privilege_hierarchy().await.expect("privileges");
        assert_eq!(
            parents.get("ALTER DELETE").map(String::as_str),
            Some("ALTER TABLE"),
            "{parents:?}"
        );
    }
}

fn heartbeat(pc_number: u32, received_at: u32, pending_events: u64) -> HeartbeatRow {
    HeartbeatRow {
        agent_id: pc(pc_number),
        received_at,
        agent_version: "0.9.0".into(),
        claimed_hostname: format!("lab-{pc_number}"),
        packets_seen: 10_000,
        kernel_drops: 4,
        pending_events,
        spool_bytes: 4096,
        events_dropped: 3,
        dropped_spool_cap: 1,
        dropped_spool_error: 0,
        dropped_invalid: 2,
        dropped_queue_full: 0,
        policy_version: 1,
        uptime_seconds: 60,
        events_created: 12,
    }
}

fn health(row: &HeartbeatRow) -> AgentHealthRow {
    AgentHealthRow {
        agent_id: row.agent_id.clone(),
        last_seen: row.received_at,
        agent_version: row.agent_version.clone(),
        claimed_hostname: row.claimed_hostname.clone(),
        pending_events: row.pending_events,
        events_dropped: row.events_dropped,
        kernel_drops: row.kernel_drops,
        policy_version: row.policy_version,
        events_created: row.events_created,
    }
}

async fn check_heartbeats(store: &Store) {
    let newest = HeartbeatRow {
        agent_version: "1.0.0".into(),
        claimed_hostname: "lab-1-renamed".into(),
        kernel_drops: 9,
        events_dropped: 5,
        policy_version: 2,
        events_created: 40,
        ..heartbeat(1, T + 30, 2)
    };
    let other = heartbeat(2, T + 10, 0);
    store
        .insert_heartbeats(&[newest.clone(), heartbeat(1, T, 5), other.clone()])
        .await
        .expect("insert heartbeats");
    assert_eq!(
        store.agent_health(T - 60).await.expect("health"),
        [health(&newest), health(&other)],
        "the newest heartbeat of each agent"
    );
    assert_eq!(
        store.agent_health(T + 20).await.expect("recent health"),
        [health(&newest)]
    );
}

async fn check_policies(store: &Store) {
    assert_eq!(store.latest_policy("lab").await.expect("no policy"), None);
    let first = PolicyRow {
        policy_group: "lab".into(),
        version: 1,
        scan_min_ports: 6,
        episode_idle_seconds: 0,
        allowlisted_sources: vec![addr("198.18.0.5"), addr("fd00:d00::5")],
        updated_at: T,
        updated_by: "alice".into(),
    };
    let second = PolicyRow {
        version: 2,
        episode_idle_seconds: 120,
        allowlisted_sources: vec![],
        updated_at: T + 60,
        updated_by: "bob".into(),
        ..first.clone()
    };
    let library = PolicyRow {
        policy_group: "library".into(),
        scan_min_ports: 20,
        ..first.clone()
    };
    // A slow writer's older version arrives last.
    for row in [&second, &library, &first] {
        store.insert_policy(row).await.expect("insert policy");
    }
    assert_eq!(
        store.latest_policy("lab").await.expect("lab policy"),
        Some(second),
        "the highest version wins"
    );
    assert_eq!(
        store
            .latest_policy("library")
            .await
            .expect("library policy"),
        Some(library)
    );
}

async fn check_allowlist(store: &Store) {
    assert_eq!(store.allowlist().await.expect("no allowlist"), None);
    let newer = AllowlistRow {
        networks: vec!["198.51.100.0/24".into(), "2001:db8:ffff::/48".into()],
        updated_at: T + 10,
    };
    let older = AllowlistRow {
        networks: vec!["198.51.100.7/32".into()],
        updated_at: T,
    };
    store
        .insert_allowlist(&newer)
        .await
        .expect("insert allowlist");
    store.insert_allowlist(&older).await.expect("insert older");
    assert_eq!(
        store.allowlist().await.expect("allowlist"),
        Some(newer),
        "the newest record wins"
    );
}

fn token_row(token_id: &str, created_at: u32) -> TokenRow {
    TokenRow {
        token_id: token_id.into(),
        secret_sha256: hex_sha256(token_id.as_bytes()),
        agent_group: "lab".into(),
        created_at,
        expires_at: created_at + 7 * DAY,
        max_uses: 50,
        revoked: 0,
        revoked_at: 0,
        changed_by: "alice".into(),
        version: 1,
    }
}

fn agent_row(pc_number: u32, token_id: &str, key: &str) -> AgentRow {
    AgentRow {
        agent_id: pc(pc_number),
        hostname: format!("lab-{pc_number}.example"),
        os: "linux".into(),
        agent_version: "1.0.0".into(),
        agent_group: "lab".into(),
        token_id: token_id.into(),
        enrolled_at: T + 100 + 10 * pc_number,
        cert_serial: format!("0{pc_number}ab"),
        cert_not_after: T + 30 * DAY,
        key_sha256: hex_sha256(key.as_bytes()),
        remote: format!("198.18.1.{pc_number}:50000"),
        version: 1,
    }
}

async fn check_tokens_and_agents(store: &Store) {
    let a_revoked = TokenRow {
        revoked: 1,
        revoked_at: T + 500,
        changed_by: "bob".into(),
        version: 2,
        ..token_row("a1b2c3d4e5f60708", T)
    };
    let b = token_row("0102030405060708", T + 5);
    for row in [&token_row("a1b2c3d4e5f60708", T), &b, &a_revoked] {
        store.insert_token(row).await.expect("insert token");
    }
    let renewed = AgentRow {
        cert_serial: "11ab".into(),
        cert_not_after: T + 60 * DAY,
        key_sha256: hex_sha256(b"pc-1 key 2"),
        version: 2,
        ..agent_row(1, "a1b2c3d4e5f60708", "pc-1 key 1")
    };
    let (pc2, pc3) = (
        agent_row(2, "a1b2c3d4e5f60708", "pc-2 key"),
        agent_row(3, "0102030405060708", "pc-3 key"),
    );
    for row in [
        &agent_row(1, "a1b2c3d4e5f60708", "pc-1 key 1"),
        &renewed,
        &pc2,
        &pc3,
    ] {
        store.insert_agent(row).await.expect("insert agent");
    }
    let a_use = TokenUse {
        token: a_revoked,
        uses: 2,
    };
    let b_use = TokenUse { token: b, uses: 1 };
    assert_eq!(
        store.token("a1b2c3d4e5f60708").await.expect("token"),
        Some(a_use.clone()),
        "the newest version, with both agents that enrolled with it"
    );
    assert_eq!(
        store.token("ffffffffffffffff").await.expect("no token"),
        None
    );
    assert_eq!(store.tokens().await.expect("tokens"), [a_use, b_use]);
    assert_eq!(
        store.agent(&pc(1)).await.expect("agent"),
        Some(renewed.clone())
    );
    assert_eq!(store.agent(&pc(9)).await.expect("no agent"), None);
    assert_eq!(store.agents().await.expect("agents"), [renewed, pc2, pc3]);
    assert_eq!(
        store
            .agent_with_key(&hex_sha256(b"pc-1 key 2"))
            .await
            .expect("agent by its key"),
        Some(pc(1)),
        "the renewed key"
    );
    assert_eq!(
        store
            .agent_with_key(&hex_sha256(b"pc-3 key"))
            .await
            .expect("agent by its key"),
        Some(pc(3)),
    );
    assert_eq!(
        store
            .agent_with_key(&hex_sha256(b"unknown"))
            .await
            .expect("no agent"),
        None
    );
}

async fn check_revocations(store: &Store) {
    let revocation = |number, revoked_at, reason: &str, by: &str| RevocationRow {
        agent_id: pc(number),
        revoked_at,
        reason: reason.into(),
        revoked_by: by.into(),
    };
    let first = revocation(2, T + 300, "laptop stolen", "alice");
    let retired = revocation(3, T + 350, "retired", "carol");
    for row in [&revocation(2, T + 400, "again", "bob"), &retired, &first] {
        store
            .insert_revocation(row)
            .await
            .expect("insert revocation");
    }
    assert_eq!(
        store.revocations().await.expect("revocations"),
        [first, retired],
        "each agent once, with its first revocation"
    );
}

/// After [`check_revocations`]: PC 2 (lab-2.example, "pc-2 key") and PC 3
/// (lab-3.example, "pc-3 key") are revoked, PC 1 is not.
async fn check_revoked_matches(store: &Store) {
    let matching = |hostname: &'static str, key: &'static [u8], limit: u64| async move {
        let key = if key.is_empty() {
            String::new()
        } else {
            hex_sha256(key)
        };
        store
            .revoked_matching(hostname, &key, limit)
            .await
            .expect("revoked matching")
    };
    let pc2 = RevokedMatch {
        agent_id: pc(2),
        hostname: "lab-2.example".into(),
        revoked_at: T + 300,
        reason: "laptop stolen".into(),
        hostname_matched: 1,
        key_matched: 0,
    };
    let pc3 = RevokedMatch {
        agent_id: pc(3),
        hostname: "lab-3.example".into(),
        revoked_at: T + 350,
        reason: "retired".into(),
        hostname_matched: 0,
        key_matched: 1,
    };
    assert_eq!(
        matching("LAB-2.Example", b"", 10).await,
        std::slice::from_ref(&pc2),
        "the hostname, in any ASCII case, with the first revocation"
    );
    assert_eq!(
        matching("other", b"pc-3 key", 10).await,
        std::slice::from_ref(&pc3)
    );
    assert_eq!(
        matching("lab-2.example", b"pc-3 key", 10).await,
        [pc3.clone(), pc2.clone()],
        "the most recently revoked first"
    );
    assert_eq!(matching("lab-2.example", b"pc-3 key", 1).await, [pc3]);
    assert_eq!(
        matching("lab-2.example", b"pc-2 key", 10).await,
        [RevokedMatch {
            key_matched: 1,
            ..pc2.clone()
        }],
        "both at once"
    );
    assert_eq!(
        matching("lab-1.example", b"pc-1 key 2", 10).await,
        [],
        "PC 1 is not revoked"
    );
    assert_eq!(matching("lab-2.exampl", b"pc-2 key!", 10).await, []);

    // The current record counts: PC 2 renamed and renewed.
    let renamed = AgentRow {
        hostname: "renamed-2".into(),
        key_sha256: hex_sha256(b"pc-2 key 2"),
        version: 2,
        ..agent_row(2, "a1b2c3d4e5f60708", "pc-2 key")
    };
    store.insert_agent(&renamed).await.expect("insert agent");
    assert_eq!(matching("lab-2.example", b"pc-2 key", 10).await, []);
    assert_eq!(
        matching("renamed-2", b"pc-2 key 2", 10).await,
        [RevokedMatch {
            hostname: "renamed-2".into(),
            key_matched: 1,
            ..pc2
        }]
    );

    // A revoked agent known by hand-made certificate only, renewed without
    // a hostname: an enrollment without one matches nothing.
    let bare = AgentRow {
        hostname: String::new(),
        key_sha256: String::new(),
        ..agent_row(4, "", "unused")
    };
    store.insert_agent(&bare).await.expect("insert agent");
    store
        .insert_revocation(&RevocationRow {
            agent_id: pc(4),
            revoked_at: T + 360,
            reason: "lost".into(),
            revoked_by: "alice".into(),
        })
        .await
        .expect("insert revocation");
    assert_eq!(matching("", b"", 10).await, []);
}

fn revoked_return(return_id: u128, at: u32) -> RevokedReturnRow {
    RevokedReturnRow {
        return_id: Uuid::from_u128(return_id),
        at,
        revoked_agent_id: pc(2),
        revoked_hostname: "lab-2.example".into(),
        revoked_at: T + 300,
        revoked_reason: "laptop stolen".into(),
        hostname_matched: 1,
        key_matched: 0,
        agent_id: pc(7),
        claimed_hostname: "lab-2.example".into(),
        token_id: "0102030405060708".into(),
        remote: "198.18.1.7".into(),
        key_sha256: hex_sha256(b"pc-7 key"),
    }
}

async fn check_revoked_returns(store: &Store) {
    let first = revoked_return(1, T + 1_000);
    let refused = RevokedReturnRow {
        key_matched: 1,
        agent_id: String::new(),
        ..revoked_return(2, T + 2_000)
    };
    store
        .insert_revoked_returns(&[first.clone(), refused.clone()])
        .await
        .expect("insert returns");
    store
        .insert_revoked_returns(std::slice::from_ref(&first))
        .await
        .expect("insert a return again");
    store
        .insert_revoked_returns(&[])
        .await
        .expect("insert nothing");
    assert_eq!(
        store.revoked_returns(T).await.expect("returns"),
        [first.clone(), refused.clone()],
        "oldest first, a resent row once"
    );
    assert_eq!(
        store.revoked_returns(T + 1_001).await.expect("returns"),
        [refused]
    );
    // Its alert is recorded like a campaign's, under the return's id.
    let sent = AlertRow {
        campaign_id: first.return_id,
        severity: 3,
        channel: "webhook".into(),
        status: AlertStatus::Sent,
        attempts: 1,
        at: T + 1_001,
        error: String::new(),
        text: "[doorwatch] Revoked PC back? …".into(),
        subject: AlertSubject::RevokedPcReturned,
    };
    store.insert_alert(&sent).await.expect("insert alert");
    assert_eq!(
        store.alerted(&[first.return_id]).await.expect("alerted"),
        [(first.return_id, "webhook".to_owned(), 3)]
    );
    assert_eq!(
        store.recent_alerts(T + 1_000).await.expect("recent alerts"),
        [sent],
        "the subject round-trips"
    );
}

fn audit(at: u32, action: &str, target: &str) -> AuditRow {
    AuditRow {
        audit_id: Uuid::now_v7(),
        at,
        actor: "alice@example.org".into(),
        role: "admin".into(),
        action: action.into(),
        target: target.into(),
        detail: format!("{action} on {target}"),
        source_ip: "192.0.2.200".into(),
        user_agent: "test/1.0".into(),
    }
}

async fn check_audit(store: &Store) {
    let login = audit(T, "login", "");
    let triage = audit(T + 1, "campaign.triage", &Uuid::now_v7().to_string());
    let revoke = audit(T + 2, "agent.revoke", "pc-2");
    for row in [&login, &triage, &revoke, &triage] {
        store.insert_audit(row).await.expect("insert audit");
    }
    assert_eq!(
        store.audit_log(0, 10).await.expect("audit"),
        [revoke, triage.clone(), login],
        "newest first, a retried write once"
    );
    assert_eq!(store.audit_log(1, 1).await.expect("audit page"), [triage]);
    assert_eq!(store.audit_log(3, 10).await.expect("past the end"), []);
}

// ------------------------------------------- campaigns, alerts, leases

fn campaign(kind: CampaignKind, key: &str, state: CampaignState, last_seen: u32) -> CampaignRow {
    CampaignRow {
        campaign_id: Uuid::now_v7(),
        kind,
        campaign_key: key.into(),
        state,
        severity: 2,
        first_seen: last_seen.min(T),
        last_seen,
        pcs: 2,
        sources: 2,
        ports: 1,
        open_ports: 0,
        explanation: format!("{} campaign about {key}", kind.label()),
        updated_at: last_seen + 5,
        version: 1,
        exposed_ports: 0,
    }
}

fn members(row: &CampaignRow, kind: MemberKind, values: &[&str]) -> Vec<CampaignMemberRow> {
    values
        .iter()
        .map(|value| CampaignMemberRow {
            campaign_id: row.campaign_id,
            member: kind,
            value: (*value).into(),
            first_seen: row.first_seen,
            last_seen: row.last_seen,
        })
        .collect()
}

fn alert(row: &CampaignRow, severity: u8, channel: &str, status: AlertStatus, at: u32) -> AlertRow {
    AlertRow {
        campaign_id: row.campaign_id,
        severity,
        channel: channel.into(),
        status,
        attempts: if status == AlertStatus::Sent { 1 } else { 5 },
        at,
        error: if status == AlertStatus::Sent {
            ""
        } else {
            "connection refused"
        }
        .into(),
        text: format!("{}: severity {severity}", row.campaign_key),
        subject: AlertSubject::Campaign,
    }
}

fn triage(row: &CampaignRow, state: TriageState, at: u32) -> TriageRow {
    TriageRow {
        campaign_id: row.campaign_id,
        state,
        note: format!("now {}", state.label()),
        actor: "alice@example.org".into(),
        at,
    }
}

/// Campaigns of every kind, with the versions that must lose.
struct Campaigns {
    /// 203.0.113.0/24: open at first, then quiet and broader.
    sweep_v1: CampaignRow,
    sweep: CampaignRow,
    /// Port 23: open, then closed.
    botnet_v1: CampaignRow,
    botnet: CampaignRow,
    /// Uploads to 203.0.113.80 (Enum8 value 4, added by a migration).
    outbound: CampaignRow,
    /// A campus PC scanning others, three days ago.
    internal: CampaignRow,
}

fn campaigns() -> Campaigns {
    let sweep_v1 = campaign(
        CampaignKind::Sweep,
        "203.0.113.0/24",
        CampaignState::Open,
        T + 100,
    );
    let sweep = CampaignRow {
        state: CampaignState::Quiet,
        severity: 3,
        last_seen: T + 600,
        updated_at: T + 605,
        pcs: 3,
        open_ports: 2,
        exposed_ports: 1,
        version: 2,
        ..sweep_v1.clone()
    };
    let botnet_v1 = campaign(
        CampaignKind::Distributed,
        "23",
        CampaignState::Open,
        T + 300,
    );
    let botnet = CampaignRow {
        state: CampaignState::Closed,
        last_seen: T + 700,
        version: 2,
        ..botnet_v1.clone()
    };
    let outbound = CampaignRow {
        severity: 4,
        ..campaign(
            CampaignKind::Outbound,
            "upload_volume:203.0.113.80:443",
            CampaignState::Open,
            T + 800,
        )
    };
    let internal = CampaignRow {
        first_seen: T - 3 * DAY,
        ..campaign(
            CampaignKind::Internal,
            "198.18.1.9",
            CampaignState::Quiet,
            T - 3 * DAY + 60,
        )
    };
    Campaigns {
        sweep_v1,
        sweep,
        botnet_v1,
        botnet,
        outbound,
        internal,
    }
}

async fn store_campaigns(store: &Store, c: &Campaigns) {
    // The newer versions first: insertion order must not decide.
    store
        .insert_campaigns(&[
            c.sweep.clone(),
            c.botnet_v1.clone(),
            c.outbound.clone(),
            c.internal.clone(),
        ])
        .await
        .expect("insert campaigns");
    store
        .insert_campaigns(&[c.sweep_v1.clone(), c.botnet.clone()])
        .await
        .expect("insert more versions");
    let mut rows = members(&c.sweep_v1, MemberKind::Source, &["203.0.113.5"]);
    rows.extend(members(
        &c.sweep,
        MemberKind::Source,
        &["203.0.113.5", "203.0.113.6"],
    ));
    rows.extend(members(&c.sweep, MemberKind::Pc, &["pc-1", "pc-2", "pc-3"]));
    rows.extend(members(&c.sweep, MemberKind::Port, &["22"]));
    rows.extend(members(
        &c.botnet,
        MemberKind::Source,
        &["203.0.113.5", "192.0.2.1"],
    ));
    rows.extend(members(&c.botnet, MemberKind::Pc, &["pc-1"]));
    rows.extend(members(&c.botnet, MemberKind::Port, &["23"]));
    rows.extend(members(&c.outbound, MemberKind::Source, &["203.0.113.80"]));
    rows.extend(members(&c.outbound, MemberKind::Pc, &["pc-1", "pc-2"]));
    rows.extend(members(&c.internal, MemberKind::Source, &["198.18.1.9"]));
    store
        .insert_campaign_members(&rows)
        .await
        .expect("insert members");
    store
        .insert_campaign_members(&[])
        .await
        .expect("insert no members");
}

async fn check_campaigns(store: &Store, c: &Campaigns) {
    let active = store.active_campaigns().await.expect("active campaigns");
    assert_eq!(
        sorted_by(active, |r| r.campaign_id),
        sorted_by(
            vec![c.sweep.clone(), c.outbound.clone(), c.internal.clone()],
            |r| r.campaign_id
        ),
        "newest versions not closed, every column (Enum8 kind and state) as written"
    );
    assert_eq!(
        store
            .recent_campaigns(T, 10)
            .await
            .expect("recent campaigns"),
        [c.outbound.clone(), c.botnet.clone(), c.sweep.clone()]
    );
    assert_eq!(
        store.recent_campaigns(T, 1).await.expect("newest campaign"),
        std::slice::from_ref(&c.outbound)
    );
    assert_eq!(
        store
            .campaigns_by_id(&[c.internal.campaign_id, c.sweep.campaign_id])
            .await
            .expect("campaigns by id"),
        [c.sweep.clone(), c.internal.clone()]
    );
    assert_eq!(store.campaigns_by_id(&[]).await.expect("no ids"), []);
}

async fn check_members(store: &Store, c: &Campaigns) {
    let mut expected = members(
        &c.sweep,
        MemberKind::Source,
        &["203.0.113.5", "203.0.113.6"],
    );
    expected.extend(members(&c.sweep, MemberKind::Pc, &["pc-1", "pc-2", "pc-3"]));
    expected.extend(members(&c.sweep, MemberKind::Port, &["22"]));
    assert_eq!(
        store
            .campaign_members(c.sweep.campaign_id)
            .await
            .expect("members"),
        expected,
        "each member once with its latest sighting, Enum8 member as written"
    );
    let counts = store
        .campaign_member_counts(&[c.sweep.campaign_id, c.botnet.campaign_id])
        .await
        .expect("member counts");
    let count = |row: &CampaignRow, sources, pcs, ports| MemberCounts {
        campaign_id: row.campaign_id,
        sources,
        pcs,
        ports,
    };
    assert_eq!(
        sorted_by(counts, |r| r.campaign_id),
        sorted_by(
            vec![count(&c.sweep, 2, 3, 1), count(&c.botnet, 2, 1, 1)],
            |r| r.campaign_id
        )
    );
    assert_eq!(store.campaign_member_counts(&[]).await.expect("none"), []);
    let of_source = store
        .campaigns_of_source("203.0.113.5")
        .await
        .expect("campaigns of a source");
    assert_eq!(
        sorted_by(of_source, |id| *id),
        sorted_by(vec![c.sweep.campaign_id, c.botnet.campaign_id], |id| *id)
    );
    assert_eq!(
        store
            .campaigns_of_source("198.51.100.99")
            .await
            .expect("none"),
        Vec::<Uuid>::new()
    );
    let feed = |source: &str, last_active, campaigns: &[&CampaignRow]| {
        let mut ids: Vec<String> = campaigns
            .iter()
            .map(|c| c.campaign_id.to_string())
            .collect();
        ids.sort();
        FeedSourceRow {
            source: source.into(),
            last_active,
            campaigns: campaigns.len() as u64,
            campaign_ids: ids,
        }
    };
    let feed_now = store.feed_sources(T).await.expect("feed");
    assert_eq!(
        feed_now.len(),
        3,
        "sweep and distributed sources only: {feed_now:?}"
    );
    assert_eq!(feed_now[0].source, "192.0.2.1");
    assert_eq!(
        feed_now[1],
        feed("203.0.113.5", T + 700, &[&c.sweep, &c.botnet])
    );
    assert_eq!(feed_now[2].source, "203.0.113.6");
    assert_eq!(
        (feed_now[0].last_active, feed_now[0].campaigns),
        (T + 700, 1)
    );
    assert_eq!(
        (feed_now[2].last_active, feed_now[2].campaigns),
        (T + 600, 1)
    );
    let recent = store.feed_sources(T + 650).await.expect("recent feed");
    assert_eq!(
        recent
            .iter()
            .map(|r| (r.source.as_str(), r.last_active, r.campaigns))
            .collect::<Vec<_>>(),
        [("192.0.2.1", T + 700, 1), ("203.0.113.5", T + 700, 1)]
    );
}

async fn check_alerts(store: &Store, c: &Campaigns) {
    let first = alert(&c.sweep, 2, "email", AlertStatus::Sent, T + 110);
    let raised = alert(&c.sweep, 3, "email", AlertStatus::Sent, T + 610);
    let gave_up = alert(&c.sweep, 3, "webhook", AlertStatus::GaveUp, T + 620);
    let outbound = alert(&c.outbound, 4, "email", AlertStatus::Sent, T + 810);
    for row in [&outbound, &gave_up, &first, &raised] {
        store.insert_alert(row).await.expect("insert alert");
    }
    assert_eq!(
        store
            .alerts_of(c.sweep.campaign_id)
            .await
            .expect("alerts of"),
        [first, raised.clone(), gave_up.clone()],
        "oldest first, Enum8 status as written"
    );
    assert_eq!(
        store.alerts_of(c.botnet.campaign_id).await.expect("none"),
        []
    );
    let alerted = store
        .alerted(&[c.sweep.campaign_id, c.outbound.campaign_id])
        .await
        .expect("alerted");
    assert_eq!(
        sorted_by(alerted, Clone::clone),
        sorted_by(
            vec![
                (c.sweep.campaign_id, "email".to_owned(), 3),
                (c.sweep.campaign_id, "webhook".to_owned(), 3),
                (c.outbound.campaign_id, "email".to_owned(), 4),
            ],
            Clone::clone
        ),
        "the highest severity per channel"
    );
    assert_eq!(store.alerted(&[]).await.expect("no ids"), []);
    assert_eq!(
        store.recent_alerts(T + 600).await.expect("recent alerts"),
        [outbound, gave_up, raised]
    );
}

async fn check_triage(store: &Store, c: &Campaigns) {
    let new = triage(&c.sweep, TriageState::New, T + 120);
    let acknowledged = triage(&c.sweep, TriageState::Acknowledged, T + 130);
    let false_positive = triage(&c.sweep, TriageState::FalsePositive, T + 140);
    let resolved = triage(&c.outbound, TriageState::Resolved, T + 900);
    for row in [&false_positive, &resolved, &new, &acknowledged] {
        store.insert_triage(row).await.expect("insert triage");
    }
    let history = [new, acknowledged, false_positive];
    assert_eq!(
        store
            .triage_of(&[c.sweep.campaign_id])
            .await
            .expect("triage"),
        history,
        "oldest first, every Enum8 state as written"
    );
    let both = store
        .triage_of(&[c.sweep.campaign_id, c.outbound.campaign_id])
        .await
        .expect("triage of two");
    assert_eq!(both[..3], history);
    assert_eq!(both[3..], [resolved]);
    assert_eq!(store.triage_of(&[]).await.expect("no ids"), []);
}

async fn check_leases(store: &Store) {
    for (name, term, holder, at) in [
        ("alerts", 7, "collector-b", T),
        ("alerts", 7, "collector-a", T + 1),
        ("alerts", 8, "collector-b", T + 30),
        ("feed", 7, "collector-c", T + 2),
    ] {
        store
            .claim_lease(name, term, holder, at)
            .await
            .expect("claim lease");
    }
    let holder = async |name: &str, term: u64| {
        store
            .lease_holder(name, term, T + 60)
            .await
            .expect("holder")
    };
    assert_eq!(
        holder("alerts", 7).await.as_deref(),
        Some("collector-a"),
        "the smallest claimant"
    );
    assert_eq!(holder("alerts", 8).await.as_deref(), Some("collector-b"));
    assert_eq!(holder("feed", 7).await.as_deref(), Some("collector-c"));
    assert_eq!(holder("alerts", 9).await, None);
    // Only claims made before the cut count: collector-a claimed term 7
    // one second after collector-b.
    assert_eq!(
        store
            .lease_holder("alerts", 7, T + 1)
            .await
            .expect("holder")
            .as_deref(),
        Some("collector-b"),
        "a claim made after the term began is not counted"
    );
}

// ---------------------------------------------------------------- retention

async fn check_partitions(setup: &Setup) {
    let store = &setup.store;
    let old = ScanEventRow {
        first_seen: T - 3 * DAY,
        ..last_seen_at(scan("203.0.113.5", 1), T - 3 * DAY + 20)
    };
    let new = scan("203.0.113.5", 2);
    store
        .insert_scan_events(&[old.clone(), new.clone()])
        .await
        .expect("insert scans");
    let old_audit = audit(T - 40 * DAY, "login", "");
    let new_audit = audit(T, "login", "");
    for row in [&old_audit, &new_audit] {
        store.insert_audit(row).await.expect("insert audit");
    }
    let day = |at: u32| setup.value(&format!("SELECT toYYYYMMDD(toDateTime({at}))"));
    let month = |at: u32| setup.value(&format!("SELECT toYYYYMM(toDateTime({at}))"));
    let (old_day, new_day) = (day(old.first_seen), day(new.first_seen));
    let (old_month, new_month) = (month(old_audit.at), month(new_audit.at));
    assert_eq!(
        partition_rows(store, &["scan_events", "audit_log"]).await,
        [
            ("audit_log".to_owned(), old_month.clone(), 1),
            ("audit_log".to_owned(), new_month.clone(), 1),
            ("scan_events".to_owned(), old_day.clone(), 1),
            ("scan_events".to_owned(), new_day.clone(), 1),
        ]
    );
    assert_eq!(partition_rows(store, &["no_such_table"]).await, []);
    store
        .drop_partition("scan_events", &old_day)
        .await
        .expect("drop a day");
    store
        .drop_partition("audit_log", &old_month)
        .await
        .expect("drop a month");
    assert_eq!(
        partition_rows(store, &["scan_events", "audit_log"]).await,
        [
            ("audit_log".to_owned(), new_month, 1),
            ("scan_events".to_owned(), new_day, 1),
        ]
    );
    assert_eq!(store.recent_scan_events(0, 10).await.expect("scans"), [new]);
    assert_eq!(store.audit_log(0, 10).await.expect("audit"), [new_audit]);
    let refused = store.drop_partition("scan_events", "2025-11-24").await;
    assert!(
        matches!(refused, Err(StoreError::Unexpected { .. })),
        "a partition that is not date digits never reaches SQL: {refused:?}"
    );
}

/// (table, partition, rows) of the active partitions of `tables`; every
/// partition holds some bytes.
async fn partition_rows(store: &Store, tables: &[&str]) -> Vec<(String, String, u64)> {
    let rows: Vec<PartitionRow> = store.partitions(tables).await.expect("partitions");
    for row in &rows {
        assert!(row.bytes_on_disk > 0, "{row:?}");
    }
    rows.into_iter()
        .map(|r| (r.table_name, r.partition_value, r.rows))
        .collect()
}

async fn check_campaign_expiry(store: &Store) {
    let old = campaign(
        CampaignKind::Sweep,
        "192.0.2.0/24",
        CampaignState::Closed,
        T - 10 * DAY,
    );
    let revived_v1 = campaign(
        CampaignKind::Distributed,
        "445",
        CampaignState::Closed,
        T - 10 * DAY,
    );
    let revived = CampaignRow {
        state: CampaignState::Open,
        last_seen: T,
        version: 2,
        ..revived_v1.clone()
    };
    store
        .insert_campaigns(&[old.clone(), revived_v1, revived.clone()])
        .await
        .expect("insert campaigns");
    for row in [&old, &revived] {
        store
            .insert_campaign_members(&members(row, MemberKind::Source, &["192.0.2.7"]))
            .await
            .expect("insert members");
        store
            .insert_alert(&alert(
                row,
                2,
                "email",
                AlertStatus::Sent,
                row.last_seen + 1,
            ))
            .await
            .expect("insert alert");
        store
            .insert_triage(&triage(row, TriageState::Resolved, row.last_seen + 2))
            .await
            .expect("insert triage");
    }
    assert_eq!(
        store
            .campaigns_last_seen_before(T - DAY)
            .await
            .expect("expired"),
        [old.campaign_id],
        "a campaign with a recent version is not expired"
    );
    let everything = store
        .campaigns_last_seen_before(T + 1)
        .await
        .expect("all expired");
    assert_eq!(
        sorted_by(everything, |id| *id),
        sorted_by(vec![old.campaign_id, revived.campaign_id], |id| *id)
    );
    store.delete_campaigns(&[]).await.expect("delete nothing");
    store
        .delete_campaigns(&[old.campaign_id])
        .await
        .expect("delete expired");
    let id = old.campaign_id;
    eventually("deleting the expired campaign's rows", async || {
        campaign_rows(store, id).await == (0, 0, 0, 0)
    })
    .await;
    assert_eq!(
        campaign_rows(store, revived.campaign_id).await,
        (1, 1, 1, 1),
        "the other campaign keeps its version, member, alert and triage"
    );
}

/// How many versions, members, alerts and triage changes campaign `id` has.
async fn campaign_rows(store: &Store, id: Uuid) -> (usize, usize, usize, usize) {
    (
        store.campaigns_by_id(&[id]).await.expect("campaign").len(),
        store.campaign_members(id).await.expect("members").len(),
        store.alerts_of(id).await.expect("alerts").len(),
        store.triage_of(&[id]).await.expect("triage").len(),
    )
}

async fn check_lease_expiry(store: &Store) {
    for (term, at) in [(1, T - 7200), (2, T - 120), (3, T)] {
        store
            .claim_lease("alerts", term, "collector-a", at)
            .await
            .expect("claim lease");
    }
    assert_eq!(
        store
            .delete_leases_before(T - 60)
            .await
            .expect("delete old claims"),
        2
    );
    eventually("deleting old lease claims", async || {
        store
            .lease_holder("alerts", 1, T + 60)
            .await
            .expect("holder")
            .is_none()
            && store
                .lease_holder("alerts", 2, T + 60)
                .await
                .expect("holder")
                .is_none()
    })
    .await;
    assert_eq!(
        store
            .lease_holder("alerts", 3, T + 60)
            .await
            .expect("holder")
            .as_deref(),
        Some("collector-a")
    );
    assert_eq!(
        store
            .delete_leases_before(T - 60)
            .await
            .expect("nothing left"),
        0
    );
}

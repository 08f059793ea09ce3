//! doorwatch on a ClickHouse cluster, end to end: Debian's ZooKeeper and
//! four Debian 18.16 servers (two shards of two replicas) on loopback,
//! two collectors on different nodes migrating at once, 100 simulated
//! agents, the console, and faults while events flow: a replica killed
//! with SIGKILL and restarted, ZooKeeper stopped for 30 s, a whole shard
//! restarted. After each, every generated event id is counted exactly
//! once through the Distributed tables, the replicas of each shard agree,
//! and the console answers.
//!
//! Run with `--nocapture` to see the numbers. Needs clickhouse-server,
//! zookeeper and java; fails (never skips) without them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use doorwatch_e2e::clickhouse::ClickHouse;
use doorwatch_e2e::cluster::Cluster;
use doorwatch_e2e::console::{Console, api_token, hash_password};
use doorwatch_e2e::http::request;
use doorwatch_e2e::loadgen::Loadgen;
use doorwatch_e2e::process::{Process, free_port};
use doorwatch_e2e::require;
use doorwatch_e2e::stack::{collector_config, pki_init, start_collector_named};

/// The load generators' agent id prefixes: one per collector.
const PREFIXES: [&str; 2] = ["lga", "lgb"];

struct Campus {
    cluster: Cluster,
    collectors: Vec<(Process, SocketAddr)>,
    console: Console,
    console_token: String,
    pki: std::path::PathBuf,
    dir: tempfile::TempDir,
}

/// Writes a collector config on node `node` into `DIR/NAME/`.
fn collector_on(
    dir: &Path,
    pki: &Path,
    cluster: &Cluster,
    node: usize,
    name: &str,
) -> (std::path::PathBuf, SocketAddr) {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).expect("collector folder");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let extra = format!(
        "compress = false\ncluster = \"{}\"\n",
        doorwatch_e2e::cluster::CLUSTER
    );
    let config = collector_config(&own, listen, pki, &cluster.nodes[node], "doorwatch", &extra);
    (config, listen)
}

fn campus() -> Campus {
    require::tool("clickhouse-server", "clickhouse-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::start(&dir.path().join("cluster"), 2, 2);
    let pki = pki_init(dir.path(), &["127.0.0.1".parse().expect("literal")]);
    // Both collectors start at once, on nodes of different shards: the
    // migrations race, and must converge.
    let (config_a, listen_a) = collector_on(dir.path(), &pki, &cluster, 0, "a");
    let (config_b, listen_b) = collector_on(dir.path(), &pki, &cluster, 2, "b");
    let started = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start_collector_named(&dir.path().join("a"), &config_a, "collector-a"));
        let b = s.spawn(|| start_collector_named(&dir.path().join("b"), &config_b, "collector-b"));
        (
            a.join().expect("collector a"),
            b.join().expect("collector b"),
        )
    });
    eprintln!(
        "two collectors migrated the cluster at once in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (token, entry) = api_token("cluster-check", "admin");
    let hash = hash_password("cluster admin password");
    let console = Console::start(
        dir.path(),
        "console",
        free_port(),
        &cluster.nodes[3],
        None,
        &format!(
            "cluster = \"{}\"\n[local_admin]\nusername = \"admin\"\npassword_hash = \"{hash}\"\n{entry}",
            doorwatch_e2e::cluster::CLUSTER
        ),
    );
    Campus {
        cluster,
        collectors: vec![(a, listen_a), (b, listen_b)],
        console,
        console_token: token,
        pki,
        dir,
    }
}

fn count(node: &ClickHouse, sql: &str) -> u64 {
    node.query_ok(sql)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every node holds each event table as a Replicated table under a
/// Distributed one, each shared table replicated, and the migrations
/// recorded once per version.
fn assert_schema(cluster: &Cluster) {
    for (i, node) in cluster.nodes.iter().enumerate() {
        let engines = node.query_ok(
            "SELECT name, engine FROM system.tables WHERE database = 'doorwatch' \
             AND name IN ('scan_events', 'scan_events_local', 'leases', 'agents', 'schema_migrations') \
             ORDER BY name FORMAT TSV",
        );
        assert_eq!(
            engines,
            "agents\tReplicatedReplacingMergeTree\nleases\tReplicatedMergeTree\n\
             scan_events\tDistributed\nscan_events_local\tReplicatedReplacingMergeTree\n\
             schema_migrations\tReplicatedMergeTree\n",
            "node {i}"
        );
        let versions = count(
            node,
            "SELECT uniqExact(version) FROM doorwatch.schema_migrations",
        );
        assert_eq!(
            versions as usize,
            doorwatch_store::MIGRATIONS.len(),
            "node {i}"
        );
    }
}

/// 50 agents on each collector, `seconds` long.
fn start_load(campus: &Campus, round: &str, seconds: u64) -> Vec<Loadgen> {
    PREFIXES
        .iter()
        .zip(&campus.collectors)
        .map(|(prefix, (_, address))| {
            let prefix = format!("{prefix}{round}");
            Loadgen::start(
                campus.dir.path(),
                *address,
                &campus.pki,
                &prefix,
                &[
                    "--agents",
                    "50",
                    "--rate",
                    "100",
                    "--duration",
                    &seconds.to_string(),
                    "--drain-timeout",
                    "240",
                ],
            )
        })
        .collect()
}

/// Waits until both load generators' events reach the cluster.
fn wait_for_flow(cluster: &Cluster, round: &str) {
    let sql = format!(
        "SELECT uniqExact(substring(agent_id, 1, 4)) FROM doorwatch.scan_events WHERE agent_id LIKE 'lg_{round}%'"
    );
    let got = cluster.nodes[1].poll(&sql, Duration::from_secs(60), |r| r.trim() == "2");
    assert_eq!(
        got.trim(),
        "2",
        "events of both load generators are not flowing"
    );
}

/// How many generated ids a read through `node`'s Distributed tables
/// does not see.
fn missing_ids(cluster: &Cluster, node: usize, round: &str, loads: &[Loadgen]) -> usize {
    let filter = format!("agent_id LIKE 'lg_{round}%'");
    let text = cluster.nodes[node].query_ok(&format!(
        "SELECT toString(event_id) FROM doorwatch.scan_events FINAL WHERE {filter} \
         UNION ALL SELECT toString(event_id) FROM doorwatch.flood_events FINAL WHERE {filter}"
    ));
    let stored: HashSet<&str> = text.lines().collect();
    loads
        .iter()
        .flat_map(Loadgen::ids)
        .filter(|id| !stored.contains(id.as_str()))
        .count()
}

/// Every generated id is stored, and counted once, through the
/// Distributed tables read on `node`.
fn assert_each_id_once(cluster: &Cluster, node: usize, round: &str, loads: &[Loadgen]) -> usize {
    let generated: Vec<String> = loads.iter().flat_map(Loadgen::ids).collect();
    let wanted: HashSet<&str> = generated.iter().map(String::as_str).collect();
    assert_eq!(
        wanted.len(),
        generated.len(),
        "the load generators made duplicate ids"
    );
    let filter = format!("agent_id LIKE 'lg_{round}%'");
    let text = cluster.nodes[node].query_ok(&format!(
        "SELECT toString(event_id) FROM doorwatch.scan_events FINAL WHERE {filter} \
         UNION ALL SELECT toString(event_id) FROM doorwatch.flood_events FINAL WHERE {filter}"
    ));
    let stored: Vec<&str> = text.lines().collect();
    let stored_set: HashSet<&str> = stored.iter().copied().collect();
    let missing = wanted.difference(&stored_set).count();
    let extra = stored_set.difference(&wanted).count();
    assert!(
        missing == 0 && extra == 0,
        "round {round}: {missing} ids missing, {extra} unexpected"
    );
    assert_eq!(
        stored.len(),
        generated.len(),
        "round {round}: an event is counted twice"
    );
    generated.len()
}

/// The replicas of each shard hold the same rows, and both shards hold
/// some: the agents are spread.
fn assert_replicas_agree(cluster: &Cluster) {
    for table in ["scan_events", "flood_events", "agent_heartbeats"] {
        let counts = cluster.wait_replicas_agree(table, Duration::from_secs(120));
        let agree = counts
            .chunks(cluster.replicas)
            .all(|s| s.iter().all(|c| *c == s[0]));
        assert!(agree, "{table}: the replicas did not catch up: {counts:?}");
        assert!(
            counts.iter().all(|c| *c > 0),
            "{table}: a shard holds nothing: {counts:?}"
        );
    }
}

/// The console's overview, campaigns and agents answer from the cluster.
fn assert_console_answers(campus: &Campus) {
    let bearer = format!("Bearer {}", campus.console_token);
    for path in ["/api/v1/overview", "/api/v1/campaigns", "/api/v1/agents"] {
        let answer = request(
            campus.console.port,
            "GET",
            path,
            &[("Authorization", &bearer)],
            "",
        );
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    }
}

fn check_round(campus: &Campus, round: &str, loads: &mut [Loadgen], fault: &str) {
    for load in loads.iter_mut() {
        load.finish(Duration::from_secs(300));
    }
    // Read at once, a replica that is still catching up may answer for
    // its shard: say so, then check once every replica has caught up,
    // through each node's Distributed tables.
    let early = missing_ids(&campus.cluster, 3, round, loads);
    eprintln!("after {fault}, at once: {early} ids not yet visible through node 3");
    assert_replicas_agree(&campus.cluster);
    let mut events = 0;
    for node in 0..campus.cluster.nodes.len() {
        events = assert_each_id_once(&campus.cluster, node, round, loads);
    }
    assert_console_answers(campus);
    eprintln!("after {fault}: {events} events, each counted once; replicas agree; console answers");
}

#[test]
fn a_two_by_two_cluster_keeps_every_event_once_through_faults() {
    let mut campus = campus();
    assert_schema(&campus.cluster);

    // A replica killed as a crash would, then restarted: it catches up.
    let mut loads = start_load(&campus, "1", 40);
    wait_for_flow(&campus.cluster, "1");
    campus.cluster.nodes[1].kill();
    std::thread::sleep(Duration::from_secs(10));
    campus.cluster.nodes[1].restart();
    check_round(&campus, "1", &mut loads, "kill -9 of a replica");

    // ZooKeeper away for 30 s: replicated tables turn read-only, inserts
    // fail, the agents keep their events and resend.
    let mut loads = start_load(&campus, "2", 50);
    wait_for_flow(&campus.cluster, "2");
    campus.cluster.zookeeper.stop();
    std::thread::sleep(Duration::from_secs(30));
    campus.cluster.zookeeper.restart();
    check_round(&campus, "2", &mut loads, "ZooKeeper stopped for 30 s");

    // A whole shard restarted: nothing can be stored for a while.
    let mut loads = start_load(&campus, "3", 40);
    wait_for_flow(&campus.cluster, "3");
    for node in campus.cluster.shard(1) {
        node.stop();
    }
    std::thread::sleep(Duration::from_secs(5));
    for node in campus.cluster.shard(1) {
        node.restart();
    }
    check_round(&campus, "3", &mut loads, "a whole shard restarted");
    for (collector, _) in &mut campus.collectors {
        assert!(
            collector.is_running(),
            "a collector died:\n{}",
            collector.log()
        );
    }
}

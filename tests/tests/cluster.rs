//! doorwatch on a ClickHouse cluster, end to end: Debian's ZooKeeper and
//! four Debian 18.16 servers (two shards of two replicas) on loopback,
//! two collectors on different nodes migrating at once, 100 simulated
//! agents, four real agents in network namespaces whose events land on
//! different shards, swept by nmap, the console, and faults while events
//! flow: a replica killed with SIGKILL and restarted, ZooKeeper stopped
//! for 30 s, a whole shard restarted. After each, every generated event id
//! is counted exactly once through the Distributed tables, the replicas of
//! each shard agree, the sweep is one campaign listing every PC, no alert
//! is repeated, and the console answers.
//!
//! Run with `--nocapture` to see the numbers. Needs root, nmap,
//! clickhouse-server, zookeeper and java; fails (never skips) without
//! them.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use doorwatch_e2e::clickhouse::ClickHouse;
use doorwatch_e2e::cluster::Cluster;
use doorwatch_e2e::console::{Console, api_token, hash_password};
use doorwatch_e2e::http::request;
use doorwatch_e2e::loadgen::{Loadgen, assert_each_stored_once, stored_ids};
use doorwatch_e2e::netns::{Campus as Namespaces, Host};
use doorwatch_e2e::process::run;
use doorwatch_e2e::process::{Process, free_port};
use doorwatch_e2e::receivers::{Received, webhook_receiver};
use doorwatch_e2e::require;
use doorwatch_e2e::stack::{
    agent_config, collector_config, issue_agent, pki_init, start_agent, start_collector_named,
};

/// The load generators' agent id prefixes: one per collector.
const PREFIXES: [&str; 2] = ["lga", "lgb"];

/// The real agents, by collector. cityHash64 of the id picks the shard:
/// pc-a and pc-b land on the first, pc-e and pc-i on the second (checked
/// below from the shards' own tables).
const PCS: [[&str; 2]; 2] = [["pc-a", "pc-e"], ["pc-b", "pc-i"]];

/// The outside scanner's address on the namespace LAN, and its sweep's
/// key (the load generators' scanners stay out of that /24).
const SCANNER: &str = "198.18.0.66";
const SWEEP_KEY: &str = "198.18.0.0/24";

struct Campus {
    // Dropped first: agents, then collectors, then the cluster.
    agents: Vec<Process>,
    pcs: Vec<(String, Host)>,
    scanner: Host,
    collectors: Vec<(Process, SocketAddr, PathBuf)>,
    console: Console,
    console_token: String,
    webhook: Received,
    cluster: Cluster,
    _namespaces: Namespaces,
    pki: PathBuf,
    dir: tempfile::TempDir,
}

/// Writes a collector config on node `node` into `DIR/NAME/`, listening
/// on `ip`; alerts go to the webhook on `webhook_port`.
fn collector_on(
    dir: &Path,
    pki: &Path,
    cluster: &Cluster,
    node: usize,
    name: &str,
    ip: IpAddr,
    webhook_port: u16,
) -> (PathBuf, SocketAddr) {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).expect("collector folder");
    let listen = SocketAddr::new(ip, free_port());
    let extra = format!(
        "compress = false\ncluster = \"{}\"\n[correlation]\ninterval_seconds = 1\n\
         [alerts]\nwebhook_url = \"http://127.0.0.1:{webhook_port}/hook\"\nper_channel_per_minute = 10000\n",
        doorwatch_e2e::cluster::CLUSTER
    );
    let config = collector_config(&own, listen, pki, &cluster.nodes[node], "doorwatch", &extra);
    (config, listen)
}

fn campus() -> Campus {
    require::root();
    require::tool("nmap", "nmap");
    require::tool("clickhouse-server", "clickhouse-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut namespaces = Namespaces::new();
    let (hosts, uplinks) = namespaces.linked_pcs(4);
    let scanner = namespaces.add_host("scanner", &[SCANNER]);
    let collector_ip = IpAddr::V4(uplinks[0].root_ip);
    let cluster = Cluster::start(&dir.path().join("cluster"), 2, 2);
    let pki = pki_init(
        dir.path(),
        &["127.0.0.1".parse().expect("literal"), collector_ip],
    );
    let (webhook_port, webhook) = webhook_receiver();
    // Both collectors start at once, on nodes of different shards: the
    // migrations race, and must converge.
    let (config_a, listen_a) = collector_on(
        dir.path(),
        &pki,
        &cluster,
        0,
        "a",
        collector_ip,
        webhook_port,
    );
    let (config_b, listen_b) = collector_on(
        dir.path(),
        &pki,
        &cluster,
        2,
        "b",
        collector_ip,
        webhook_port,
    );
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
    let mut agents = Vec::new();
    let mut pcs = Vec::new();
    let mut hosts = hosts.into_iter();
    for (names, collector) in PCS.iter().zip([listen_a, listen_b]) {
        for name in names {
            let host = hosts.next().expect("a namespace per PC");
            issue_agent(&pki, name);
            let config = agent_config(dir.path(), &host, collector, &pki, name, "", "");
            let mut agent = start_agent(dir.path(), &host, &config, name);
            agent.wait_for_log("connected to collector", Duration::from_secs(30));
            agents.push(agent);
            pcs.push(((*name).to_owned(), host));
        }
    }
    Campus {
        agents,
        pcs,
        scanner,
        collectors: vec![(a, listen_a, config_a), (b, listen_b, config_b)],
        console,
        console_token: token,
        webhook,
        cluster,
        _namespaces: namespaces,
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
        .map(|(prefix, (_, address, _))| {
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
    let stored = stored_ids(&cluster.nodes[node], &format!("lg_{round}%"));
    let stored: HashSet<&str> = stored.iter().map(String::as_str).collect();
    loads
        .iter()
        .flat_map(Loadgen::ids)
        .filter(|id| !stored.contains(id.as_str()))
        .count()
}

/// Every generated id is stored, and counted once, through the
/// Distributed tables read on `node`; returns how many there are.
fn assert_each_id_once(cluster: &Cluster, node: usize, round: &str, loads: &[Loadgen]) -> usize {
    let generated: Vec<String> = loads.iter().flat_map(Loadgen::ids).collect();
    let stored = stored_ids(&cluster.nodes[node], &format!("lg_{round}%"));
    assert_each_stored_once(&generated, &stored, &format!("round {round}, node {node}"));
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

/// nmap sweeps every PC from outside, bounded in time and ports.
fn sweep(campus: &Campus) {
    let targets: Vec<String> = campus
        .pcs
        .iter()
        .map(|(_, h)| h.ipv4().to_string())
        .collect();
    campus.scanner.nmap(&["-sS", "-p", "1-300"], &targets);
}

/// `doorwatch-collector ARGS --config` of collector `i`: the CLI's reads.
fn cli(campus: &Campus, i: usize, args: &[&str]) -> String {
    run(Command::new(require::binary("doorwatch-collector"))
        .args(args)
        .arg("--config")
        .arg(&campus.collectors[i].2))
}

/// The sweep is one campaign, read through the CLI of either collector,
/// listing every PC, whose events sit on both shards. Returns its id.
fn assert_sweep_is_one_campaign(campus: &Campus) -> String {
    let mut wanted: Vec<&str> = PCS.iter().flatten().copied().collect();
    wanted.sort_unstable();
    let start = Instant::now();
    let sweep = loop {
        let listed = cli(campus, 1, &["campaigns", "list", "--format", "json"]);
        let sweeps: Vec<serde_json::Value> = listed
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .filter(|c: &serde_json::Value| c["kind"] == "sweep" && c["key"] == SWEEP_KEY)
            .collect();
        assert!(
            sweeps.len() <= 1,
            "the sweep is more than one campaign: {sweeps:#?}"
        );
        if let Some(c) = sweeps.first()
            && c["pcs"].as_u64() == Some(wanted.len() as u64)
        {
            break c.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no sweep campaign over every PC within 60 s: {sweeps:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let id = sweep["campaign_id"]
        .as_str()
        .expect("campaign id")
        .to_owned();
    for collector in 0..campus.collectors.len() {
        let shown: serde_json::Value = serde_json::from_str(&cli(
            campus,
            collector,
            &["campaigns", "show", &id, "--format", "json"],
        ))
        .expect("campaigns show prints JSON");
        let mut pcs: Vec<String> = serde_json::from_value(shown["pcs"].clone()).expect("pcs");
        pcs.sort();
        assert_eq!(pcs, wanted, "collector {collector}: every PC is listed");
        assert_eq!(shown["sources"], serde_json::json!([SCANNER]));
    }
    // Where the PCs' events are: each shard's own tables.
    let cluster = &campus.cluster;
    let shards: Vec<Vec<String>> = (0..2)
        .map(|shard| {
            cluster.nodes[shard * cluster.replicas]
                .query_ok(
                    "SELECT DISTINCT agent_id FROM doorwatch.scan_events_local \
                     WHERE agent_id LIKE 'pc-%' ORDER BY agent_id",
                )
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    assert_eq!(
        shards,
        [vec!["pc-a", "pc-b"], vec!["pc-e", "pc-i"]],
        "the swept PCs' events are not on both shards as cityHash64 says"
    );
    id
}

/// No alert went out twice: each (campaign, channel, severity) is
/// recorded sent once, and the webhook got no body twice.
fn assert_no_alert_repeated(campus: &Campus, sweep: &str) {
    let repeated = count(
        &campus.cluster.nodes[1],
        "SELECT count() FROM (SELECT campaign_id, channel, severity, count() AS n \
         FROM doorwatch.alerts WHERE status = 'sent' \
         GROUP BY campaign_id, channel, severity HAVING n > 1)",
    );
    if repeated > 0 {
        let groups = campus.cluster.nodes[1].query_ok(
            "SELECT campaign_id, channel, severity, subject, count() AS n, groupArray(at), groupArray(attempts) \
             FROM doorwatch.alerts WHERE status = 'sent' \
             GROUP BY campaign_id, channel, severity, subject HAVING n > 1 LIMIT 5",
        );
        let logs: Vec<String> = campus
            .collectors
            .iter()
            .map(|(p, _, _)| {
                p.log()
                    .lines()
                    .filter(|l| l.contains("alert sent") || l.contains("lease holder changed"))
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        panic!(
            "{repeated} alerts are recorded sent twice:\n{groups}\n{}",
            logs.join("\n----\n")
        );
    }
    // The load generators' scanners make hundreds of small campaigns, so
    // the sweep's alert may wait behind theirs (the rate limit is raised
    // above: this suite is not about it).
    let start = Instant::now();
    while !campus
        .webhook
        .lock()
        .expect("lock")
        .iter()
        .any(|b| b.contains(sweep))
    {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the sweep was not alerted within 180 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let bodies = campus.webhook.lock().expect("lock").clone();
    let distinct: HashSet<&String> = bodies.iter().collect();
    assert_eq!(
        distinct.len(),
        bodies.len(),
        "the webhook got an alert twice"
    );
    eprintln!(
        "{} alerts on the webhook, none twice; waited {:.1} s for the sweep's",
        bodies.len(),
        start.elapsed().as_secs_f64()
    );
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

fn check_round(campus: &Campus, round: &str, loads: &mut [Loadgen], fault: &str, sweep: &str) {
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
    assert_eq!(
        assert_sweep_is_one_campaign(campus),
        sweep,
        "the sweep changed campaign"
    );
    assert_no_alert_repeated(campus, sweep);
    assert_console_answers(campus);
    eprintln!(
        "after {fault}: {events} events, each counted once; replicas agree; \
         the sweep is one campaign of every PC; no alert repeated; console answers"
    );
}

#[test]
fn a_two_by_two_cluster_keeps_every_event_once_through_faults() {
    let mut campus = campus();
    assert_schema(&campus.cluster);

    // The sweep, while events flow, then a replica killed as a crash
    // would, then restarted: it catches up.
    let mut loads = start_load(&campus, "1", 40);
    wait_for_flow(&campus.cluster, "1");
    sweep(&campus);
    let sweep = assert_sweep_is_one_campaign(&campus);
    campus.cluster.nodes[1].kill();
    std::thread::sleep(Duration::from_secs(10));
    campus.cluster.nodes[1].restart();
    check_round(&campus, "1", &mut loads, "kill -9 of a replica", &sweep);

    // ZooKeeper away for 30 s: replicated tables turn read-only, inserts
    // fail, the agents keep their events and resend.
    let mut loads = start_load(&campus, "2", 50);
    wait_for_flow(&campus.cluster, "2");
    campus.cluster.zookeeper.stop();
    std::thread::sleep(Duration::from_secs(30));
    campus.cluster.zookeeper.restart();
    check_round(
        &campus,
        "2",
        &mut loads,
        "ZooKeeper stopped for 30 s",
        &sweep,
    );

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
    check_round(&campus, "3", &mut loads, "a whole shard restarted", &sweep);
    for agent in &mut campus.agents {
        assert!(agent.is_running(), "an agent died:\n{}", agent.log());
    }
    for (collector, _, _) in &mut campus.collectors {
        assert!(
            collector.is_running(),
            "a collector died:\n{}",
            collector.log()
        );
    }
}

//! Every read command of `doorwatch-collector` against a store that holds
//! one of everything, on either engine (on 26.9 with the crate's row
//! validation on): events, campaigns, agents, tokens, policy, outbound and
//! retention, in both output formats.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use doorwatch_e2e::process::{Process, run};
use doorwatch_e2e::require;
use doorwatch_e2e::stack::{COLLECTOR_NAME, Stack};

const PC: &str = "lg-00000";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn cli(stack: &Stack, args: &[&str]) -> String {
    run(Command::new(require::binary("doorwatch-collector"))
        .args(args)
        .arg("--config")
        .arg(&stack.collector_config))
}

/// The command's `--format json` output, one object a line.
fn json(stack: &Stack, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    cli(stack, &all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: {l:?}: {e}")))
        .collect()
}

/// Scans, knocks, floods and heartbeats from a short load-generator run.
fn generate_events(stack: &Stack) {
    let mut command = Command::new(require::binary("doorwatch-loadgen"));
    command
        .args(["--collector", &stack.collector_address.to_string()])
        .args(["--server-name", COLLECTOR_NAME, "--prefix", "lg"])
        .args(["--agents", "5", "--rate", "200", "--duration", "4"])
        .args(["--heartbeat", "1", "--drain-timeout", "30", "--pki"])
        .arg(&stack.pki);
    let mut loadgen = Process::spawn("loadgen", command, stack.dir.path()).expect("loadgen");
    let start = Instant::now();
    while loadgen.is_running() {
        assert!(start.elapsed() < Duration::from_secs(60), "loadgen hangs");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(loadgen.log().contains("ok: all "), "{}", loadgen.log());
}

/// Outbound rows and a campaign, written as the collector would.
fn insert_outbound_and_campaign(stack: &Stack) -> uuid::Uuid {
    let t = now();
    let remote = "unhex('00000000000000000000FFFFC6120032')"; // 198.18.0.50
    let campaign = uuid::Uuid::new_v4();
    for sql in [
        format!(
            "INSERT INTO doorwatch.flow_minutes (event_id, agent_id, received_at, minute, pid, process, \
             remote, remote_port, protocol, bytes_out, connections) VALUES (toUUID('{}'), '{PC}', \
             toDateTime({t}), toDateTime({t}), 4242, 'curl', {remote}, 8000, 6, 210000000, 1)",
            uuid::Uuid::new_v4()
        ),
        format!(
            "INSERT INTO doorwatch.outbound_anomalies (event_id, episode_id, agent_id, received_at, \
             created_at, kind, pid, process, remote, remote_port, bytes_out, first_seen, last_seen, \
             explanation) VALUES (toUUID('{}'), toUUID('{}'), '{PC}', toDateTime({t}), toDateTime({t}), \
             'upload_volume', 4242, 'curl', {remote}, 8000, 210000000, toDateTime({t}), toDateTime({t}), \
             'curl sent 210 MB')",
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4()
        ),
        format!(
            "INSERT INTO doorwatch.listening_ports (event_id, agent_id, received_at, created_at, protocol, \
             port, pid, process, risk) VALUES (toUUID('{}'), '{PC}', toDateTime({t}), toDateTime({t}), 6, \
             3389, 1, 'xrdp', 'remote desktop')",
            uuid::Uuid::new_v4()
        ),
        format!(
            "INSERT INTO doorwatch.campaigns (campaign_id, kind, campaign_key, state, severity, first_seen, \
             last_seen, pcs, sources, ports, explanation, updated_at, version) VALUES (toUUID('{campaign}'), \
             'sweep', 'C6120064', 'open', 2, toDateTime({t}), toDateTime({t}), 1, 1, 1, 'a sweep', \
             toDateTime({t}), 1)"
        ),
        format!(
            "INSERT INTO doorwatch.campaign_members (campaign_id, member, value, first_seen, last_seen) \
             VALUES (toUUID('{campaign}'), 'pc', '{PC}', toDateTime({t}), toDateTime({t}))"
        ),
    ] {
        stack.clickhouse.query_ok(&sql);
    }
    campaign
}

fn assert_event_and_agent_reads(stack: &Stack) {
    let events = json(stack, &["events", "--since", "10m", "--limit", "50"]);
    assert!(!events.is_empty(), "events from the load generator");
    assert!(cli(stack, &["events", "--since", "10m"]).lines().count() > 1);
    let health = json(stack, &["agents", "health"]);
    assert!(
        health
            .iter()
            .any(|h| h["agent_id"] == PC && h["health"] == "online"),
        "{health:#?}"
    );
    assert!(cli(stack, &["agents", "health"]).contains(PC));
    json(stack, &["agents", "list"]);
    cli(stack, &["agents", "list"]);
}

fn assert_token_policy_and_retention_reads(stack: &Stack) {
    cli(
        stack,
        &["token", "create", "--group", "default", "--expires", "1d"],
    );
    let tokens = json(stack, &["token", "list"]);
    assert_eq!(tokens.len(), 1, "{tokens:#?}");
    assert!(cli(stack, &["token", "list"]).contains("default"));
    assert!(!cli(stack, &["policy", "show"]).is_empty());
    assert!(!json(stack, &["retention", "show"]).is_empty());
}

fn assert_outbound_and_campaign_reads(stack: &Stack, campaign: uuid::Uuid) {
    let anomalies = json(stack, &["outbound", "anomalies"]);
    assert_eq!(anomalies.len(), 1, "{anomalies:#?}");
    assert!(cli(stack, &["outbound", "anomalies"]).contains("curl"));
    let talkers = json(stack, &["outbound", "talkers", "--agent", PC]);
    assert!(
        talkers.iter().any(|t| t.to_string().contains("curl")),
        "{talkers:#?}"
    );
    let destinations = json(stack, &["outbound", "destinations"]);
    assert!(!destinations.is_empty());
    let listening = json(stack, &["outbound", "listening"]);
    assert!(
        listening.iter().any(|l| l.to_string().contains("3389")),
        "{listening:#?}"
    );
    let campaigns = json(stack, &["campaigns", "list"]);
    let id = campaign.to_string();
    assert!(
        campaigns.iter().any(|c| c["campaign_id"] == id.as_str()),
        "{campaigns:#?}"
    );
    let shown = json(stack, &["campaigns", "show", &id]);
    assert!(
        shown.iter().any(|c| c.to_string().contains(PC)),
        "{shown:#?}"
    );
    cli(stack, &["campaigns", "show", &id]);
    cli(stack, &["campaigns", "list"]);
}

#[test]
fn every_read_command_answers_in_both_formats() {
    require::root();
    let loopback: IpAddr = "127.0.0.1".parse().expect("literal");
    let stack = Stack::start_with(loopback, |_| "[correlation]\nenabled = false\n".into());
    generate_events(&stack);
    let campaign = insert_outbound_and_campaign(&stack);
    assert_event_and_agent_reads(&stack);
    assert_token_policy_and_retention_reads(&stack);
    assert_outbound_and_campaign_reads(&stack, campaign);
}

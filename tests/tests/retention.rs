//! Retention with a real collector on either engine: back-dated partitions
//! of every time-series table, old campaigns and old lease claims go;
//! everything inside the window stays, row for row. `retention show` says
//! beforehand what goes, and `retention apply` afterwards finds nothing.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use doorwatch_e2e::process::run;
use doorwatch_e2e::require;
use doorwatch_e2e::stack::Stack;

const DAY: u64 = 86_400;

/// Tables that go by partition, with the column their partition follows.
const PARTITIONED: [(&str, &str); 7] = [
    ("scan_events", "first_seen"),
    ("knock_events", "first_seen"),
    ("flood_events", "first_seen"),
    ("flow_minutes", "minute"),
    ("outbound_anomalies", "first_seen"),
    ("agent_heartbeats", "received_at"),
    ("audit_log", "at"),
];

/// Windows small enough to back-date around: 3 days, the audit log 40.
fn retention_table(enabled: bool) -> String {
    format!(
        "[retention]\nenabled = {enabled}\ncheck_minutes = 1\nevents_days = 3\n\
         outbound_days = 3\nheartbeats_days = 3\ncampaigns_days = 3\naudit_days = 40\n"
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Seconds ago that are kept and that go, for a table's window. Kept:
/// inside the window. Gone: a partition whose every row, plus the time
/// zone day of slack, is past it.
fn ages(table: &str) -> ([u64; 2], [u64; 2]) {
    if table == "audit_log" {
        ([0, 20 * DAY], [100 * DAY, 400 * DAY])
    } else {
        ([0, 2 * DAY], [6 * DAY, 30 * DAY])
    }
}

fn insert_row(stack: &Stack, table: &str, column: &str, at: u64) {
    let id = uuid::Uuid::new_v4();
    // Columns not named get their defaults; the id keeps rows apart.
    let id_column = match table {
        "audit_log" => "audit_id",
        "agent_heartbeats" => "agent_id",
        _ => "event_id",
    };
    let id_value = if id_column == "agent_id" {
        format!("'pc-{id}'")
    } else {
        format!("toUUID('{id}')")
    };
    stack.clickhouse.query_ok(&format!(
        "INSERT INTO doorwatch.{table} ({id_column}, {column}) VALUES ({id_value}, toDateTime({at}))"
    ));
}

fn count(stack: &Stack, sql: &str) -> u64 {
    stack
        .clickhouse
        .query_ok(sql)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: not a count ({e})"))
}

/// Rows of `table` at least `older_than` seconds old (by its partition
/// column), and younger ones.
fn rows_split(stack: &Stack, table: &str, column: &str, older_than: u64) -> (u64, u64) {
    let cutoff = now() - older_than;
    let old = count(
        stack,
        &format!("SELECT count() FROM doorwatch.{table} WHERE {column} < toDateTime({cutoff})"),
    );
    let young = count(
        stack,
        &format!("SELECT count() FROM doorwatch.{table} WHERE {column} >= toDateTime({cutoff})"),
    );
    (old, young)
}

/// Two campaigns, old and new, each with a member, an alert and a
/// triage row; and lease claims, old and new.
fn insert_campaigns_and_leases(stack: &Stack) -> (uuid::Uuid, uuid::Uuid) {
    let (old, new) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for (id, last_seen) in [(old, now() - 10 * DAY), (new, now() - 60)] {
        for sql in [
            format!(
                "INSERT INTO doorwatch.campaigns (campaign_id, kind, state, first_seen, last_seen, version) \
                 VALUES (toUUID('{id}'), 'sweep', 'closed', toDateTime({last_seen}), toDateTime({last_seen}), 1)"
            ),
            format!(
                "INSERT INTO doorwatch.campaign_members (campaign_id, member, value, last_seen) \
                 VALUES (toUUID('{id}'), 'pc', 'pc-1', toDateTime({last_seen}))"
            ),
            format!(
                "INSERT INTO doorwatch.alerts (campaign_id, severity, channel, status, at) \
                 VALUES (toUUID('{id}'), 2, 'webhook', 'sent', toDateTime({last_seen}))"
            ),
            format!(
                "INSERT INTO doorwatch.campaign_triage (campaign_id, state, actor, at) \
                 VALUES (toUUID('{id}'), 'resolved', 'ada', toDateTime({last_seen}))"
            ),
        ] {
            stack.clickhouse.query_ok(&sql);
        }
    }
    for at in [now() - 5 * DAY, now()] {
        stack.clickhouse.query_ok(&format!(
            "INSERT INTO doorwatch.leases (name, term, holder, claimed_at) \
             VALUES ('alerts', {}, 'someone', toDateTime({at}))",
            at / 10
        ));
    }
    (old, new)
}

fn campaign_rows(stack: &Stack, id: uuid::Uuid) -> u64 {
    ["campaigns", "campaign_members", "alerts", "campaign_triage"]
        .iter()
        .map(|t| {
            count(
                stack,
                &format!("SELECT count() FROM doorwatch.{t} WHERE campaign_id = toUUID('{id}')"),
            )
        })
        .sum()
}

fn collector_cli(stack: &Stack, args: &[&str]) -> String {
    run(Command::new(require::binary("doorwatch-collector"))
        .args(args)
        .arg("--config")
        .arg(&stack.collector_config))
}

fn show(stack: &Stack) -> Vec<serde_json::Value> {
    collector_cli(stack, &["retention", "show", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Polls until `done` or 60 s pass (deletes of campaigns are mutations,
/// which the server applies in the background).
fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn assert_show_lists_what_goes(stack: &Stack) {
    let lines = show(stack);
    let due: Vec<&serde_json::Value> = lines.iter().filter(|l| l["due"] == true).collect();
    // Two old partitions per table (they may share one for the audit log's
    // months only if 100 and 400 days fell in one month, which they do not).
    assert_eq!(due.len(), 2 * PARTITIONED.len(), "{lines:#?}");
    let kept = lines
        .iter()
        .filter(|l| l["due"] == false && l.get("partition").is_some())
        .count();
    assert!(kept >= PARTITIONED.len(), "{lines:#?}");
    let expired = lines
        .iter()
        .find_map(|l| l.get("expired_campaigns"))
        .expect("expired campaigns line");
    assert_eq!(expired, 1);
    let text = collector_cli(stack, &["retention", "show"]);
    assert!(
        text.contains("events") && text.contains("3 days") && text.contains("due"),
        "{text}"
    );
}

#[test]
fn old_partitions_campaigns_and_leases_go_and_nothing_inside_the_window_does() {
    require::root();
    let loopback: IpAddr = "127.0.0.1".parse().expect("literal");
    let mut stack = Stack::start_with(loopback, |_| retention_table(false));
    for (table, column) in PARTITIONED {
        let (kept, gone) = ages(table);
        for age in kept.into_iter().chain(gone) {
            insert_row(&stack, table, column, now() - age);
        }
    }
    let (old_campaign, new_campaign) = insert_campaigns_and_leases(&stack);
    assert_show_lists_what_goes(&stack);

    // A collector with retention on applies it by itself, as lease holder.
    stack.stop_collector();
    let config = std::fs::read_to_string(&stack.collector_config).expect("read config");
    std::fs::write(
        &stack.collector_config,
        config.replace("enabled = false", "enabled = true"),
    )
    .expect("write config");
    stack.restart_collector("collector-2");
    let collector = stack.collector.as_mut().expect("collector runs");
    collector.wait_for_log("retention pass done", Duration::from_secs(60));
    let log = collector.log();
    assert!(log.contains("retention dropped a partition"), "{log}");

    for (table, column) in PARTITIONED {
        let (kept, gone) = ages(table);
        // Everything older than the youngest gone row went; all kept rows stay.
        let (old, young) = rows_split(&stack, table, column, gone[0] - DAY / 2);
        assert_eq!((old, young), (0, kept.len() as u64), "{table}");
    }
    eventually("old campaign deleted", || {
        campaign_rows(&stack, old_campaign) == 0
    });
    assert_eq!(
        campaign_rows(&stack, new_campaign),
        4,
        "the new campaign stays whole"
    );
    eventually("old lease claims deleted", || {
        count(
            &stack,
            &format!(
                "SELECT count() FROM doorwatch.leases WHERE claimed_at < toDateTime({})",
                now() - 3 * DAY
            ),
        ) == 0
    });
    assert!(count(&stack, "SELECT count() FROM doorwatch.leases") >= 1);

    let again = collector_cli(&stack, &["retention", "apply"]);
    assert!(
        again.starts_with("dropped 0 partitions (0 rows), deleted 0 campaigns"),
        "{again}"
    );
    assert!(
        show(&stack).iter().all(|l| l["due"] != true),
        "nothing is due any more"
    );
}

//! Least privilege on the real 18.16 server, with the shipped
//! `deploy/clickhouse/users-18.16.xml` in its users.d/: the console user
//! reads doorwatch and writes triage, but changes no schema, deletes
//! nothing and sees no other database; the console's store opens as that
//! user. (The console's pages and triage as that user are in console.rs.)
//! 18.16 only: the chdb engine has no users.

use doorwatch_e2e::clickhouse::{CONSOLE_PASSWORD, CONSOLE_USER, ClickHouse};
use doorwatch_store::{Store, StoreConfig, grants};

fn as_console(clickhouse: &ClickHouse, sql: &str) -> Result<String, String> {
    clickhouse.query_as(CONSOLE_USER, CONSOLE_PASSWORD, sql)
}

fn assert_refused(clickhouse: &ClickHouse, sql: &str) {
    let answer = as_console(clickhouse, sql);
    assert!(
        answer.is_err(),
        "the console user may not run {sql}: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_user_reads_and_triages_but_changes_nothing_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clickhouse = tokio::task::block_in_place(|| {
        ClickHouse::start_server(&dir.path().join("data"), dir.path())
    });
    // The collector (here: the default user) creates the schema.
    let mut config = clickhouse.store_config("doorwatch");
    Store::open(&config).await.expect("schema");
    clickhouse.query_ok("CREATE DATABASE IF NOT EXISTS other");
    clickhouse.query_ok("CREATE TABLE other.t (x UInt8) ENGINE = Memory");

    config.user = CONSOLE_USER.into();
    config.password = Some(CONSOLE_PASSWORD.into());
    let store = Store::connect(&config)
        .await
        .expect("console user connects");
    store
        .check_grants(grants::CONSOLE)
        .await
        .expect("18.16 has no grants to check");
    assert!(store.tokens().await.expect("reads").is_empty());

    let read = as_console(&clickhouse, "SELECT count() FROM doorwatch.scan_events");
    assert_eq!(read.as_deref(), Ok("0\n"));
    as_console(
        &clickhouse,
        "INSERT INTO doorwatch.campaign_triage (campaign_id, state, actor) \
         VALUES (toUUID('00000000-0000-0000-0000-000000000001'), 'resolved', 'ada')",
    )
    .expect("the console writes triage");
    for sql in [
        "CREATE TABLE doorwatch.evil (x UInt8) ENGINE = Memory",
        "ALTER TABLE doorwatch.scan_events DELETE WHERE 1",
        "ALTER TABLE doorwatch.scan_events DROP PARTITION 20261203",
        "ALTER TABLE doorwatch.scan_events ADD COLUMN evil UInt8",
        "DROP TABLE doorwatch.audit_log",
        "RENAME TABLE doorwatch.audit_log TO doorwatch.gone",
        "SELECT count() FROM other.t",
        "INSERT INTO other.t VALUES (1)",
    ] {
        assert_refused(&clickhouse, sql);
    }

    // A wrong password is refused, and the error names the address.
    config.password = Some("wrong".into());
    let refused = Store::connect(&config).await.expect_err("wrong password");
    let text = refused.to_string();
    assert!(text.contains(&clickhouse.url()), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_named_in_the_error() {
    let port = doorwatch_e2e::process::free_port();
    let config = StoreConfig {
        url: format!("http://127.0.0.1:{port}"),
        database: "doorwatch".into(),
        user: "default".into(),
        password: None,
        compress: false,
        cluster: None,
    };
    let error = Store::connect(&config).await.expect_err("nothing listens");
    assert!(error.is_transient(), "{error}");
    let text = error.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
}

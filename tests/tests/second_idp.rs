//! Campus sign-in at a second, independent OpenID provider:
//! django-oauth-toolkit (DOT) on Django (`tests/dot-idp/`), beside
//! `oidc-provider` in the console suite. One console keeps running while
//! the IdP is restarted under it three ways, and headless Chromium signs
//! staff in through DOT's own login form each time:
//!
//! 1. groups in the ID token: ada, alice and victor get admin, analyst and
//!    viewer; each signs out through DOT's RP-initiated logout, which ends
//!    the IdP session too (the next user meets DOT's login form again);
//!    nobody (no groups) is refused and audited as `login.refused`;
//! 2. groups only in userinfo: alice still gets analyst, nobody is still
//!    refused;
//! 3. a key rotation: DOT signs with a new RSA key under a new key id and
//!    serves only that one; the next sign-in works without restarting the
//!    console, which says it fetched the keys again.
//!
//! Everything listens on 127.0.0.1. Needs ClickHouse (the engine
//! `DOORWATCH_TEST_CLICKHOUSE` names), node, chromium, tests/oidc/node_modules
//! and tests/dot-idp/.venv (`deploy/install-deps`); fails (never skips)
//! without them.

use std::path::Path;
use std::time::{Duration, Instant};

use doorwatch_e2e::clickhouse::ClickHouse;
use doorwatch_e2e::console::{CLIENT_ID, CLIENT_SECRET, Console};
use doorwatch_e2e::dot_idp::{Client, DotIdp, Groups};
use doorwatch_e2e::oidc::browse;
use doorwatch_e2e::process::free_port;
use doorwatch_store::Store;
use serde_json::{Value, json};

/// The least time between the console's key fetches for an unknown key
/// (`UNKNOWN_KEY_REFETCH` in console/src/oidc.rs), with a margin.
const REFETCH_SPACING: Duration = Duration::from_secs(11);

/// The test's folder, kept (and named) when the test fails.
struct Folder(Option<tempfile::TempDir>);

impl Folder {
    fn path(&self) -> &Path {
        self.0.as_ref().expect("the folder lives until drop").path()
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("test files kept in {}", dir.keep().display());
        }
    }
}

#[test]
fn campus_sign_in_at_django_oauth_toolkit() {
    let started = Instant::now();
    let folder = Folder(Some(
        tempfile::Builder::new()
            .prefix("doorwatch-e2e-second-idp-")
            .tempdir()
            .expect("temp dir"),
    ));
    let dir = folder.path();
    let ch = ClickHouse::start(&dir.join("clickhouse"), dir);
    // The schema, as a collector would create it.
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(Store::open(&ch.store_config("doorwatch")))
        .expect("the schema");

    // The IdP registers the console's redirect URIs, so the console's port
    // is chosen first.
    let port = free_port();
    let client = Client {
        id: CLIENT_ID.into(),
        secret: CLIENT_SECRET.into(),
        redirect_uri: format!("http://127.0.0.1:{port}/auth/callback"),
        post_logout_redirect_uri: format!("http://127.0.0.1:{port}/login"),
    };
    let idp = DotIdp::start(dir, &client, Groups::InIdToken, "key-1");
    let mut console = Console::start(dir, "console", port, &ch, Some(&idp.issuer), "");
    console
        .process
        .wait_for_log("identity provider discovered", Duration::from_secs(30));
    let keys_fetched = Instant::now();
    let base = console.url();

    let idp = groups_in_the_id_token(dir, &base, &ch, idp);
    let idp = groups_only_in_userinfo(dir, &base, &ch, idp);
    let idp = sign_in_survives_a_key_rotation(dir, &base, &ch, &console, idp, keys_fetched);
    drop(idp);

    // Each refusal is audited, saying where the (empty) groups were read.
    let refused = ch.query_ok(
        "SELECT actor, role, detail FROM doorwatch.audit_log \
         WHERE action = 'login.refused' ORDER BY detail FORMAT TSV",
    );
    assert_eq!(
        refused.lines().collect::<Vec<_>>(),
        [
            "oidc:nobody\tnone\tuser nobody: the groups claim in the ID token () \
             maps to no doorwatch role",
            "oidc:nobody\tnone\tuser nobody: the groups claim in userinfo () \
             maps to no doorwatch role",
        ],
        "one audit row per refusal"
    );
    eprintln!("wall time: {:?}", started.elapsed());
}

/// The campus sign-ins audited so far: `user\trole` lines, sorted.
fn logins(ch: &ClickHouse) -> Vec<String> {
    ch.query_ok(
        "SELECT actor, role FROM doorwatch.audit_log WHERE action = 'login' \
         ORDER BY actor, role FORMAT TSV",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Browser steps: from the console's front page to DOT's login form, and
/// `user` signs in there.
fn sign_in(base: &str, user: &str) -> Vec<Value> {
    vec![
        json!({"goto": format!("{base}/")}),
        json!({"expectUrl": "/login"}),
        json!({"click": "#sso"}),
        // DOT's own form: an IdP session left over from the previous user
        // would skip it and fail here.
        json!({"waitFor": "form#login", "timeout": 10000}),
        json!({"fill": "form#login input[name=username]", "value": user}),
        json!({"fill": "form#login input[name=password]", "value": format!("password-of-{user}")}),
        json!({"click": "#login-submit"}),
    ]
}

/// `user` signs in and gets `role`, then signs out of the console and,
/// through RP-initiated logout, of DOT, back at the console's login page.
fn signed_in_and_out(base: &str, user: &str, role: &str) -> Vec<Value> {
    let mut steps = sign_in(base, user);
    steps.extend([
        json!({"expectText": "span.who", "contains": format!("{user} ({role})")}),
        json!({"click": "form.signout button"}),
        json!({"expectUrl": format!("{base}/login")}),
        json!({"waitFor": "#sso"}),
    ]);
    steps
}

/// `user` signs in at DOT and the console refuses them.
fn refused(base: &str, user: &str) -> Vec<Value> {
    let mut steps = sign_in(base, user);
    steps.extend([
        json!({"expectUrl": "/login?error=failed"}),
        json!({"expectText": "p.error", "contains": "Sign-in failed"}),
    ]);
    steps
}

/// Runs `steps` in a fresh browser, with its files in `DIR/browser-NAME`.
fn run(dir: &Path, name: &str, steps: Vec<Vec<Value>>) -> Value {
    let steps: Vec<Value> = steps.into_iter().flatten().collect();
    let result = browse(
        dir,
        &Value::Array(steps),
        &dir.join(format!("browser-{name}")),
    );
    eprintln!("{name}: {result}");
    assert_eq!(
        result["console_errors"],
        json!([]),
        "CSP or script errors: {result}"
    );
    assert_eq!(result["csp_violations"], json!([]), "{result}");
    result
}

/// Step 1: groups in the ID token.
fn groups_in_the_id_token(dir: &Path, base: &str, ch: &ClickHouse, idp: DotIdp) -> DotIdp {
    run(
        dir,
        "id-token",
        vec![
            signed_in_and_out(base, "ada", "admin"),
            signed_in_and_out(base, "alice", "analyst"),
            signed_in_and_out(base, "victor", "viewer"),
            refused(base, "nobody"),
        ],
    );
    assert_eq!(
        logins(ch),
        ["ada\tadmin", "alice\tanalyst", "victor\tviewer"],
        "each mapped user got the role of their group"
    );
    let log = idp.log();
    for user in ["ada", "alice", "victor", "nobody"] {
        let claims = claims_line(&log, "id token", user);
        assert!(claims.contains("groups"), "{claims}");
    }
    assert!(
        !log.contains("userinfo for"),
        "the ID token had the groups, so userinfo was not asked:\n{log}"
    );
    // Each sign-out went through DOT's end_session endpoint, which
    // redirected back to the console (no prompt: the console sent a valid
    // id_token_hint).
    let logouts = log
        .lines()
        .filter(|l| l.contains("\"GET /o/logout/?") && l.contains("\" 302 "))
        .count();
    assert_eq!(logouts, 3, "{log}");
    idp
}

/// Step 2: DOT restarted with the groups only in userinfo.
fn groups_only_in_userinfo(dir: &Path, base: &str, ch: &ClickHouse, idp: DotIdp) -> DotIdp {
    let idp = idp.restarted(Groups::OnlyInUserinfo, "key-1");
    run(
        dir,
        "userinfo",
        vec![
            signed_in_and_out(base, "alice", "analyst"),
            refused(base, "nobody"),
        ],
    );
    assert_eq!(
        logins(ch),
        [
            "ada\tadmin",
            "alice\tanalyst",
            "alice\tanalyst",
            "victor\tviewer"
        ]
    );
    let log = idp.log();
    for user in ["alice", "nobody"] {
        let id_token = claims_line(&log, "id token", user);
        assert!(!id_token.contains("groups"), "{id_token}");
        let userinfo = claims_line(&log, "userinfo", user);
        assert!(userinfo.contains("groups"), "{userinfo}");
    }
    idp
}

/// Step 3: DOT restarted with a new signing key, the old one no longer
/// served, while the console runs on.
fn sign_in_survives_a_key_rotation(
    dir: &Path,
    base: &str,
    ch: &ClickHouse,
    console: &Console,
    idp: DotIdp,
    keys_fetched: Instant,
) -> DotIdp {
    let old = idp.kid.clone();
    assert_eq!(idp.served_kids(), [old.as_str()]);
    let idp = idp.restarted(Groups::InIdToken, "key-2");
    assert_ne!(idp.kid, old, "a new key id");
    assert_eq!(idp.served_kids(), [idp.kid.as_str()], "the old key is gone");
    // The console fetches keys for an unknown key id at most every 10 s.
    std::thread::sleep(REFETCH_SPACING.saturating_sub(keys_fetched.elapsed()));
    run(
        dir,
        "rotated",
        vec![signed_in_and_out(base, "victor", "viewer")],
    );
    assert_eq!(
        logins(ch),
        [
            "ada\tadmin",
            "alice\tanalyst",
            "alice\tanalyst",
            "victor\tviewer",
            "victor\tviewer"
        ]
    );
    let log = console.process.log();
    assert!(
        log.contains("ID token signed with an unknown key"),
        "the console says why it fetched the keys again:\n{log}"
    );
    idp
}

/// The claim names of the IdP's `what` ("id token" or "userinfo") for
/// `user`, from its log.
fn claims_line(log: &str, what: &str, user: &str) -> String {
    let marker = format!("{what} for {user} has claims ");
    log.lines()
        .find_map(|l| l.split_once(&marker).map(|(_, claims)| claims.to_owned()))
        .unwrap_or_else(|| panic!("no {what} for {user} in the IdP's log:\n{log}"))
}

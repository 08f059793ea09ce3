//! The admin console end to end: a real nmap sweep of three PC namespaces
//! with real agents becomes a campaign in the real collector and
//! ClickHouse; a real OIDC provider (oidc-provider on Node) signs staff in;
//! headless Chromium walks login → overview → campaign → acknowledge →
//! audit log, with screenshots of every main page kept in
//! `target/test-artifacts/console/`. Then the refusals: tampered state,
//! wrong nonce, an expired ID token, a token from another issuer (a rogue
//! IdP), a viewer triaging, no session, a change without a CSRF token,
//! and a wrong local-admin password (refused, then rate-limited).
//!
//! Everything listens on 127.0.0.1; the PCs are 198.18.0.10-12 and the
//! scanner 198.18.0.100. Needs root, nmap, clickhouse-server, node,
//! chromium and tests/oidc/node_modules; fails (never skips) without
//! them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use doorwatch_e2e::clickhouse::{CONSOLE_USER, ClickHouse, Engine};
use doorwatch_e2e::console::{CLIENT_ID, CLIENT_SECRET, Console, api_token, hash_password};
use doorwatch_e2e::http::{get_url, hidden_field as hidden, request as http};
use doorwatch_e2e::netns::{Campus, Host};
use doorwatch_e2e::oidc::{Provider, RogueIdp, browse};
use doorwatch_e2e::process::{Process, free_port, run};
use doorwatch_e2e::require;
use doorwatch_e2e::stack::Stack;
use serde_json::json;

const LOCAL_ADMIN: &str = "breakglass";
const LOCAL_PASSWORD: &str = "correct horse battery staple";

/// Starts a sign-in at the IdP: the browser cookie and where the console
/// sends the browser.
fn start_sign_in(console: &Console) -> (String, String) {
    let login = http(console.port, "GET", "/login", &[], "");
    let browser = login
        .cookie("__Host-doorwatch_browser")
        .expect("browser cookie");
    let start = http(
        console.port,
        "GET",
        "/auth/start?next=/",
        &[("Cookie", &browser)],
        "",
    );
    assert_eq!(start.status, 303, "{start:?}");
    (
        browser,
        start.header("location").expect("to the IdP").to_owned(),
    )
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/console");
    std::fs::create_dir_all(&dir).expect("artifacts folder");
    dir
}

#[test]
fn staff_sign_in_triage_and_every_refusal() {
    require::root();
    require::tool("nmap", "nmap");
    require::tool("clickhouse-server", "clickhouse-server");
    let mut campus = Campus::new();
    let (pcs, uplinks) = campus.linked_pcs(3);
    let scanner = campus.add_host("scanner", &["198.18.0.100"]);
    let stack = Stack::start_with(IpAddr::V4(uplinks[0].root_ip), |_| {
        "[correlation]\ninterval_seconds = 1\ncampus_networks = [\"198.18.0.0/28\"]\n\
         allowlist = [\"198.18.0.96/30\"]\n"
            .to_owned()
    });
    let mut agents: Vec<Process> = pcs
        .iter()
        .enumerate()
        .map(|(i, pc)| stack.agent(pc, &format!("pc-{i}"), ""))
        .collect();
    for agent in &mut agents {
        agent.wait_for_log("connected to collector", Duration::from_secs(30));
    }

    let campaign_id = a_real_sweep(&scanner, &pcs, &stack);
    let dir = stack.dir.path();
    let hash = hash_password(LOCAL_PASSWORD);
    let (viewer_token, viewer_entry) = api_token("viewer-script", "viewer");
    let (admin_token, admin_entry) = api_token("siem", "admin");
    let extra = format!(
        "[local_admin]\nusername = \"{LOCAL_ADMIN}\"\npassword_hash = \"{hash}\"\n{viewer_entry}\n{admin_entry}"
    );
    let ch = &stack.clickhouse;

    // The IdP registers the console's redirect URI, so the console's port
    // is chosen first.
    let port = free_port();
    let provider = Provider::start(
        dir,
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("http://127.0.0.1:{port}/auth/callback"),
        &format!("http://127.0.0.1:{port}/login"),
    );
    let console = Console::start(dir, "console", port, ch, Some(&provider.issuer), &extra);
    let base = console.url();
    if ch.engine() == Engine::Server {
        // Everything below runs as the least-privileged console user.
        let config = std::fs::read_to_string(dir.join("console.toml")).expect("console.toml");
        assert!(
            config.contains(&format!("user = \"{CONSOLE_USER}\"")),
            "{config}"
        );
    }

    the_whole_flow_in_a_real_browser(dir, &base);
    let bearer = format!("Bearer {admin_token}");
    the_api_shows_the_same(&console, &bearer, &campaign_id);
    every_page_and_endpoint_answers(&console, &bearer, &campaign_id);
    an_expired_token_says_so(&console, &stack);
    revokes_through_the_forms(&console, &bearer);
    without_a_session_pages_redirect_and_the_api_refuses(&console);
    a_viewer_may_read_but_not_triage(&console, &viewer_token, &campaign_id);
    let session = the_local_admin_is_rate_limited(&console);
    changes_need_the_csrf_token_and_our_origin(&console, &session, &campaign_id);
    a_tampered_state_is_refused(&console, &provider);
    a_rogue_idp_is_refused(dir, ch, &extra);
    sign_in_survives_the_idps_key_rotation(dir, ch, &extra);
}

/// A real sweep of the PCs: the campaign the console will show. Returns its id.
fn a_real_sweep(scanner: &Host, pcs: &[Host], stack: &Stack) -> String {
    let targets: Vec<String> = pcs.iter().map(|p| p.ipv4().to_string()).collect();
    scanner.nmap(&["-sS", "-p", "1-200"], &targets);
    let start = Instant::now();
    loop {
        let listed = run(Command::new(require::binary("doorwatch-collector"))
            .args(["campaigns", "list", "--format", "json", "--config"])
            .arg(&stack.collector_config));
        if let Some(id) = listed
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|c| c["kind"] == "sweep" && c["pcs"] == 3)
            .and_then(|c| c["campaign_id"].as_str().map(str::to_owned))
        {
            break id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no sweep campaign: {listed}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Step 1: The whole flow in a real browser, as ada (admin).
fn the_whole_flow_in_a_real_browser(dir: &Path, base: &str) {
    let shots = artifacts();
    let result = browse(
        dir,
        &json!([
            {"goto": format!("{base}/")},
            {"expectUrl": "/login"},
            {"screenshot": "login.png"},
            {"click": "#sso"},
            {"login": {"user": "ada"}},
            {"expectText": "h1", "contains": "Overview"},
            {"screenshot": "overview.png"},
            {"click": "a.campaign-link"},
            {"expectText": "h1", "contains": "Campaign"},
            {"select": "select[name=state]", "value": "acknowledged"},
            {"fill": "textarea[name=note]", "value": "seen by the SOC; scanner blocked at the border"},
            {"click": "#triage-submit"},
            {"expectText": ".triage-state", "contains": "acknowledged"},
            {"screenshot": "campaign.png"},
            {"click": "a.host-link"},
            {"expectText": "h1", "contains": "PC pc-"},
            {"screenshot": "host.png"},
            {"goto": format!("{base}/sources/198.18.0.100")},
            {"expectText": "h1", "contains": "198.18.0.100"},
            {"expectText": "main", "contains": "On the blocklist feed"},
            {"expectText": "main", "contains": "Not allowlisted."},
            {"screenshot": "source.png"},
            {"goto": format!("{base}/search?source=198.18.0.100")},
            {"expectText": "main", "contains": "scans."},
            {"screenshot": "search.png"},
            {"goto": format!("{base}/agents")},
            {"expectText": "table.agents", "contains": "pc-0"},
            {"screenshot": "agents.png"},
            {"fill": "input[name=group]", "value": "library"},
            {"click": "#create-token"},
            {"expectText": "#token", "contains": "dwt1-"},
            {"goto": format!("{base}/audit")},
            {"expectText": "table.audit", "contains": "campaign.triage"},
            {"expectText": "table.audit", "contains": "seen by the SOC"},
            {"expectText": "table.audit", "contains": "token.create"},
            {"screenshot": "audit.png"},
            {"click": "form.signout button"},
            {"expectUrl": "/login"},
            {"goto": format!("{base}/campaigns")},
            {"expectUrl": "/login?next=%2Fcampaigns"},
        ]),
        &shots,
    );
    eprintln!("browser: {result}");
    assert_eq!(
        result["console_errors"],
        json!([]),
        "CSP or script errors: {result}"
    );
    assert_eq!(result["csp_violations"], json!([]), "{result}");
}

/// The API shows the same, to a bearer token.
fn the_api_shows_the_same(console: &Console, bearer: &str, campaign_id: &str) {
    let api = api_get(console, bearer, &format!("/api/v1/campaigns/{campaign_id}"));
    assert_eq!(api.status, 200, "{api:?}");
    let detail: serde_json::Value = serde_json::from_str(&api.body).expect("json");
    assert_eq!(detail["campaign"]["triage"], "acknowledged", "{detail}");
    assert_eq!(
        detail["triage_history"][0]["actor"], "ada@campus.test",
        "{detail}"
    );
    let audit = api_get(console, bearer, "/api/v1/audit");
    let allowed = api_get(console, bearer, "/api/v1/sources/198.18.0.97");
    assert!(
        allowed
            .body
            .contains("\"allowlisted_by\":\"198.18.0.96/30\""),
        "{allowed:?}"
    );
    let agents = api_get(console, bearer, "/api/v1/agents");
    assert!(agents.body.contains("\"group\":\"library\""), "{agents:?}");
    assert!(
        audit.body.contains("campaign.triage") && audit.body.contains("\"login\""),
        "{audit:?}"
    );
}

/// Step 2: No session: pages redirect to sign-in, the API says 401.
fn without_a_session_pages_redirect_and_the_api_refuses(console: &Console) {
    let page = http(console.port, "GET", "/campaigns", &[], "");
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login?next=%2Fcampaigns"));
    assert_eq!(
        http(console.port, "GET", "/api/v1/overview", &[], "").status,
        401
    );
    assert_eq!(
        http(
            console.port,
            "GET",
            "/api/v1/overview",
            &[("Authorization", "Bearer nope")],
            ""
        )
        .status,
        401
    );
}

/// Step 3: A viewer may read but not triage.
fn a_viewer_may_read_but_not_triage(console: &Console, viewer_token: &str, campaign_id: &str) {
    let viewer = format!("Bearer {viewer_token}");
    assert_eq!(
        http(
            console.port,
            "GET",
            "/api/v1/overview",
            &[("Authorization", &viewer)],
            ""
        )
        .status,
        200
    );
    let refused = http(
        console.port,
        "POST",
        &format!("/api/v1/campaigns/{campaign_id}/triage"),
        &[
            ("Authorization", &viewer),
            ("Content-Type", "application/json"),
        ],
        r#"{"state": "resolved"}"#,
    );
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        http(
            console.port,
            "GET",
            "/api/v1/audit",
            &[("Authorization", &viewer)],
            ""
        )
        .status,
        403
    );
}

/// Step 4: Local admin: a wrong password is refused, and after five tries from one
/// address the sixth is rate-limited even if right. Returns the session
/// of the one good sign-in.
fn the_local_admin_is_rate_limited(console: &Console) -> String {
    let login = http(console.port, "GET", "/login", &[], "");
    let browser = login
        .cookie("__Host-doorwatch_browser")
        .expect("browser cookie");
    let browser_field = hidden(&login.body, "browser");
    let form = |password: &str| {
        format!(
            "username={LOCAL_ADMIN}&password={}&browser={browser_field}&next=%2F",
            password.replace(' ', "+")
        )
    };
    let local = |body: String| {
        http(
            console.port,
            "POST",
            "/login/local",
            &[
                ("Cookie", &browser),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &body,
        )
    };
    let good = local(form(LOCAL_PASSWORD));
    assert_eq!(good.status, 303, "{good:?}");
    let session = good.cookie("__Host-doorwatch_session").expect("a session");
    for _ in 0..5 {
        let wrong = local(form("guess"));
        assert_eq!(
            wrong.header("location"),
            Some("/login?error=password"),
            "{wrong:?}"
        );
        assert!(wrong.cookie("__Host-doorwatch_session").is_none());
    }
    let limited = local(form(LOCAL_PASSWORD));
    assert_eq!(limited.status, 429, "{limited:?}");

    session
}

/// Step 5: A change without the CSRF token, or from another origin, is refused;
/// with it, it goes through.
fn changes_need_the_csrf_token_and_our_origin(console: &Console, session: &str, campaign_id: &str) {
    let base = console.url();
    let page = http(
        console.port,
        "GET",
        &format!("/campaigns/{campaign_id}"),
        &[("Cookie", session)],
        "",
    );
    assert_eq!(page.status, 200);
    let csrf = hidden(&page.body, "csrf");
    let triage = |body: &str, origin: &str| {
        http(
            console.port,
            "POST",
            &format!("/campaigns/{campaign_id}/triage"),
            &[
                ("Cookie", session),
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Origin", origin),
            ],
            body,
        )
    };
    assert_eq!(triage("state=resolved&note=x", &base).status, 403);
    assert_eq!(
        triage("state=resolved&note=x&csrf=forged", &base).status,
        403
    );
    assert_eq!(
        triage(
            &format!("state=resolved&note=x&csrf={csrf}"),
            "http://evil.example"
        )
        .status,
        403
    );
    assert_eq!(
        triage(&format!("state=resolved&note=closed&csrf={csrf}"), &base).status,
        303
    );
}

/// Step 6: A tampered state: the callback finds no sign-in and refuses.
fn a_tampered_state_is_refused(console: &Console, provider: &Provider) {
    let (browser, to_idp) = start_sign_in(console);
    assert!(to_idp.starts_with(&provider.issuer), "{to_idp}");
    let tampered = http(
        console.port,
        "GET",
        "/auth/callback?code=abc&state=tampered",
        &[("Cookie", &browser)],
        "",
    );
    assert_eq!(
        tampered.header("location"),
        Some("/login?error=failed"),
        "{tampered:?}"
    );
    assert!(tampered.cookie("__Host-doorwatch_session").is_none());
    let log = console.process.log();
    assert!(log.contains("unknown, used or expired state"), "{log}");
}

/// Step 7: A rogue IdP: the right nonce and issuer sign in (the control), so
/// do groups given only by userinfo; a wrong nonce, an expired token,
/// another issuer do not.
fn a_rogue_idp_is_refused(dir: &Path, ch: &ClickHouse, extra: &str) {
    for (mode, reason) in [
        ("ok", ""),
        // Groups only in userinfo: read from there, so the user gets in.
        ("userinfo-groups", ""),
        ("wrong-nonce", "nonce"),
        ("expired", "expired"),
        ("other-issuer", "issuer"),
    ] {
        let rogue = RogueIdp::start(dir, mode, CLIENT_ID);
        let rogue_console = Console::start(
            dir,
            &format!("console-{mode}"),
            free_port(),
            ch,
            Some(&rogue.issuer),
            extra,
        );
        let answer = sign_in_at_a_rogue_idp(&rogue_console);
        if reason.is_empty() {
            assert!(
                answer.cookie("__Host-doorwatch_session").is_some(),
                "{mode}: {answer:?}"
            );
            continue;
        }
        assert_eq!(
            answer.header("location"),
            Some("/login?error=failed"),
            "{mode}: {answer:?}"
        );
        assert!(
            answer.cookie("__Host-doorwatch_session").is_none(),
            "{mode}"
        );
        let log = rogue_console.process.log();
        let refusal = log
            .lines()
            .find(|l| l.contains("sign-in refused"))
            .unwrap_or_else(|| panic!("{mode}: no refusal logged:\n{log}"));
        eprintln!("{mode}: {refusal}");
        assert!(refusal.to_lowercase().contains(reason), "{mode}: {refusal}");
    }
    // Refused campus sign-ins are audited, as local ones are.
    let refused = ch.query_ok(
        "SELECT count() FROM doorwatch.audit_log WHERE action = 'login.refused' AND role = 'none'",
    );
    assert_eq!(refused.trim(), "3", "one audit entry per refused sign-in");
}

/// A sign-in at `console` whose IdP is a rogue one (it signs in at once, no
/// login page): the console's answer to the callback.
fn sign_in_at_a_rogue_idp(console: &Console) -> doorwatch_e2e::http::Answer {
    let (browser, to_idp) = start_sign_in(console);
    let back = get_url(&to_idp, "");
    let callback = back
        .header("location")
        .expect("the IdP redirects back")
        .to_owned();
    let path = callback
        .strip_prefix(&console.url())
        .unwrap_or_else(|| panic!("callback {callback}"));
    http(console.port, "GET", path, &[("Cookie", &browser)], "")
}

/// Step 8: The IdP rotates its signing key while the console runs: the next
/// sign-in fetches the new key set instead of failing until a restart.
fn sign_in_survives_the_idps_key_rotation(dir: &Path, ch: &ClickHouse, extra: &str) {
    let idp = RogueIdp::start(dir, "ok", CLIENT_ID);
    let console = Console::start(
        dir,
        "console-rotation",
        free_port(),
        ch,
        Some(&idp.issuer),
        extra,
    );
    let signed_in = |console: &Console| {
        sign_in_at_a_rogue_idp(console)
            .cookie("__Host-doorwatch_session")
            .is_some()
    };
    assert!(signed_in(&console), "signed in with the first key");
    let _idp = idp.rotated(dir, CLIENT_ID);
    // Fetches for an unknown key are at least 10 s apart.
    std::thread::sleep(Duration::from_secs(10));
    let signed_in_again = signed_in(&console);
    let log = console.process.log();
    assert!(
        signed_in_again,
        "signed in after the rotation without a restart:\n{log}"
    );
    assert!(
        log.contains("ID token signed with an unknown key"),
        "the console says why it fetched the keys again:\n{log}"
    );
}

/// Every page (as the local admin) and every API endpoint (as an admin
/// token) answers 200 with content from this campus.
fn every_page_and_endpoint_answers(console: &Console, bearer: &str, campaign_id: &str) {
    let session = console.local_session(LOCAL_ADMIN, LOCAL_PASSWORD);
    for page in [
        "/".to_owned(),
        "/campaigns".to_owned(),
        format!("/campaigns/{campaign_id}"),
        "/hosts/pc-0".to_owned(),
        "/sources/198.18.0.100".to_owned(),
        "/search?source=198.18.0.100".to_owned(),
        "/search.csv?source=198.18.0.100".to_owned(),
        "/agents".to_owned(),
        "/audit".to_owned(),
        "/static/console.css".to_owned(),
    ] {
        let answer = http(console.port, "GET", &page, &[("Cookie", &session)], "");
        assert_eq!(answer.status, 200, "{page}: {answer:?}");
        assert!(!answer.body.is_empty(), "{page}");
    }
    for endpoint in [
        "/api/v1/overview".to_owned(),
        "/api/v1/campaigns".to_owned(),
        format!("/api/v1/campaigns/{campaign_id}"),
        "/api/v1/hosts/pc-0".to_owned(),
        "/api/v1/sources/198.18.0.100".to_owned(),
        "/api/v1/events?source=198.18.0.100".to_owned(),
        "/api/v1/agents".to_owned(),
        "/api/v1/audit".to_owned(),
    ] {
        let answer = api_get(console, bearer, &endpoint);
        assert_eq!(answer.status, 200, "{endpoint}: {answer:?}");
        serde_json::from_str::<serde_json::Value>(&answer.body)
            .unwrap_or_else(|e| panic!("{endpoint}: not JSON ({e}): {}", answer.body));
    }
    let events = api_get(console, bearer, "/api/v1/events?source=198.18.0.100");
    assert!(events.body.contains("198.18.0.100"), "{events:?}");
}

/// A token past its expiry is shown as expired, not as usable (it once
/// showed "active"; the used-up case is a unit test of the same rule).
fn an_expired_token_says_so(console: &Console, stack: &Stack) {
    let create = |expires: &str, uses: &str| {
        run(Command::new(require::binary("doorwatch-collector"))
            .args([
                "token",
                "create",
                "--group",
                "lab",
                "--expires",
                expires,
                "--max-uses",
                uses,
            ])
            .arg("--config")
            .arg(&stack.collector_config))
    };
    let expired = create("1s", "5");
    std::thread::sleep(Duration::from_secs(2));
    let session = console.local_session(LOCAL_ADMIN, LOCAL_PASSWORD);
    let page = http(console.port, "GET", "/agents", &[("Cookie", &session)], "");
    let id = |token: &str| {
        token
            .trim()
            .split('-')
            .nth(1)
            .map(str::to_owned)
            .expect("token id")
    };
    let row = |token_id: &str| {
        page.body
            .split("<tr>")
            .find(|r| r.contains(token_id))
            .unwrap_or_else(|| panic!("no row for {token_id}: {}", page.body))
            .to_owned()
    };
    assert!(
        row(&id(&expired)).contains("token-state\">expired"),
        "{}",
        row(&id(&expired))
    );
    assert!(
        page.body.contains("token-state\">usable"),
        "the console's own token"
    );
}

/// An admin revokes a token and an agent in the console (writes the
/// console's grants allow), and the API shows both.
fn revokes_through_the_forms(console: &Console, bearer: &str) {
    let session = console.local_session(LOCAL_ADMIN, LOCAL_PASSWORD);
    let page = http(console.port, "GET", "/agents", &[("Cookie", &session)], "");
    let csrf = hidden(&page.body, "csrf");
    let token_id = page
        .body
        .split("/agents/tokens/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("a token row with a revoke form")
        .to_owned();
    let form = [
        ("Cookie", session.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    for path in [
        format!("/agents/tokens/{token_id}/revoke"),
        "/agents/pc-2/revoke".to_owned(),
    ] {
        let answer = http(console.port, "POST", &path, &form, &format!("csrf={csrf}"));
        assert_eq!(answer.status, 303, "{path}: {answer:?}");
    }
    let agents = api_get(console, bearer, "/api/v1/agents");
    let audit = api_get(console, bearer, "/api/v1/audit");
    assert!(
        audit.body.contains("token.revoke") && audit.body.contains("agent.revoke"),
        "{audit:?}"
    );
    assert!(agents.body.contains("revoked"), "{agents:?}");
}

/// GET `path` of the console's API with `bearer` (an `Authorization` value).
fn api_get(console: &Console, bearer: &str, path: &str) -> doorwatch_e2e::http::Answer {
    http(console.port, "GET", path, &[("Authorization", bearer)], "")
}

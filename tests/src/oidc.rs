//! OpenID Connect for the console's end-to-end tests: a real provider
//! (`oidc-provider` on Node), a rogue IdP that hands out ID tokens the
//! console must refuse, and a headless Chromium driven by Playwright.
//!
//! The JavaScript lives in `tests/oidc/` (its header comments document the
//! users, page selectors and step format); `deploy/install-deps` installs
//! Node, Chromium and `tests/oidc/node_modules`. Everything listens and
//! connects on 127.0.0.1 only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::Process;
use crate::require;

/// Debian's Chromium, which the browser driver runs.
pub const CHROMIUM: &str = "/usr/bin/chromium";

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `tests/oidc`, where the scripts live.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// `tests/oidc/node_modules`; panics if `npm ci` has not run there.
pub fn node_modules() -> PathBuf {
    let modules = scripts().join("node_modules");
    assert!(
        modules.join("oidc-provider").is_dir() && modules.join("playwright-core").is_dir(),
        "run deploy/install-deps: tests/oidc/node_modules is missing ({})",
        modules.display()
    );
    modules
}

/// `node SCRIPT`, after checking that Node and the packages are installed.
fn node(script: &str) -> Command {
    let mut command = Command::new(require::tool("node", "nodejs"));
    node_modules();
    command.current_dir(scripts()).arg(scripts().join(script));
    command
}

/// Starts `command`, waits for `PREFIX URL` in its log and returns the URL.
pub(crate) fn start(name: &str, command: Command, dir: &Path, prefix: &str) -> (Process, String) {
    let mut process =
        Process::spawn(name, command, dir).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    process.wait_for_log(prefix, START_TIMEOUT);
    let log = process.log();
    let url = log
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{name} printed no URL after {prefix:?}:\n{log}"))
        .trim()
        .to_owned();
    (process, url)
}

/// A real OpenID provider on 127.0.0.1 with one confidential client
/// (`client_secret_basic` or `client_secret_post`, code flow, PKCE S256)
/// and the users ada (doorwatch-admins), alice (doorwatch-analysts),
/// victor (doorwatch-viewers) and nobody (no groups). Stopped on drop.
#[derive(Debug)]
pub struct Provider {
    /// `http://127.0.0.1:PORT`; discovery is at
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    process: Process,
}

impl Provider {
    /// Starts the provider on a free port, its log in `DIR/oidc-provider.log`.
    pub fn start(
        dir: &Path,
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        post_logout_redirect_uri: &str,
    ) -> Self {
        Self::start_with_args(
            dir,
            client_id,
            client_secret,
            redirect_uri,
            post_logout_redirect_uri,
            &[],
        )
    }

    /// Like [`Provider::start`], with ID tokens that expire after `ttl`.
    pub fn start_with_id_token_ttl(
        dir: &Path,
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        post_logout_redirect_uri: &str,
        ttl: Duration,
    ) -> Self {
        let ttl = ttl.as_secs().max(1).to_string();
        Self::start_with_args(
            dir,
            client_id,
            client_secret,
            redirect_uri,
            post_logout_redirect_uri,
            &["--id-token-ttl", &ttl],
        )
    }

    fn start_with_args(
        dir: &Path,
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        post_logout_redirect_uri: &str,
        extra: &[&str],
    ) -> Self {
        let mut command = node("provider.mjs");
        command
            .args(["--port", "0", "--client-id", client_id])
            .args(["--client-secret", client_secret])
            .args(["--redirect-uri", redirect_uri])
            .args(["--post-logout-redirect-uri", post_logout_redirect_uri])
            .args(extra);
        let (process, issuer) = start("oidc-provider", command, dir, "oidc provider listening on ");
        Self { issuer, process }
    }

    /// The provider's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// A misbehaving IdP on 127.0.0.1 that signs everyone in at once as
/// "mallory" of doorwatch-admins. `mode` is `ok`, `wrong-nonce`,
/// `expired` or `other-issuer` (see `tests/oidc/rogue-idp.mjs`). Stopped
/// on drop.
#[derive(Debug)]
pub struct RogueIdp {
    /// `http://127.0.0.1:PORT`, as its discovery document says.
    pub issuer: String,
    process: Process,
}

impl RogueIdp {
    /// Starts the rogue IdP on a free port, its log in
    /// `DIR/rogue-idp-MODE.log`.
    pub fn start(dir: &Path, mode: &str, client_id: &str) -> Self {
        Self::start_on(dir, mode, client_id, "0", &format!("rogue-idp-{mode}"))
    }

    fn start_on(dir: &Path, mode: &str, client_id: &str, port: &str, name: &str) -> Self {
        let mut command = node("rogue-idp.mjs");
        command.args(["--port", port, "--mode", mode, "--client-id", client_id]);
        let (process, issuer) = start(name, command, dir, "rogue idp listening on ");
        Self { issuer, process }
    }

    /// Stops this IdP (in mode `ok`) and starts another on the same
    /// address, which signs with a new key under a new key id: a key
    /// rotation, as the console sees it. Its log is
    /// `DIR/rogue-idp-rotated.log`.
    pub fn rotated(self, dir: &Path, client_id: &str) -> Self {
        let port = self
            .issuer
            .rsplit(':')
            .next()
            .unwrap_or_else(|| panic!("no port in {}", self.issuer))
            .to_owned();
        drop(self);
        Self::start_on(dir, "ok", client_id, &port, "rogue-idp-rotated")
    }

    /// The rogue IdP's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Runs `steps` (a JSON array, see `tests/oidc/browser.mjs`) in a fresh
/// headless Chromium and returns the driver's JSON result, whose
/// `console_errors` and `csp_violations` a test can assert on. Screenshots
/// go to `out`; the step log is appended to `DIR/browser.log`. Panics with
/// the result, the step log and the paths of `failure.png` and
/// `failure.html` if a step fails.
pub fn browse(dir: &Path, steps: &Value, out: &Path) -> Value {
    let (result, log) = run_browser(dir, steps, out);
    if result["ok"] != Value::Bool(true) {
        panic!(
            "browser step {} failed: {}\nresult: {result}\nsee {} and {}\n---- browser log ----\n{log}",
            result["step"],
            result["error"],
            out.join("failure.png").display(),
            out.join("failure.html").display(),
        );
    }
    result
}

/// Like [`browse`], but returns a failed run's result (`"ok": false`, with
/// `step` and `error`) instead of panicking. Panics only if the driver
/// could not run or printed no result.
pub fn try_browse(dir: &Path, steps: &Value, out: &Path) -> Value {
    run_browser(dir, steps, out).0
}

fn run_browser(dir: &Path, steps: &Value, out: &Path) -> (Value, String) {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: install it with `apt-get install chromium` (deploy/install-deps does this)"
    );
    assert!(steps.is_array(), "browser steps must be a JSON array");
    std::fs::create_dir_all(out).unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
    let script = out.join("steps.json");
    std::fs::write(&script, steps.to_string())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", script.display()));
    let output = node("browser.mjs")
        .arg("--script")
        .arg(&script)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run browser.mjs: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("browser.log"))
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", dir.join("browser.log").display()));
    let _ = writeln!(log, "---- {} ----\n{stderr}", script.display());
    let result = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|result| result.get("ok").is_some())
        .unwrap_or_else(|| {
            panic!(
                "browser.mjs ({}) printed no result:\n{stdout}\n---- stderr ----\n{stderr}",
                output.status
            )
        });
    (result, stderr)
}

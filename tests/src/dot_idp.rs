//! A second OpenID provider, written by other people than `oidc-provider`'s
//! authors and ours: django-oauth-toolkit (DOT) on Django, run by
//! `tests/dot-idp/serve.py` on 127.0.0.1 (its header documents the users,
//! the client and the login page). `deploy/install-deps` installs it into
//! `tests/dot-idp/.venv` from the pins in `tests/dot-idp/requirements.txt`.
//!
//! The IdP keeps its SQLite database in the test's folder, so it can be
//! restarted on the same address with another signing key (a key
//! rotation) or with the groups moved out of the ID token into userinfo.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::http::get_url;
use crate::oidc::start;
use crate::process::Process;

/// Where the IdP puts each user's `groups` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Groups {
    /// In the ID token (and in userinfo).
    InIdToken,
    /// Only in userinfo: the ID token has no `groups` claim at all.
    OnlyInUserinfo,
}

impl Groups {
    fn flag(self) -> &'static str {
        match self {
            Self::InIdToken => "id-token",
            Self::OnlyInUserinfo => "userinfo",
        }
    }
}

/// How the console's client is registered at the IdP.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub secret: String,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: String,
}

/// A running django-oauth-toolkit IdP, stopped on drop.
#[derive(Debug)]
pub struct DotIdp {
    /// `http://127.0.0.1:PORT/o`; discovery is at
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The key id of the key it signs with now (the only one it serves).
    pub kid: String,
    port: u16,
    dir: PathBuf,
    client: Client,
    process: Process,
}

/// `tests/dot-idp`.
fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dot-idp")
}

impl DotIdp {
    /// Starts the IdP on a free port with its database in `DIR/dot-idp`,
    /// signing with the key in `DIR/dot-idp/KEY.pem` (made if missing).
    /// Its log is `DIR/dot-idp-KEY-GROUPS.log` (GROUPS: `id-token` or
    /// `userinfo`).
    ///
    /// # Panics
    /// If the venv is missing (run `deploy/install-deps`) or the IdP does
    /// not start.
    pub fn start(dir: &Path, client: &Client, groups: Groups, key: &str) -> Self {
        Self::start_on(dir, client, groups, key, 0)
    }

    fn start_on(dir: &Path, client: &Client, groups: Groups, key: &str, port: u16) -> Self {
        let python = project().join(".venv/bin/python");
        assert!(
            python.is_file(),
            "django-oauth-toolkit is missing ({}): run `deploy/install-deps` (tests/run does this)",
            python.display()
        );
        let state = dir.join("dot-idp");
        let mut command = Command::new(python);
        // No __pycache__ folders in the source tree.
        command
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(project())
            .arg(project().join("serve.py"))
            .args(["--port", &port.to_string()])
            .arg("--dir")
            .arg(&state)
            .arg("--key")
            .arg(state.join(format!("{key}.pem")))
            .args(["--groups-in", groups.flag()])
            .args(["--client-id", &client.id, "--client-secret", &client.secret])
            .args(["--redirect-uri", &client.redirect_uri])
            .args([
                "--post-logout-redirect-uri",
                &client.post_logout_redirect_uri,
            ]);
        std::fs::create_dir_all(&state)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", state.display()));
        let name = format!("dot-idp-{key}-{}", groups.flag());
        let (process, issuer) = start(&name, command, dir, "dot idp listening on ");
        let kid = process
            .log()
            .lines()
            .find_map(|line| line.strip_prefix("dot idp signing key kid="))
            .unwrap_or_else(|| panic!("{name} printed no key id:\n{}", process.log()))
            .trim()
            .to_owned();
        let port = issuer
            .strip_prefix("http://127.0.0.1:")
            .and_then(|rest| rest.split('/').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in the issuer {issuer}"));
        Self {
            issuer,
            kid,
            port,
            dir: dir.to_owned(),
            client: client.clone(),
            process,
        }
    }

    /// Stops this IdP and starts it again on the same address and
    /// database, signing with `key` and putting groups where `groups`
    /// says. With a new key name that is a key rotation: the old key is
    /// no longer served.
    pub fn restarted(self, groups: Groups, key: &str) -> Self {
        let (dir, client, port) = (self.dir.clone(), self.client.clone(), self.port);
        drop(self);
        Self::start_on(&dir, &client, groups, key, port)
    }

    /// The key ids its JWKS serves now.
    ///
    /// # Panics
    /// If the key set cannot be fetched or read.
    pub fn served_kids(&self) -> Vec<String> {
        let answer = get_url(&format!("{}/.well-known/jwks.json", self.issuer), "");
        assert_eq!(answer.status, 200, "{answer:?}");
        let jwks: Value = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("the JWKS is not JSON ({e}): {}", answer.body));
        jwks["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("no keys in {jwks}"))
            .iter()
            .map(|key| key["kid"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The IdP's log so far (Django's request lines, DOT's refusals, and
    /// a line per ID token and userinfo answer naming its claims).
    pub fn log(&self) -> String {
        self.process.log()
    }
}

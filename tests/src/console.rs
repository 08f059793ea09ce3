//! The real `doorwatch-console` for tests, the demo and the console
//! benchmark: writes its config, checks it with `check-config`, starts it
//! and waits until it listens. Also its helper commands (`hash-password`,
//! `api-token`) and a local-admin sign-in over plain HTTP.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::clickhouse::ClickHouse;
use crate::http::{hidden_field, request};
use crate::process::{Process, run};
use crate::require;

/// The OIDC client the tests register at their IdPs.
pub const CLIENT_ID: &str = "doorwatch-console";
pub const CLIENT_SECRET: &str = "console-secret-0123456789";

/// A running console.
#[derive(Debug)]
pub struct Console {
    pub process: Process,
    pub port: u16,
}

impl Console {
    /// Starts a console on 127.0.0.1:`port` reading `clickhouse` (as the
    /// restricted console user on the 18.16 server); with `issuer`, staff sign in there
    /// (client [`CLIENT_ID`], groups doorwatch-admins, -analysts and
    /// -viewers). `extra` is appended to the config (`[local_admin]`,
    /// `[[api_tokens]]`).
    pub fn start(
        dir: &Path,
        name: &str,
        port: u16,
        clickhouse: &ClickHouse,
        issuer: Option<&str>,
        extra: &str,
    ) -> Self {
        let oidc = match issuer {
            Some(issuer) => {
                let secret = dir.join(format!("{name}.secret"));
                std::fs::write(&secret, CLIENT_SECRET).expect("write the client secret");
                format!(
                    "[oidc]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\n\
                     client_secret_file = \"{}\"\nscopes = [\"profile\", \"email\", \"groups\"]\n\
                     roles = {{ admin = [\"doorwatch-admins\"], analyst = [\"doorwatch-analysts\"], \
                     viewer = [\"doorwatch-viewers\"] }}\n",
                    secret.display()
                )
            }
            None => String::new(),
        };
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
                 {}{oidc}{extra}",
                clickhouse.console_table(dir)
            ),
        )
        .expect("write console.toml");
        run(Command::new(require::binary("doorwatch-console"))
            .args(["check-config", "--config"])
            .arg(&config));
        let mut command = Command::new(require::binary("doorwatch-console"));
        command.args(["serve", "--config"]).arg(&config);
        let mut process = Process::spawn(name, command, dir).expect("start the console");
        process.wait_for_log("console listening", Duration::from_secs(60));
        Self { process, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Signs in as the local admin; returns the session cookie
    /// (`name=value`).
    ///
    /// # Panics
    /// If the sign-in is refused.
    pub fn local_session(&self, username: &str, password: &str) -> String {
        let login = request(self.port, "GET", "/login", &[], "");
        let browser = login
            .cookie("__Host-doorwatch_browser")
            .expect("browser cookie");
        let field = hidden_field(&login.body, "browser");
        let answer = request(
            self.port,
            "POST",
            "/login/local",
            &[
                ("Cookie", &browser),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &format!(
                "username={username}&password={}&browser={field}&next=%2F",
                password.replace(' ', "+")
            ),
        );
        answer
            .cookie("__Host-doorwatch_session")
            .unwrap_or_else(|| panic!("local sign-in refused: {answer:?}"))
    }
}

/// `doorwatch-console hash-password` with the password on stdin.
pub fn hash_password(password: &str) -> String {
    let mut child = Command::new(require::binary("doorwatch-console"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let output = child.wait_with_output().expect("hash-password output");
    assert!(output.status.success(), "hash-password failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `doorwatch-console api-token`: (token, its `[[api_tokens]]` entry).
pub fn api_token(name: &str, role: &str) -> (String, String) {
    let out = run(Command::new(require::binary("doorwatch-console")).args([
        "api-token",
        "--name",
        name,
        "--role",
        role,
    ]));
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token (shown only now): "))
        .expect("token line")
        .to_owned();
    let entry = out[out.find("[[api_tokens]]").expect("entry")..].to_owned();
    (token, entry)
}

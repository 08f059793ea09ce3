//! A real ClickHouse engine on loopback, with its data in a folder of the
//! caller's choosing, and a tiny HTTP client for assertions in SQL.
//!
//! Two engines stand behind the same HTTP interface, chosen by one switch,
//! `DOORWATCH_TEST_CLICKHOUSE` (see [`Engine`]): Debian's `clickhouse-server`
//! 18.16, and the ClickHouse 26.9 engine (PyPI's chdb-core) behind
//! `tests/chdb/clickhouse_http.py`. `tests/run` runs the suite on both.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{self, Process};
use crate::require;

/// Which ClickHouse engine a test talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Debian's `clickhouse-server` 18.16, a real server (the default).
    Server,
    /// The ClickHouse 26.9 engine, in-process in chdb-core, behind a small
    /// HTTP front (`tests/chdb/clickhouse_http.py`). No users, grants or
    /// clusters: see docs/clickhouse.md.
    Chdb,
}

/// The console's ClickHouse user on the 18.16 server, from
/// `deploy/clickhouse/users-18.16.xml` (the chdb engine has no users).
pub const CONSOLE_USER: &str = "doorwatch_console";
/// Its password in tests.
pub const CONSOLE_PASSWORD: &str = "console-test-password";

/// The environment variable that picks the engine: `server` or `chdb`.
pub const ENGINE_VARIABLE: &str = "DOORWATCH_TEST_CLICKHOUSE";

impl Engine {
    /// The engine `DOORWATCH_TEST_CLICKHOUSE` names; `server` when unset.
    ///
    /// # Panics
    /// On any other value, naming the ones it takes.
    pub fn from_env() -> Self {
        match std::env::var(ENGINE_VARIABLE).as_deref() {
            Err(_) | Ok("") | Ok("server") => Self::Server,
            Ok("chdb") => Self::Chdb,
            Ok(other) => panic!(
                "{ENGINE_VARIABLE}={other:?}: use \"server\" (ClickHouse 18.16) or \"chdb\" (ClickHouse 26.9)"
            ),
        }
    }
}

/// A running ClickHouse engine, stopped on drop.
#[derive(Debug)]
pub struct ClickHouse {
    engine: Engine,
    process: Option<Process>,
    data: PathBuf,
    logs: PathBuf,
    pub http_port: u16,
    tcp_port: u16,
    interserver_port: u16,
    /// Settings for a config.d file (a cluster node's); `None`: Debian's
    /// config.xml as it is.
    node_config: Option<String>,
}

/// The three ports of a server, chosen before it starts (a cluster's
/// `remote_servers` names every node's TCP port).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub tcp: u16,
    pub interserver: u16,
}

impl Ports {
    /// Three free ports.
    pub fn free() -> Self {
        Self {
            http: process::free_port(),
            tcp: process::free_port(),
            interserver: process::free_port(),
        }
    }
}

impl ClickHouse {
    /// Starts the engine `DOORWATCH_TEST_CLICKHOUSE` names (see
    /// [`Engine::from_env`]) with its data in `data`, and waits until it
    /// answers.
    pub fn start(data: &Path, logs: &Path) -> Self {
        Self::start_engine(Engine::from_env(), data, logs)
    }

    /// Starts Debian's 18.16 server whatever the switch says: for tests
    /// that need what only a server has (its own process to measure,
    /// users.xml, several instances).
    pub fn start_server(data: &Path, logs: &Path) -> Self {
        Self::start_engine(Engine::Server, data, logs)
    }

    /// Starts `engine` with its data in `data` and waits until it answers.
    pub fn start_engine(engine: Engine, data: &Path, logs: &Path) -> Self {
        Self::start_with(engine, data, logs, Ports::free(), None)
    }

    /// Starts Debian's 18.16 server on `ports` with `node_config` (the
    /// inside of a `<yandex>` config.d file: remote_servers, zookeeper,
    /// macros) on top of Debian's config.xml: one node of a cluster.
    pub fn start_node(data: &Path, logs: &Path, ports: Ports, node_config: String) -> Self {
        Self::start_with(Engine::Server, data, logs, ports, Some(node_config))
    }

    fn start_with(
        engine: Engine,
        data: &Path,
        logs: &Path,
        ports: Ports,
        node_config: Option<String>,
    ) -> Self {
        let mut server = Self {
            engine,
            process: None,
            data: data.to_owned(),
            logs: logs.to_owned(),
            http_port: ports.http,
            tcp_port: ports.tcp,
            interserver_port: ports.interserver,
            node_config,
        };
        server.restart();
        server
    }

    /// Which engine this is.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The server's process id, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// The native-protocol port (what a cluster's nodes reach each other on).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// Kills the server with SIGKILL, as a crash would, keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// The HTTP endpoint, e.g. `http://127.0.0.1:8123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// How a store reaches `database` here: the default user, no
    /// compression (the server is on this host).
    pub fn store_config(&self, database: &str) -> doorwatch_store::StoreConfig {
        doorwatch_store::StoreConfig {
            url: self.url(),
            database: database.to_owned(),
            user: "default".into(),
            password: None,
            compress: false,
            cluster: None,
        }
    }

    /// Starts the engine again (after [`ClickHouse::stop`]) on the same
    /// ports and data.
    pub fn restart(&mut self) {
        std::fs::create_dir_all(self.data.join("tmp")).expect("clickhouse data folder");
        let command = match self.engine {
            Engine::Server => self.server_command(),
            Engine::Chdb => self.chdb_command(),
        };
        let process = Process::spawn("clickhouse", command, &self.logs).expect("start clickhouse");
        self.process = Some(process);
        let start = Instant::now();
        while self.query("SELECT 1").as_deref() != Ok("1\n") {
            if let Some(p) = self.process.as_mut()
                && !p.is_running()
            {
                panic!(
                    "clickhouse ({:?}) exited at start:\n{}",
                    self.engine,
                    p.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "clickhouse ({:?}) did not answer within 60 s",
                self.engine
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's users: Debian's users.xml (the `default` user) with
    /// doorwatch's shipped `users-18.16.xml` in its users.d/, as a campus
    /// installs it, passwords filled in. Returns the users.xml path.
    fn write_users(&self) -> PathBuf {
        let dir = self.data.with_extension("users");
        std::fs::create_dir_all(dir.join("users.d")).expect("users folder");
        let debian = std::fs::read_to_string("/etc/clickhouse-server/users.xml")
            .expect("Debian's /etc/clickhouse-server/users.xml (package clickhouse-server)");
        std::fs::write(dir.join("users.xml"), debian).expect("write users.xml");
        let shipped =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clickhouse/users-18.16.xml");
        let doorwatch = std::fs::read_to_string(&shipped)
            .expect("deploy/clickhouse/users-18.16.xml")
            .replace(
                "CONSOLE-SHA256-HEX",
                &doorwatch_store::hex_sha256(CONSOLE_PASSWORD.as_bytes()),
            )
            .replace(
                "COLLECTOR-SHA256-HEX",
                &doorwatch_store::hex_sha256(b"collector-test-password"),
            );
        std::fs::write(dir.join("users.d/doorwatch.xml"), doorwatch).expect("write users.d");
        dir.join("users.xml")
    }

    /// The `[clickhouse]` table of a console.toml for this engine: on the
    /// 18.16 server the console signs in as the restricted
    /// [`CONSOLE_USER`]; the chdb engine has no users.
    pub fn console_table(&self, dir: &Path) -> String {
        let common = format!("[clickhouse]\nurl = \"{}\"\ncompress = false\n", self.url());
        match self.engine {
            Engine::Chdb => common,
            Engine::Server => {
                let password = dir.join("console-clickhouse.password");
                std::fs::write(&password, CONSOLE_PASSWORD).expect("write the password file");
                format!(
                    "{common}user = \"{CONSOLE_USER}\"\npassword_file = \"{}\"\n",
                    password.display()
                )
            }
        }
    }

    /// Debian's config.xml, or for a cluster node a copy beside a
    /// config.d/ holding the node's settings (config.d is read from the
    /// config file's folder).
    fn write_config(&self) -> PathBuf {
        let debian = PathBuf::from("/etc/clickhouse-server/config.xml");
        let Some(node) = &self.node_config else {
            return debian;
        };
        let dir = self.data.with_extension("config");
        std::fs::create_dir_all(dir.join("config.d")).expect("config folder");
        std::fs::copy(&debian, dir.join("config.xml")).expect("copy Debian's config.xml");
        std::fs::write(
            dir.join("config.d/node.xml"),
            format!("<yandex>\n<interserver_http_host>127.0.0.1</interserver_http_host>\n{node}\n</yandex>\n"),
        )
        .expect("write config.d/node.xml");
        dir.join("config.xml")
    }

    fn server_command(&self) -> Command {
        let users = self.write_users();
        let config = self.write_config();
        let d = self.data.display();
        let l = self.logs.display();
        let mut command = Command::new(require::tool("clickhouse-server", "clickhouse-server"));
        command.args([
            format!("--config-file={}", config.display()),
            "--".to_owned(),
            format!("--path={d}/"),
            format!("--tmp_path={d}/tmp/"),
            format!("--logger.log={l}/clickhouse-server.log"),
            format!("--logger.errorlog={l}/clickhouse-server.err.log"),
            "--logger.level=warning".to_owned(),
            format!("--http_port={}", self.http_port),
            format!("--tcp_port={}", self.tcp_port),
            format!("--interserver_http_port={}", self.interserver_port),
            "--listen_host=127.0.0.1".to_owned(),
            format!("--users_config={}", users.display()),
        ]);
        command
    }

    fn chdb_command(&self) -> Command {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("chdb");
        let python = fixture.join(".venv/bin/python");
        assert!(
            python.is_file(),
            "the ClickHouse 26.9 test engine is missing ({}): run `deploy/install-deps` (tests/run does this)",
            python.display()
        );
        let mut command = Command::new(python);
        command
            .arg(fixture.join("clickhouse_http.py"))
            .arg("--path")
            .arg(&self.data)
            .args(["--port", &self.http_port.to_string()]);
        command
    }

    /// Stops the server (SIGTERM), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(20));
        }
    }

    /// Runs `sql` over HTTP and returns the body, or the error text.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        http_post(self.http_port, sql, None)
    }

    /// [`ClickHouse::query`] signed in as `user` with `password`.
    pub fn query_as(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        http_post(self.http_port, sql, Some((user, password)))
    }

    /// Like [`ClickHouse::query`], panicking on error.
    pub fn query_ok(&self, sql: &str) -> String {
        self.query(sql)
            .unwrap_or_else(|e| panic!("query failed: {sql}\n{e}"))
    }

    /// Polls `sql` until `accept` likes its result or `timeout` passes;
    /// returns the last result.
    pub fn poll(&self, sql: &str, timeout: Duration, accept: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let result = self.query(sql).unwrap_or_default();
            if accept(&result) || start.elapsed() >= timeout {
                return result;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1.0 POST to loopback, enough for ClickHouse's interface.
fn http_post(port: u16, body: &str, auth: Option<(&str, &str)>) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let auth = auth.map_or_else(String::new, |(user, password)| {
        format!("X-ClickHouse-User: {user}\r\nX-ClickHouse-Key: {password}\r\n")
    });
    let request = format!(
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed response: {response}"))?;
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(body.to_owned())
    } else {
        Err(format!(
            "{}\n{body}",
            head.lines().next().unwrap_or_default()
        ))
    }
}

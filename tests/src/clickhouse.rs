//! A real ClickHouse server on loopback, with its data in a folder of the
//! caller's choosing, and a tiny HTTP client for assertions in SQL.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{self, Process};
use crate::require;

/// A running ClickHouse server, stopped on drop.
#[derive(Debug)]
pub struct ClickHouse {
    process: Option<Process>,
    data: PathBuf,
    logs: PathBuf,
    pub http_port: u16,
    tcp_port: u16,
    interserver_port: u16,
}

impl ClickHouse {
    /// Starts a server with its data in `data` and waits until it answers.
    pub fn start(data: &Path, logs: &Path) -> Self {
        require::tool("clickhouse-server", "clickhouse-server");
        let mut server = Self {
            process: None,
            data: data.to_owned(),
            logs: logs.to_owned(),
            http_port: process::free_port(),
            tcp_port: process::free_port(),
            interserver_port: process::free_port(),
        };
        server.restart();
        server
    }

    /// The server's process id, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
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
        }
    }

    /// Starts the server again (after [`ClickHouse::stop`]) on the same
    /// ports and data.
    pub fn restart(&mut self) {
        std::fs::create_dir_all(self.data.join("tmp")).expect("clickhouse data folder");
        let d = self.data.display();
        let l = self.logs.display();
        let mut command = Command::new(require::tool("clickhouse-server", "clickhouse-server"));
        command.args([
            "--config-file=/etc/clickhouse-server/config.xml".to_owned(),
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
        ]);
        let process =
            Process::spawn("clickhouse", command, &self.logs).expect("start clickhouse-server");
        self.process = Some(process);
        let start = Instant::now();
        while self.query("SELECT 1").as_deref() != Ok("1\n") {
            if let Some(p) = self.process.as_mut()
                && !p.is_running()
            {
                panic!("clickhouse-server exited at start:\n{}", p.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "clickhouse-server did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (SIGTERM), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(20));
        }
    }

    /// Runs `sql` over HTTP and returns the body, or the error text.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        http_post(self.http_port, sql)
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
fn http_post(port: u16, body: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
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

//! A real ClickHouse cluster on loopback: Debian's ZooKeeper and
//! `shards × replicas` Debian 18.16 servers, each with its own data,
//! ports and `<macros>`, all in one `remote_servers` cluster named
//! [`CLUSTER`]. Everything stops on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::clickhouse::{ClickHouse, Ports};
use crate::process::{self, Process};
use crate::require;

/// The cluster's name in every node's `remote_servers`.
pub const CLUSTER: &str = "doorwatch";

/// Debian's `zookeeper` package, run as one standalone server.
#[derive(Debug)]
pub struct ZooKeeper {
    process: Option<Process>,
    dir: PathBuf,
    pub port: u16,
}

impl ZooKeeper {
    /// Starts a standalone ZooKeeper with its data in `dir` and waits until
    /// it answers `ruok`.
    pub fn start(dir: &Path) -> Self {
        let mut zookeeper = Self {
            process: None,
            dir: dir.to_owned(),
            port: process::free_port(),
        };
        zookeeper.restart();
        zookeeper
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        let jar = PathBuf::from("/usr/share/java/zookeeper.jar");
        assert!(
            jar.is_file(),
            "{} is missing: install Debian's zookeeper package (deploy/install-deps does)",
            jar.display()
        );
        let java = require::tool("java", "default-jre-headless");
        let conf = self.dir.join("conf");
        std::fs::create_dir_all(self.dir.join("data")).expect("zookeeper data folder");
        std::fs::create_dir_all(&conf).expect("zookeeper conf folder");
        std::fs::write(
            conf.join("zoo.cfg"),
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=ruok\n",
                self.dir.join("data").display(),
                self.port
            ),
        )
        .expect("write zoo.cfg");
        let mut command = Command::new(java);
        command
            .arg("-cp")
            .arg(format!("{}:{}", conf.display(), jar.display()))
            .arg("-Xmx256m")
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(conf.join("zoo.cfg"));
        self.process =
            Some(Process::spawn("zookeeper", command, &self.dir).expect("start zookeeper"));
        let start = Instant::now();
        while !self.answers() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "zookeeper did not answer within 60 s:\n{}",
                self.process.as_ref().map(Process::log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops it (SIGTERM), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }

    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reply = String::new();
        stream.write_all(b"ruok").is_ok()
            && stream.read_to_string(&mut reply).is_ok()
            && reply == "imok"
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// ZooKeeper and the cluster's servers, node `i` being replica
/// `i % replicas + 1` of shard `i / replicas + 1`.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<ClickHouse>,
    pub zookeeper: ZooKeeper,
    pub replicas: usize,
    dir: PathBuf,
}

impl Cluster {
    /// Starts ZooKeeper and `shards × replicas` servers under `dir`.
    pub fn start(dir: &Path, shards: usize, replicas: usize) -> Self {
        let zookeeper = ZooKeeper::start(&dir.join("zookeeper"));
        let ports: Vec<Ports> = (0..shards * replicas).map(|_| Ports::free()).collect();
        let remote: String = ports
            .chunks(replicas)
            .map(|shard| {
                let replicas: String = shard
                    .iter()
                    .map(|p| {
                        format!(
                            "<replica><host>127.0.0.1</host><port>{}</port></replica>",
                            p.tcp
                        )
                    })
                    .collect();
                format!(
                    "<shard><internal_replication>true</internal_replication>{replicas}</shard>"
                )
            })
            .collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, ports)| {
                let node = format!(
                    "<zookeeper><node><host>127.0.0.1</host><port>{zk}</port></node>\
                     <session_timeout_ms>10000</session_timeout_ms></zookeeper>\n\
                     <macros><shard>{shard}</shard><replica>node{i}</replica></macros>\n\
                     <remote_servers><{CLUSTER}>{remote}</{CLUSTER}></remote_servers>",
                    zk = zookeeper.port,
                    shard = i / replicas + 1,
                );
                let base = dir.join(format!("node{i}"));
                std::fs::create_dir_all(&base).expect("node folder");
                ClickHouse::start_node(&base.join("data"), &base, *ports, node)
            })
            .collect::<Vec<ClickHouse>>();
        // 18.16's DDL worker crashed (SIGSEGV in zkutil::ZooKeeper::createImpl)
        // on an ON CLUSTER query that reached a node in its first moments:
        // wait until every node's worker has made its queue in ZooKeeper.
        for (i, node) in nodes.iter().enumerate() {
            let ready = node.poll(
                "SELECT count() FROM system.zookeeper WHERE path = '/clickhouse/task_queue' AND name = 'ddl'",
                Duration::from_secs(60),
                |r| r.trim() == "1",
            );
            assert_eq!(ready.trim(), "1", "node {i} has no DDL queue in ZooKeeper");
        }
        std::thread::sleep(Duration::from_secs(2));
        Self {
            nodes,
            zookeeper,
            replicas,
            dir: dir.to_owned(),
        }
    }

    /// The nodes of shard `shard` (counted from 0).
    pub fn shard(&mut self, shard: usize) -> &mut [ClickHouse] {
        let replicas = self.replicas;
        &mut self.nodes[shard * replicas..(shard + 1) * replicas]
    }

    /// The `[clickhouse]` lines that put a collector or console on node
    /// `i` of this cluster.
    pub fn clickhouse_lines(&self, i: usize) -> String {
        format!(
            "url = \"{}\"\ncompress = false\ncluster = \"{CLUSTER}\"\n",
            self.nodes[i].url()
        )
    }

    /// Polls until every replica of each shard holds the same rows of
    /// `table` (its `_local` part) as the others, or `timeout` passes;
    /// returns each node's count.
    pub fn wait_replicas_agree(&self, table: &str, timeout: Duration) -> Vec<u64> {
        let start = Instant::now();
        loop {
            let counts: Vec<u64> = self
                .nodes
                .iter()
                .map(|n| {
                    n.query(&format!("SELECT count() FROM doorwatch.{table}_local"))
                        .ok()
                        .and_then(|t| t.trim().parse().ok())
                        .unwrap_or(u64::MAX)
                })
                .collect();
            let agree = counts
                .chunks(self.replicas)
                .all(|shard| shard.iter().all(|c| *c == shard[0] && *c != u64::MAX));
            if agree || start.elapsed() >= timeout {
                return counts;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    /// On a failing test, the end of each node's error log.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for i in 0..self.nodes.len() {
            let path = self.dir.join(format!("node{i}/clickhouse-server.err.log"));
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            // A crash's report, or else the end.
            let from = lines
                .iter()
                .position(|l| l.contains("BaseDaemon"))
                .unwrap_or(lines.len().saturating_sub(15));
            eprintln!("---- {} ----", path.display());
            for line in lines.iter().skip(from).take(40) {
                eprintln!("{}", line.chars().take(400).collect::<String>());
            }
        }
    }
}

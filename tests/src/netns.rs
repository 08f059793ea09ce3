//! Throwaway network namespaces: a campus LAN (a bridge in its own
//! namespace), hosts attached to it, and point-to-point uplinks from hosts
//! to the root namespace where the collector listens.
//!
//! Addresses: LAN hosts get the caller's addresses, which must be in
//! 198.18.0.0/15 or fd00:d00::/64 (checked). Uplinks take a /30 from
//! 198.19.0.0/16. No namespace gets a default route. Everything is removed
//! on drop, and namespaces left by a crashed earlier run (their owner pid
//! is gone) are removed on the next start.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::process::run;
use crate::require;

const PREFIX: &str = "dwt";

static NEXT_CAMPUS: AtomicU32 = AtomicU32::new(0);
static NEXT_UPLINK: AtomicU32 = AtomicU32::new(0);

/// A host: one network namespace.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// The LAN interface inside the namespace ("eth0").
    pub interface: String,
    /// LAN addresses.
    pub ips: Vec<IpAddr>,
}

impl Host {
    /// A command that runs `program` inside this host's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Runs nmap from this host against `targets` (hosts of this test's
    /// namespaces only), bounded to 120 s and one retry, without DNS or
    /// host discovery; `args` give the scan type, ports and rate. Returns
    /// nmap's output; panics unless it finished.
    pub fn nmap(&self, args: &[&str], targets: &[String]) -> String {
        let out = crate::process::run(
            self.command("timeout")
                .args(["120", "nmap", "-n", "-Pn", "--max-retries", "1"])
                .args(args)
                .args(targets),
        );
        assert!(out.contains("Nmap done"), "nmap did not finish:\n{out}");
        out
    }

    /// The first IPv4 LAN address.
    pub fn ipv4(&self) -> IpAddr {
        *self
            .ips
            .iter()
            .find(|ip| ip.is_ipv4())
            .expect("host has an IPv4 address")
    }
}

/// A point-to-point link from a host to the root namespace.
#[derive(Debug, Clone, Copy)]
pub struct Uplink {
    /// Address on the root side (where the collector listens).
    pub root_ip: Ipv4Addr,
    /// Address on the host side.
    pub host_ip: Ipv4Addr,
}

/// A simulated campus. Dropping it removes every namespace it made.
#[derive(Debug)]
pub struct Campus {
    id: u32,
    tag: String,
    lan: String,
    namespaces: Vec<String>,
    links: u32,
}

fn ensure_allowed(ip: IpAddr) {
    let ok = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 198 && (o[1] == 18 || o[1] == 19)
        }
        IpAddr::V6(v6) => v6.segments()[..4] == [0xfd00, 0x0d00, 0, 0],
    };
    assert!(
        ok,
        "{ip} is outside the test ranges 198.18.0.0/15 and fd00:d00::/64"
    );
}

impl Campus {
    /// Creates the LAN namespace with its bridge.
    pub fn new() -> Self {
        require::root();
        require::tool("ip", "iproute2");
        remove_stale();
        let n = NEXT_CAMPUS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{PREFIX}-{}-{n}", std::process::id());
        let mut campus = Self {
            id: n,
            lan: format!("{tag}-lan"),
            tag,
            namespaces: Vec::new(),
            links: 0,
        };
        let lan = campus.lan.clone();
        campus.add_namespace(&lan);
        run(Command::new("ip").args(["-n", &lan, "link", "add", "br0", "type", "bridge"]));
        // Forward at once: no STP listening delay on a fresh bridge.
        run(Command::new("ip").args([
            "-n",
            &lan,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ]));
        run(Command::new("ip").args(["-n", &lan, "link", "set", "br0", "up"]));
        campus
    }

    fn add_namespace(&mut self, name: &str) {
        run(Command::new("ip").args(["netns", "add", name]));
        self.namespaces.push(name.to_owned());
        run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
    }

    /// A unique, short (≤ 15 bytes) interface name for the root namespace.
    fn link_name(&mut self, kind: char) -> String {
        self.links += 1;
        // "dw" + 4 hex digits of the pid + campus + kind + link: ≤ 15 bytes.
        format!(
            "dw{:x}c{}{kind}{}",
            std::process::id() & 0xffff,
            self.id % 100,
            self.links
        )
    }

    /// Adds a host named `role` on the LAN with `ips` (each with its
    /// prefix: /24 for IPv4, /64 for IPv6).
    pub fn add_host(&mut self, role: &str, ips: &[&str]) -> Host {
        let ns = format!("{}-{role}", self.tag);
        self.add_namespace(&ns);
        let host_end = self.link_name('h');
        let lan_end = self.link_name('b');
        run(Command::new("ip").args([
            "link", "add", &host_end, "type", "veth", "peer", "name", &lan_end,
        ]));
        run(Command::new("ip").args(["link", "set", &host_end, "netns", &ns]));
        run(Command::new("ip").args(["link", "set", &lan_end, "netns", &self.lan]));
        run(Command::new("ip").args(["-n", &ns, "link", "set", &host_end, "name", "eth0"]));
        run(Command::new("ip").args([
            "-n", &self.lan, "link", "set", &lan_end, "master", "br0", "up",
        ]));
        let mut parsed = Vec::new();
        for ip in ips {
            let addr: IpAddr = ip
                .parse()
                .unwrap_or_else(|_| panic!("{ip} is not an IP address"));
            ensure_allowed(addr);
            parsed.push(addr);
            let cidr = if addr.is_ipv4() {
                format!("{ip}/24")
            } else {
                format!("{ip}/64")
            };
            let mut c = Command::new("ip");
            c.args(["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
            if addr.is_ipv6() {
                c.arg("nodad");
            }
            run(&mut c);
        }
        run(Command::new("ip").args(["-n", &ns, "link", "set", "eth0", "up"]));
        Host {
            ns,
            interface: "eth0".into(),
            ips: parsed,
        }
    }

    /// `n` PCs (`pc0`, `pc1`, ... at 198.18.0.10, .11, ...), each linked
    /// to the root namespace. The collector is meant to listen on the first
    /// uplink's root address; every other PC reaches it through its own
    /// uplink and a host route.
    pub fn linked_pcs(&mut self, n: usize) -> (Vec<Host>, Vec<Uplink>) {
        let hosts: Vec<Host> = (0..n)
            .map(|i| self.add_host(&format!("pc{i}"), &[&format!("198.18.0.{}", 10 + i)]))
            .collect();
        let uplinks: Vec<Uplink> = hosts.iter().map(|h| self.uplink(h)).collect();
        if let Some(collector) = uplinks.first().map(|u| u.root_ip) {
            for (host, uplink) in hosts.iter().zip(&uplinks).skip(1) {
                run(host.command("ip").args([
                    "route",
                    "add",
                    &format!("{collector}/32"),
                    "via",
                    &uplink.root_ip.to_string(),
                ]));
            }
        }
        (hosts, uplinks)
    }

    /// Links `host` to the root namespace with a /30 from 198.19.0.0/16.
    /// Only the /30 is routed: the host still has no default route.
    pub fn uplink(&mut self, host: &Host) -> Uplink {
        let (root_ip, host_ip) = free_uplink_block();
        let root_end = self.link_name('u');
        let host_end = self.link_name('v');
        run(Command::new("ip").args([
            "link", "add", &root_end, "type", "veth", "peer", "name", &host_end,
        ]));
        run(Command::new("ip").args(["link", "set", &host_end, "netns", &host.ns]));
        run(Command::new("ip").args(["-n", &host.ns, "link", "set", &host_end, "name", "up0"]));
        run(Command::new("ip").args(["addr", "add", &format!("{root_ip}/30"), "dev", &root_end]));
        run(Command::new("ip").args(["link", "set", &root_end, "up"]));
        run(Command::new("ip").args([
            "-n",
            &host.ns,
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            "up0",
        ]));
        run(Command::new("ip").args(["-n", &host.ns, "link", "set", "up0", "up"]));
        Uplink { root_ip, host_ip }
    }
}

impl Default for Campus {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Campus {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            remove_namespace(ns);
        }
    }
}

/// Kills whatever still runs in `ns`, then deletes it (and with it the
/// veth pairs that have an end inside).
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Removes namespaces of earlier runs whose process is gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let mut parts = name.split('-');
        if parts.next() != Some(PREFIX) {
            continue;
        }
        let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(name);
        }
    }
}

/// A /30 in 198.19.0.0/16 that no root-namespace interface uses yet.
fn free_uplink_block() -> (Ipv4Addr, Ipv4Addr) {
    let used = run(Command::new("ip").args(["-o", "-4", "addr", "show"]));
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    let start = NEXT_UPLINK.fetch_add(1, Ordering::Relaxed);
    for i in start..start + 16_384 {
        let block = (seed.wrapping_add(i.wrapping_mul(7919))) % 16_384;
        let base = u32::from(Ipv4Addr::new(198, 19, 0, 0)) + block * 4;
        let root = Ipv4Addr::from(base + 1);
        if !used.contains(&format!(" {root}/")) {
            return (root, Ipv4Addr::from(base + 2));
        }
    }
    panic!("no free /30 left in 198.19.0.0/16");
}

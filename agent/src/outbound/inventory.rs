//! The listening-port inventory: which ports this PC has open, which
//! process owns each, and which exposures are risky.

use std::net::IpAddr;

use crate::findings::Exposure;
use crate::procfs::{Process, Protocol, Snapshot};

/// Most listeners reported (the wire contract's limit).
pub const MAX_LISTENERS: usize = 1024;

/// One open port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    pub port: u16,
    pub local: IpAddr,
    pub process: Option<ProcessName>,
    /// Why this exposure is risky; empty if it is not.
    pub risk: String,
}

/// The parts of a process an inventory compares (not its pid alone, which
/// changes when a service restarts, but pid too: a new owner is news).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessName {
    pub pid: u32,
    pub name: String,
    pub exe: String,
    pub user: String,
}

impl From<&Process> for ProcessName {
    fn from(p: &Process) -> Self {
        Self {
            pid: p.pid,
            name: p.name.clone(),
            exe: p.exe.clone(),
            user: p.user.clone(),
        }
    }
}

/// Why a listener on `port` bound to `local` is risky, if it is.
pub fn risk(protocol: u8, local: IpAddr, port: u16) -> Option<&'static str> {
    let everywhere = local.is_unspecified();
    let loopback = local.is_loopback();
    if loopback {
        return None;
    }
    Some(match (protocol, port) {
        (6, 3128 | 8080 | 1080) => {
            "a proxy-style port: an open proxy lets strangers relay traffic through this PC"
        }
        (6, 445 | 139) | (17, 137 | 138) => "Windows file sharing, a favourite of worms",
        (6, 3389) => "Windows Remote Desktop, a favourite of password-guessing attacks",
        (6, 23) => "telnet, which sends passwords in clear text",
        (6, 3306 | 5432 | 1433 | 27017 | 6379 | 9200 | 11211) if everywhere => {
            "a database listening on every interface instead of only this PC"
        }
        _ => return None,
    })
}

/// The listeners in `snapshot`, sorted, at most [`MAX_LISTENERS`].
pub fn listeners(snapshot: &Snapshot) -> Vec<Listener> {
    let mut out: Vec<Listener> = snapshot
        .listening()
        .into_iter()
        .map(|(socket, owner)| {
            let protocol = match socket.protocol {
                Protocol::Tcp => 6,
                Protocol::Udp => 17,
            };
            let local = socket.local.ip();
            Listener {
                protocol,
                port: socket.local.port(),
                local,
                process: owner.map(ProcessName::from),
                risk: risk(protocol, local, socket.local.port())
                    .unwrap_or_default()
                    .to_owned(),
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out.truncate(MAX_LISTENERS);
    out
}

/// The risky listeners among `open_ports` that a scan of `target` found
/// open: bound to `target` or to every interface. A scan only learns a port
/// number, so TCP and UDP listeners on it both count.
pub fn exposures(listeners: &[Listener], target: IpAddr, open_ports: &[u16]) -> Vec<Exposure> {
    let mut out: Vec<Exposure> = listeners
        .iter()
        .filter(|l| !l.risk.is_empty() && open_ports.binary_search(&l.port).is_ok())
        .filter(|l| l.local.is_unspecified() || same_address(l.local, target))
        .map(|l| Exposure {
            protocol: l.protocol,
            port: l.port,
            process: l
                .process
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            risk: l.risk.clone(),
        })
        .collect();
    out.sort_by_key(|e| (e.port, e.protocol));
    out.dedup_by(|a, b| a.protocol == b.protocol && a.port == b.port);
    out
}

/// Equal addresses, an IPv4 address and its IPv6-mapped form included.
fn same_address(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(protocol: u8, local: &str, port: u16, process: &str) -> Listener {
        let local: IpAddr = local.parse().expect("literal");
        Listener {
            protocol,
            port,
            local,
            process: Some(ProcessName {
                pid: 7,
                name: process.to_owned(),
                exe: String::new(),
                user: "root".to_owned(),
            }),
            risk: risk(protocol, local, port).unwrap_or_default().to_owned(),
        }
    }

    #[test]
    fn a_scan_reaching_a_risky_listener_is_an_exposure() {
        let target: IpAddr = "198.18.0.10".parse().expect("literal");
        let listeners = vec![
            listener(6, "0.0.0.0", 22, "sshd"),
            listener(6, "0.0.0.0", 8080, "python3"),
            listener(6, "198.18.0.99", 3389, "xrdp"),
            listener(6, "::ffff:198.18.0.10", 445, "smbd"),
        ];
        let found = exposures(&listeners, target, &[22, 445, 3389, 8080]);
        let ports: Vec<u16> = found.iter().map(|e| e.port).collect();
        assert_eq!(
            ports,
            vec![445, 8080],
            "not SSH (not risky), not RDP (another address)"
        );
        assert_eq!(found[1].process, "python3");
        assert!(exposures(&listeners, target, &[22]).is_empty());
    }

    #[test]
    fn proxies_sharing_remote_desktop_and_open_databases_are_risky() {
        let any: IpAddr = "0.0.0.0".parse().expect("literal");
        let lo: IpAddr = "127.0.0.1".parse().expect("literal");
        let lan: IpAddr = "198.18.0.10".parse().expect("literal");
        assert!(risk(6, any, 8080).is_some_and(|r| r.contains("proxy")));
        assert!(risk(6, lan, 445).is_some());
        assert!(risk(6, any, 3389).is_some());
        assert!(risk(6, any, 23).is_some());
        assert!(risk(6, any, 5432).is_some_and(|r| r.contains("database")));
        assert_eq!(risk(6, lan, 5432), None, "bound to one address");
        assert_eq!(risk(6, lo, 8080), None, "loopback only");
        assert_eq!(risk(6, any, 443), None);
    }
}

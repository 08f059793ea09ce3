//! The listening-port inventory: which ports this PC has open, which
//! process owns each, and which exposures are risky.

use std::net::IpAddr;

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

#[cfg(test)]
mod tests {
    use super::*;

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

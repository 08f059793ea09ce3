//! This PC's TCP and UDP sockets and the programs that own them, from the
//! best source each system has.
//!
//! [`read`] is what the agent calls. On Linux it reads procfs
//! ([`crate::procfs`]): fast, and it also names the programs sending raw
//! packets (nmap -sS, masscan). Elsewhere (Windows, macOS) it asks the
//! system's socket tables through the `netstat2` crate and names processes
//! with `sysinfo`; raw-packet senders stay unnamed there.
//!
//! Both give the same [`Snapshot`], so the outbound monitor and the
//! listening-port inventory do not know which one ran. [`read_portable`]
//! is built and tested on Linux too, so that path always compiles.

use std::collections::HashMap;
use std::net::SocketAddr;

use netstat2::{AddressFamilyFlags, ProtocolFlags, ProtocolSocketInfo, TcpState};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind, Users};

use crate::procfs::{self, Process, Protocol, Snapshot, Socket, state};

/// Why the socket tables could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketsError {
    #[error(transparent)]
    Procfs(#[from] procfs::ProcfsError),
    #[error("cannot read the system's socket tables: {0}")]
    Netstat(#[from] netstat2::error::Error),
}

/// This PC's sockets with their owners: procfs on Linux, the system's
/// socket tables elsewhere.
pub fn read() -> Result<Snapshot, SocketsError> {
    #[cfg(target_os = "linux")]
    {
        Ok(procfs::read(
            std::path::Path::new("/proc"),
            std::path::Path::new("/etc/passwd"),
        )?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        read_portable()
    }
}

/// The sockets from the system's tables (netstat2), their processes named
/// by sysinfo. Sockets have no inode outside Linux, so each owned socket
/// gets a made-up key that links it to its process in the snapshot.
pub fn read_portable() -> Result<Snapshot, SocketsError> {
    let infos = netstat2::get_sockets_info(
        AddressFamilyFlags::IPV4 | AddressFamilyFlags::IPV6,
        ProtocolFlags::TCP | ProtocolFlags::UDP,
    )?;
    let mut snapshot = Snapshot::default();
    let mut pids: Vec<u32> = infos
        .iter()
        .filter_map(|i| i.associated_pids.iter().min().copied())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let processes = processes(&pids);
    for (key, info) in (1u64..).zip(&infos) {
        let (protocol, local, remote, socket_state) = match &info.protocol_socket_info {
            ProtocolSocketInfo::Tcp(t) => (
                Protocol::Tcp,
                SocketAddr::new(t.local_addr, t.local_port),
                SocketAddr::new(t.remote_addr, t.remote_port),
                tcp_state(&t.state),
            ),
            // The tables list UDP sockets without a peer; treat them as
            // unconnected, which is how most are used.
            ProtocolSocketInfo::Udp(u) => (
                Protocol::Udp,
                SocketAddr::new(u.local_addr, u.local_port),
                SocketAddr::new(unspecified(u.local_addr), 0),
                state::CLOSE,
            ),
        };
        let owner = info
            .associated_pids
            .iter()
            .min()
            .and_then(|pid| processes.get(pid));
        let inode = match owner {
            Some(process) if socket_state != state::TIME_WAIT => {
                snapshot.owners.insert(key, process.clone());
                key
            }
            _ => 0,
        };
        snapshot.sockets.push(Socket {
            protocol,
            local,
            remote,
            state: socket_state,
            uid: 0,
            inode,
        });
    }
    Ok(snapshot)
}

/// Name, executable and user of each pid still running.
fn processes(pids: &[u32]) -> HashMap<u32, Process> {
    if pids.is_empty() {
        return HashMap::new();
    }
    let wanted: Vec<Pid> = pids.iter().map(|&p| Pid::from_u32(p)).collect();
    let mut system = System::new();
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&wanted),
        true,
        ProcessRefreshKind::nothing()
            .with_exe(UpdateKind::OnlyIfNotSet)
            .with_user(UpdateKind::OnlyIfNotSet),
    );
    let users = Users::new_with_refreshed_list();
    pids.iter()
        .filter_map(|&pid| {
            let p = system.process(Pid::from_u32(pid))?;
            let user = p
                .user_id()
                .map(|uid| {
                    users
                        .get_user_by_id(uid)
                        .map_or_else(|| uid.to_string(), |u| u.name().to_owned())
                })
                .unwrap_or_default();
            Some((
                pid,
                Process {
                    pid,
                    name: p.name().to_string_lossy().into_owned(),
                    exe: p
                        .exe()
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    user,
                },
            ))
        })
        .collect()
}

/// The procfs state number of a TCP state.
fn tcp_state(s: &TcpState) -> u8 {
    match s {
        TcpState::Established => state::ESTABLISHED,
        TcpState::SynSent => state::SYN_SENT,
        TcpState::SynReceived => 0x03,
        TcpState::FinWait1 => 0x04,
        TcpState::FinWait2 => 0x05,
        TcpState::TimeWait => state::TIME_WAIT,
        TcpState::Closed | TcpState::DeleteTcb | TcpState::Unknown => state::CLOSE,
        TcpState::CloseWait => 0x08,
        TcpState::LastAck => 0x09,
        TcpState::Listen => state::LISTEN,
        TcpState::Closing => 0x0B,
    }
}

fn unspecified(like: std::net::IpAddr) -> std::net::IpAddr {
    match like {
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};

    /// The portable reader and procfs agree on this process's own sockets:
    /// a listener, a connection to it and a UDP socket, all named as this
    /// test program.
    #[test]
    fn the_portable_reader_names_this_process_like_procfs() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen on loopback");
        let port = listener.local_addr().expect("address").port();
        let client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("udp socket");
        let me = std::process::id();

        let portable = match read_portable() {
            Ok(s) => s,
            // Some sandboxes forbid sock_diag netlink sockets; procfs is what
            // Linux uses anyway, so say so rather than pretend.
            Err(e) => panic!("netstat2 cannot read the socket tables here: {e}"),
        };
        let listening = portable
            .listening()
            .into_iter()
            .find(|(s, _)| s.protocol == Protocol::Tcp && s.local.port() == port)
            .expect("the listener is listed");
        assert_eq!(listening.1.map(|p| p.pid), Some(me));

        let from = client.local_addr().expect("client address");
        let to = client.peer_addr().expect("peer address");
        let owner = portable
            .owner(Protocol::Tcp, from, to)
            .expect("the connection has an owner");
        assert_eq!(owner.pid, me);
        let procfs = procfs::read(
            std::path::Path::new("/proc"),
            std::path::Path::new("/etc/passwd"),
        )
        .expect("procfs");
        let expected = procfs.owner(Protocol::Tcp, from, to).expect("procfs owner");
        assert_eq!(owner.name, expected.name);
        assert_eq!(owner.exe, expected.exe);
        assert_eq!(owner.user, expected.user);

        let udp_address = udp.local_addr().expect("udp address");
        let udp_owner = portable
            .owner(
                Protocol::Udp,
                udp_address,
                "127.0.0.1:9".parse().expect("literal"),
            )
            .expect("the UDP socket has an owner");
        assert_eq!(udp_owner.pid, me);
    }

    #[test]
    fn tcp_states_map_to_procfs_numbers() {
        assert_eq!(tcp_state(&TcpState::Listen), state::LISTEN);
        assert_eq!(tcp_state(&TcpState::Established), state::ESTABLISHED);
        assert_eq!(tcp_state(&TcpState::TimeWait), state::TIME_WAIT);
    }
}

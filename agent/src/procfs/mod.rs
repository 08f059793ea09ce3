//! Which program owns which socket on this PC, read from /proc.
//!
//! [`read`] takes one snapshot: the TCP and UDP socket tables
//! (/proc/net/tcp, tcp6, udp, udp6), the raw and packet socket tables, and
//! the fd tables of the processes, joined by socket inode. With it
//! [`Snapshot::owner`] answers "which program sent or got this packet",
//! and [`Snapshot::raw_owners`] names the programs that can send hand-made
//! packets (nmap -sS, masscan) without any TCP or UDP socket.
//!
//! Linux only in practice, but it uses nothing beyond `std::fs`, so it
//! compiles everywhere. Processes come and go during a read; those that
//! vanish or that we may not look at are skipped, never an error. Malformed
//! lines are skipped and counted.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Socket state numbers as the /proc/net tables print them.
pub mod state {
    /// TCP connected; UDP connected to one peer.
    pub const ESTABLISHED: u8 = 0x01;
    /// TCP connect sent, no answer yet.
    pub const SYN_SENT: u8 = 0x02;
    /// TCP closed, kept a while to absorb late packets (no owner).
    pub const TIME_WAIT: u8 = 0x06;
    /// TCP closed; for UDP: not connected, the usual state.
    pub const CLOSE: u8 = 0x07;
    /// TCP listening.
    pub const LISTEN: u8 = 0x0A;
}

/// Transport protocol of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A process that owns sockets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Process {
    pub pid: u32,
    /// /proc/pid/comm, trimmed (at most 15 characters, set by the kernel).
    pub name: String,
    /// Where /proc/pid/exe points; "" if unreadable (kernel threads, or
    /// another user's process when not root).
    pub exe: String,
    /// User name of the effective uid from the passwd file, or the uid as
    /// text; "" if the uid could not be read.
    pub user: String,
}

/// One socket from /proc/net/{tcp,tcp6,udp,udp6}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub protocol: Protocol,
    /// As the table has it: sockets of a dual-stack IPv6 socket carry
    /// IPv4-mapped addresses (::ffff:a.b.c.d).
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// TCP state number from the file (0x0A = LISTEN, 0x01 = ESTABLISHED,
    /// 0x02 SYN_SENT ...); for UDP 0x07 = unconnected. See [`state`].
    pub state: u8,
    pub uid: u32,
    /// 0 for sockets no process holds (TIME_WAIT, half-open).
    pub inode: u64,
}

impl Socket {
    /// A listening TCP socket or an unconnected UDP socket.
    pub fn is_listening(&self) -> bool {
        match self.protocol {
            Protocol::Tcp => self.state == state::LISTEN,
            Protocol::Udp => self.state == state::CLOSE,
        }
    }
}

/// Everything one refresh read.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub sockets: Vec<Socket>,
    /// inode -> owning process (the lowest pid if shared, as after fork).
    pub owners: HashMap<u64, Process>,
    /// Processes holding raw (/proc/net/raw, raw6) or packet
    /// (/proc/net/packet) sockets: how raw-packet tools such as nmap -sS or
    /// masscan send, which have no TCP/UDP socket. One process per socket
    /// (the lowest pid if shared), sorted by pid.
    pub raw_owners: Vec<Process>,
    /// Lines of the socket tables that could not be parsed.
    pub skipped_lines: usize,
}

impl Snapshot {
    /// The process owning the TCP/UDP socket bound to `local_port` (and
    /// `local_ip` if a socket is bound to that specific address;
    /// wildcard-bound sockets match any address: 0.0.0.0 any IPv4 one, ::
    /// any at all), preferring a connected socket whose remote is `remote`
    /// (exact addr+port) over a listening/unconnected one, and that over
    /// any other socket on the port; a specific address beats a wildcard.
    /// IPv4-mapped IPv6 addresses count as IPv4. Sockets without an inode
    /// (TIME_WAIT) are not considered. None if no socket matches or its
    /// inode has no owner.
    pub fn owner(
        &self,
        protocol: Protocol,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<&Process> {
        let local_ip = canonical(local.ip());
        let remote = (canonical(remote.ip()), remote.port());
        self.sockets
            .iter()
            .filter(|s| s.protocol == protocol && s.inode != 0 && s.local.port() == local.port())
            .filter_map(|s| {
                let ip = canonical(s.local.ip());
                let wildcard = if ip.is_unspecified() {
                    if ip.is_ipv4() && !local_ip.is_ipv4() {
                        return None;
                    }
                    true
                } else if ip == local_ip {
                    false
                } else {
                    return None;
                };
                let to_remote =
                    s.remote.port() != 0 && (canonical(s.remote.ip()), s.remote.port()) == remote;
                let rank = if to_remote {
                    0u8
                } else if s.is_listening() {
                    1
                } else {
                    2
                };
                Some(((rank, wildcard), s))
            })
            .min_by_key(|(key, _)| *key)
            .and_then(|(_, s)| self.owners.get(&s.inode))
    }

    /// Listening TCP sockets and unconnected UDP sockets, with owners:
    /// (socket, owner), sorted by protocol, port and address.
    pub fn listening(&self) -> Vec<(&Socket, Option<&Process>)> {
        let mut found: Vec<_> = self
            .sockets
            .iter()
            .filter(|s| s.is_listening())
            .map(|s| (s, self.owners.get(&s.inode)))
            .collect();
        found.sort_by_key(|(s, _)| (s.protocol, s.local.port(), s.local.ip()));
        found
    }
}

/// Why a refresh failed. Vanished processes and unreadable fd tables are
/// not errors; only the socket tables and the process list are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcfsError {
    /// A file or folder that must be there could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads the socket tables and the processes' fd tables. `root` is the
/// procfs mount, normally "/proc"; `passwd` is normally "/etc/passwd".
///
/// /proc/net/tcp and udp must be readable; tcp6, udp6, raw, raw6 and packet
/// may be missing (IPv6 or packet sockets disabled). The fd scan stops
/// early once every socket inode has an owner.
pub fn read(root: &Path, passwd: &Path) -> Result<Snapshot, ProcfsError> {
    let mut snapshot = Snapshot::default();
    let mut bytes = Vec::with_capacity(256 * 1024);
    let net = root.join("net");

    for (file, protocol, required) in [
        ("tcp", Protocol::Tcp, true),
        ("tcp6", Protocol::Tcp, false),
        ("udp", Protocol::Udp, true),
        ("udp6", Protocol::Udp, false),
    ] {
        if read_table(&net.join(file), &mut bytes, required)? {
            for line in body(&String::from_utf8_lossy(&bytes)) {
                match parse_socket(protocol, line) {
                    Some(socket) => snapshot.sockets.push(socket),
                    None => snapshot.skipped_lines += 1,
                }
            }
        }
    }

    // inode -> is a raw/packet socket
    let mut wanted: HashMap<u64, bool> = snapshot
        .sockets
        .iter()
        .filter(|s| s.inode != 0)
        .map(|s| (s.inode, false))
        .collect();
    for file in ["raw", "raw6", "packet"] {
        if read_table(&net.join(file), &mut bytes, false)? {
            for line in body(&String::from_utf8_lossy(&bytes)) {
                let inode = if file == "packet" {
                    parse_packet_inode(line)
                } else {
                    // Same layout as tcp; the "port" is the IP protocol.
                    parse_socket(Protocol::Tcp, line).map(|s| s.inode)
                };
                match inode {
                    Some(0) => {}
                    Some(inode) => {
                        wanted.insert(inode, true);
                    }
                    None => snapshot.skipped_lines += 1,
                }
            }
        }
    }

    scan_processes(root, passwd, &wanted, &mut snapshot)?;
    Ok(snapshot)
}

/// Walks /proc/<pid>/fd of every process and fills `owners` and
/// `raw_owners` for the inodes in `wanted`.
fn scan_processes(
    root: &Path,
    passwd: &Path,
    wanted: &HashMap<u64, bool>,
    snapshot: &mut Snapshot,
) -> Result<(), ProcfsError> {
    let entries = fs::read_dir(root).map_err(|source| ProcfsError::Io {
        path: root.to_owned(),
        source,
    })?;
    // In pid order, so "first found" is the lowest pid (usually the parent).
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(parse_pid))
        .collect();
    pids.sort_unstable();
    let mut remaining = wanted.len();
    let mut raw_found: HashSet<u64> = HashSet::new();
    let mut users: Option<HashMap<u32, String>> = None;
    let mut hits: Vec<(u64, bool)> = Vec::new();
    let mut dir = root.to_path_buf();
    for pid in pids {
        if remaining == 0 {
            break;
        }
        dir.push(pid.to_string());
        dir.push("fd");
        hits.clear();
        if let Ok(fds) = fs::read_dir(&dir) {
            for fd in fds.flatten() {
                let Ok(target) = fs::read_link(fd.path()) else {
                    continue;
                };
                let Some(inode) = socket_inode(&target) else {
                    continue;
                };
                if let Some(&raw) = wanted.get(&inode) {
                    let new = if raw {
                        !raw_found.contains(&inode) && !hits.contains(&(inode, raw))
                    } else {
                        !snapshot.owners.contains_key(&inode)
                    };
                    if new {
                        hits.push((inode, raw));
                    }
                }
            }
        }
        dir.pop();
        if !hits.is_empty()
            && let Some(process) = load_process(&dir, pid, passwd, &mut users)
        {
            let mut raw_owner = false;
            for &(inode, raw) in &hits {
                if raw {
                    raw_owner = true;
                    if raw_found.insert(inode) {
                        remaining = remaining.saturating_sub(1);
                    }
                } else if let Entry::Vacant(slot) = snapshot.owners.entry(inode) {
                    slot.insert(process.clone());
                    remaining = remaining.saturating_sub(1);
                }
            }
            if raw_owner {
                snapshot.raw_owners.push(process);
            }
        }
        dir.pop();
    }
    snapshot.raw_owners.sort_by_key(|p| p.pid);
    Ok(())
}

/// Reads a table into `bytes`. Ok(false) if an optional one is missing.
fn read_table(path: &Path, bytes: &mut Vec<u8>, required: bool) -> Result<bool, ProcfsError> {
    bytes.clear();
    match fs::File::open(path).and_then(|mut file| file.read_to_end(bytes)) {
        Ok(_) => Ok(true),
        Err(e) if !required && e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ProcfsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The lines of a table without its header line and blank lines.
fn body(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|line| {
        let first = line.split_ascii_whitespace().next();
        !matches!(first, None | Some("sl" | "sk"))
    })
}

/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt
/// uid timeout inode ...`
fn parse_socket(protocol: Protocol, line: &str) -> Option<Socket> {
    let mut fields = line.split_ascii_whitespace();
    fields.next()?.strip_suffix(':')?;
    let local = parse_address(fields.next()?)?;
    let remote = parse_address(fields.next()?)?;
    let state = hex(fields.next()?)?;
    let uid = decimal(fields.nth(3)?)?;
    fields.next()?; // timeout
    let inode = decimal(fields.next()?)?;
    Some(Socket {
        protocol,
        local,
        remote,
        state: u8::try_from(state).ok()?,
        uid: u32::try_from(uid).ok()?,
        inode,
    })
}

/// `sk RefCnt Type Proto Iface R Rmem User Inode`
fn parse_packet_inode(line: &str) -> Option<u64> {
    let mut fields = line.split_ascii_whitespace();
    hex(fields.next()?)?;
    decimal(fields.nth(7)?)
}

/// `0100007F:0016`: the address as the kernel's u32 words in host byte
/// order (8 hex digits for IPv4, 4 × 8 for IPv6), then the port.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::try_from(hex(port)?).ok()?;
    let word = |at: usize| -> Option<[u8; 4]> {
        let digits = ip.get(at..at + 8)?;
        Some(u32::try_from(hex(digits)?).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i * 8)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn hex(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_pid(name: &str) -> Option<u32> {
    u32::try_from(decimal(name)?).ok()
}

/// `socket:[12345]` -> 12345.
fn socket_inode(target: &Path) -> Option<u64> {
    let bytes = target.as_os_str().as_encoded_bytes();
    let digits = bytes.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    decimal(std::str::from_utf8(digits).ok()?)
}

/// Name, program and user of the process in `dir` (/proc/<pid>). None if
/// it is gone.
fn load_process(
    dir: &Path,
    pid: u32,
    passwd: &Path,
    users: &mut Option<HashMap<u32, String>>,
) -> Option<Process> {
    let name = fs::read_to_string(dir.join("comm")).ok()?.trim().to_owned();
    let exe = fs::read_link(dir.join("exe"))
        .map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_default();
    let uid = fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|status| effective_uid(&status));
    let user = match uid {
        Some(uid) => users
            .get_or_insert_with(|| read_passwd(passwd))
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string()),
        None => String::new(),
    };
    Some(Process {
        pid,
        name,
        exe,
        user,
    })
}

/// `Uid: real effective saved fs` (tab-separated) -> effective.
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// uid -> name from a passwd file (`name:x:uid:...`); empty if unreadable.
/// The first name of a uid wins.
fn read_passwd(path: &Path) -> HashMap<u32, String> {
    let mut users = HashMap::new();
    let Ok(bytes) = fs::read(path) else {
        return users;
    };
    for line in String::from_utf8_lossy(&bytes).lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let (false, Ok(uid)) = (name.is_empty(), uid.parse::<u32>()) {
            users.entry(uid).or_insert_with(|| name.to_owned());
        }
    }
    users
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(all(test, unix))]
mod tests;

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
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    const TCP6_HEADER: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    const PACKET_HEADER: &str = "sk               RefCnt Type Proto  Iface R Rmem   User   Inode\n";

    /// A socket table line in the kernel's layout.
    fn line(local: &str, remote: &str, state: &str, uid: u32, inode: u64) -> String {
        format!(
            "   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000 {uid:>5}        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
        )
    }

    /// A fake /proc with a passwd file next to it.
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Self {
            let fake = Fake {
                dir: tempfile::tempdir().expect("tempdir"),
            };
            fs::create_dir_all(fake.root().join("net")).expect("net dir");
            fake.table("tcp", TCP_HEADER, &[]);
            fake.table("udp", TCP_HEADER, &[]);
            fake.write(
                "passwd",
                "root:x:0:0:root:/root:/bin/bash\nbroken line\nalice:x:1000:1000::/home/alice:/bin/sh\n",
            );
            fs::create_dir_all(fake.root().join("self")).expect("self dir");
            fake
        }

        fn root(&self) -> PathBuf {
            self.dir.path().join("proc")
        }

        fn passwd(&self) -> PathBuf {
            self.dir.path().join("passwd")
        }

        fn write(&self, relative: &str, text: &str) {
            fs::write(self.dir.path().join(relative), text).expect("write");
        }

        fn table(&self, name: &str, header: &str, lines: &[String]) {
            let text = format!("{header}{}", lines.concat());
            fs::write(self.root().join("net").join(name), text).expect("table");
        }

        /// A process holding `fds` (symlink targets) as fds 3, 4, ...
        fn process(&self, pid: u32, comm: &str, exe: &str, uid: u32, fds: &[&str]) {
            let dir = self.root().join(pid.to_string());
            fs::create_dir_all(dir.join("fd")).expect("fd dir");
            fs::write(dir.join("comm"), format!("{comm}\n")).expect("comm");
            fs::write(
                dir.join("status"),
                format!("Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t0\t0\t0\t0\n"),
            )
            .expect("status");
            symlink(exe, dir.join("exe")).expect("exe link");
            for (n, target) in fds.iter().enumerate() {
                symlink(target, dir.join("fd").join((n + 3).to_string())).expect("fd link");
            }
        }

        fn read(&self) -> Snapshot {
            read(&self.root(), &self.passwd()).expect("read fake proc")
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    #[test]
    fn parses_ipv4_and_ipv6_lines() {
        let fake = Fake::new();
        fake.table(
            "tcp",
            TCP_HEADER,
            &[
                line("0100007F:0016", "00000000:0000", "0A", 0, 12345),
                line("0F02000A:C350", "22D8B85D:01BB", "01", 1000, 12346),
            ],
        );
        fake.table(
            "tcp6",
            TCP6_HEADER,
            &[
                // [2001:db8::1]:443 <- [::ffff:10.0.0.1]:40000, no inode (TIME_WAIT)
                line(
                    "B80D0120000000000000000001000000:01BB",
                    "0000000000000000FFFF00000100000A:9C40",
                    "06",
                    0,
                    0,
                ),
            ],
        );
        fake.table(
            "udp",
            TCP_HEADER,
            &[line("00000000:0035", "00000000:0000", "07", 101, 777)],
        );
        let snapshot = fake.read();
        assert_eq!(snapshot.skipped_lines, 0);
        assert_eq!(
            snapshot.sockets,
            vec![
                Socket {
                    protocol: Protocol::Tcp,
                    local: addr("127.0.0.1:22"),
                    remote: addr("0.0.0.0:0"),
                    state: state::LISTEN,
                    uid: 0,
                    inode: 12345,
                },
                Socket {
                    protocol: Protocol::Tcp,
                    local: addr("10.0.2.15:50000"),
                    remote: addr("93.184.216.34:443"),
                    state: state::ESTABLISHED,
                    uid: 1000,
                    inode: 12346,
                },
                Socket {
                    protocol: Protocol::Tcp,
                    local: addr("[2001:db8::1]:443"),
                    remote: addr("[::ffff:10.0.0.1]:40000"),
                    state: state::TIME_WAIT,
                    uid: 0,
                    inode: 0,
                },
                Socket {
                    protocol: Protocol::Udp,
                    local: addr("0.0.0.0:53"),
                    remote: addr("0.0.0.0:0"),
                    state: state::CLOSE,
                    uid: 101,
                    inode: 777,
                },
            ]
        );
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(parse_address("0100007F:0016"), Some(addr("127.0.0.1:22")));
        assert_eq!(
            parse_address("00000000000000000000000001000000:0050"),
            Some(addr("[::1]:80"))
        );
        assert_eq!(
            parse_address("0000000000000000FFFF00000100007F:1F90"),
            Some(addr("[::ffff:127.0.0.1]:8080"))
        );
        for bad in [
            "",
            "0100007F",
            "0100007F:16",
            "0100007F:00016",
            "100007F:0016",
            "0100007G:0016",
            "+100007F:0016",
            "0100007F:+016",
            "0000000000000000FFFF00000100007:1F90",
            "ééééééééééééééééééééééééééééééé:0016",
        ] {
            assert_eq!(parse_address(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let fake = Fake::new();
        let good = line("0100007F:0016", "00000000:0000", "0A", 0, 12345);
        fake.table(
            "tcp",
            TCP_HEADER,
            &[
                good.clone(),
                "   1: garbage\n".into(),
                "\n".into(),
                // state does not fit a byte
                line("0100007F:0017", "00000000:0000", "1FF", 0, 1),
                // inode not a number
                line("0100007F:0018", "00000000:0000", "0A", 0, 7).replace(" 7 1 ", " 7x 1 "),
                // cut short
                format!("{}\n", &good[..40]),
                // negative uid
                "   2: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000 -1 0 5\n"
                    .into(),
            ],
        );
        fake.table("packet", PACKET_HEADER, &["not a packet line\n".into()]);
        let mut udp = TCP_HEADER.as_bytes().to_vec();
        udp.extend_from_slice(b"   0: 0100007F:0035 00000000:0000 07 \xff\xfe\n");
        fs::write(fake.root().join("net/udp"), udp).expect("udp");
        let snapshot = fake.read();
        assert_eq!(snapshot.sockets.len(), 1, "{:?}", snapshot.sockets);
        assert_eq!(snapshot.sockets[0].inode, 12345);
        assert_eq!(snapshot.skipped_lines, 7);
    }

    #[test]
    fn optional_tables_may_be_missing_but_tcp_may_not() {
        let fake = Fake::new();
        assert!(fake.read().sockets.is_empty());
        fs::remove_file(fake.root().join("net/tcp")).expect("remove tcp");
        let error = read(&fake.root(), &fake.passwd()).expect_err("tcp is required");
        assert!(error.to_string().contains("net/tcp"), "{error}");
        assert!(matches!(error, ProcfsError::Io { .. }));
    }

    #[test]
    fn finds_owners_through_fd_links() {
        let fake = Fake::new();
        fake.table(
            "tcp",
            TCP_HEADER,
            &[
                line("00000000:0016", "00000000:0000", "0A", 0, 100),
                line("0100007F:0019", "00000000:0000", "0A", 0, 200),
                line("0100007F:0050", "00000000:0000", "0A", 0, 300),
            ],
        );
        fake.process(
            10,
            "sshd",
            "/usr/sbin/sshd",
            0,
            &["/dev/null", "socket:[100]", "pipe:[100]", "socket:[99]"],
        );
        fake.process(11, "sshd", "/usr/sbin/sshd", 0, &["socket:[100]"]);
        fake.process(20, "exim4", "/usr/sbin/exim4", 1000, &["socket:[200]"]);
        fake.process(30, "ghost", "/x", 4242, &["socket:[300]"]);
        fake.process(5, "idle", "/bin/sleep", 0, &[]);
        // A process that vanished after it was listed: no fd folder.
        fs::create_dir_all(fake.root().join("6")).expect("dir");
        // One that vanished between its fd table and its comm.
        fs::create_dir_all(fake.root().join("7/fd")).expect("dir");
        symlink("socket:[100]", fake.root().join("7/fd/3")).expect("fd link");
        let snapshot = fake.read();
        let sshd = Process {
            pid: 10,
            name: "sshd".into(),
            exe: "/usr/sbin/sshd".into(),
            user: "root".into(),
        };
        assert_eq!(
            snapshot.owners.get(&100),
            Some(&sshd),
            "lowest live pid wins"
        );
        assert_eq!(snapshot.owners[&200].user, "alice");
        assert_eq!(snapshot.owners[&300].user, "4242", "unknown uid as text");
        assert_eq!(snapshot.owners.len(), 3);
        assert!(snapshot.raw_owners.is_empty());

        let listening = snapshot.listening();
        let ports: Vec<_> = listening
            .iter()
            .map(|(s, p)| (s.local.port(), p.map(|p| p.pid)))
            .collect();
        assert_eq!(ports, [(22, Some(10)), (25, Some(20)), (80, Some(30))]);
    }

    #[test]
    fn owner_prefers_the_connected_socket() {
        let fake = Fake::new();
        fake.table(
            "tcp",
            TCP_HEADER,
            &[
                // *:8080 listening (pid 10), 127.0.0.1:8080 <- 127.0.0.1:40000 (pid 11)
                line("00000000:1F90", "00000000:0000", "0A", 0, 100),
                line("0100007F:1F90", "0100007F:9C40", "01", 0, 101),
                // 127.0.0.1:8080 <- 127.0.0.1:40001 in TIME_WAIT: no inode
                line("0100007F:1F90", "0100007F:9C41", "06", 0, 0),
            ],
        );
        fake.table(
            "udp6",
            TCP6_HEADER,
            &[
                // [::]:53 unconnected (pid 20)
                line(
                    "00000000000000000000000000000000:0035",
                    "00000000000000000000000000000000:0000",
                    "07",
                    0,
                    200,
                ),
                // [::ffff:10.0.0.2]:53 -> [::ffff:10.0.0.9]:5353 connected (pid 21)
                line(
                    "0000000000000000FFFF00000200000A:0035",
                    "0000000000000000FFFF00000900000A:14E9",
                    "01",
                    0,
                    201,
                ),
            ],
        );
        fake.process(10, "server", "/srv/server", 0, &["socket:[100]"]);
        fake.process(11, "worker", "/srv/worker", 0, &["socket:[101]"]);
        fake.process(20, "dns", "/usr/sbin/dns", 0, &["socket:[200]"]);
        fake.process(21, "dns-child", "/usr/sbin/dns", 0, &["socket:[201]"]);
        let snapshot = fake.read();
        let pid = |protocol, local: &str, remote: &str| {
            snapshot
                .owner(protocol, addr(local), addr(remote))
                .map(|p| p.pid)
        };
        use Protocol::{Tcp, Udp};
        assert_eq!(pid(Tcp, "127.0.0.1:8080", "127.0.0.1:40000"), Some(11));
        // Another peer, or the TIME_WAIT one: the listener.
        assert_eq!(pid(Tcp, "127.0.0.1:8080", "127.0.0.1:40002"), Some(10));
        assert_eq!(pid(Tcp, "127.0.0.1:8080", "127.0.0.1:40001"), Some(10));
        // The wildcard listener matches any IPv4 address, not IPv6.
        assert_eq!(pid(Tcp, "192.168.1.5:8080", "10.1.1.1:1234"), Some(10));
        assert_eq!(pid(Tcp, "[2001:db8::5]:8080", "[2001:db8::9]:1234"), None);
        // IPv4-mapped and plain IPv4 are the same address.
        assert_eq!(
            pid(Tcp, "[::ffff:127.0.0.1]:8080", "127.0.0.1:40000"),
            Some(11)
        );
        // Wrong protocol or port.
        assert_eq!(pid(Udp, "127.0.0.1:8080", "127.0.0.1:40000"), None);
        assert_eq!(pid(Tcp, "127.0.0.1:8081", "127.0.0.1:40000"), None);
        // [::] matches IPv4 and IPv6; the connected socket wins for its peer.
        assert_eq!(pid(Udp, "10.0.0.2:53", "10.0.0.9:5353"), Some(21));
        assert_eq!(pid(Udp, "10.0.0.2:53", "10.0.0.7:5353"), Some(20));
        assert_eq!(pid(Udp, "10.0.0.3:53", "10.0.0.9:5353"), Some(20));
        assert_eq!(pid(Udp, "[fe80::1]:53", "[fe80::2]:5353"), Some(20));
    }

    #[test]
    fn a_socket_without_owner_gives_none() {
        let fake = Fake::new();
        fake.table(
            "tcp",
            TCP_HEADER,
            &[line("0100007F:0016", "00000000:0000", "0A", 0, 100)],
        );
        let snapshot = fake.read();
        assert_eq!(
            snapshot.owner(Protocol::Tcp, addr("127.0.0.1:22"), addr("127.0.0.1:1")),
            None
        );
        assert_eq!(snapshot.listening().len(), 1);
        assert_eq!(snapshot.listening()[0].1, None);
    }

    #[test]
    fn raw_and_packet_socket_owners() {
        let fake = Fake::new();
        fake.table(
            "tcp",
            TCP_HEADER,
            &[line("0100007F:0016", "00000000:0000", "0A", 0, 100)],
        );
        // nmap's raw IPv4 socket (protocol 255) and masscan's packet socket.
        fake.table(
            "raw",
            TCP_HEADER,
            &[line("00000000:00FF", "00000000:0000", "07", 0, 500)],
        );
        fake.table(
            "packet",
            PACKET_HEADER,
            &["ffff8d0b4c6e1000 3      3      0003   2     1 0      0      600\n".into()],
        );
        fake.process(30, "masscan", "/usr/bin/masscan", 1000, &["socket:[600]"]);
        fake.process(
            20,
            "nmap",
            "/usr/bin/nmap",
            0,
            &["socket:[500]", "socket:[100]"],
        );
        fake.process(21, "nmap-child", "/usr/bin/nmap", 0, &["socket:[500]"]);
        let snapshot = fake.read();
        let raw: Vec<_> = snapshot
            .raw_owners
            .iter()
            .map(|p| (p.pid, p.name.as_str(), p.user.as_str()))
            .collect();
        assert_eq!(raw, [(20, "nmap", "root"), (30, "masscan", "alice")]);
        assert_eq!(snapshot.owners[&100].name, "nmap");
        assert!(
            !snapshot.owners.contains_key(&500),
            "raw sockets are not in owners"
        );
        assert_eq!(snapshot.skipped_lines, 0);
    }

    #[test]
    fn reads_this_machines_proc() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = listener.local_addr().expect("local addr");
        let snapshot = read(Path::new("/proc"), Path::new("/etc/passwd")).expect("read /proc");
        let me = snapshot
            .owner(Protocol::Tcp, local, addr("127.0.0.1:1"))
            .expect("our listener has an owner");
        assert_eq!(me.pid, std::process::id());
        let comm = fs::read_to_string("/proc/self/comm").expect("comm");
        assert_eq!(me.name, comm.trim());
        assert!(!me.exe.is_empty());
        assert!(
            snapshot
                .listening()
                .iter()
                .any(|(s, p)| s.local == local && p.map(|p| p.pid) == Some(me.pid))
        );
    }
}

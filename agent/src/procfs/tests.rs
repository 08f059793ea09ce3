//! Tests of the procfs parsers and the socket-to-program walk: fake /proc trees in a temporary folder, and this machine's /proc.

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

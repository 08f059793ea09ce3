//! The one accept loop for every TCP listener doorwatch serves: agent
//! gRPC, the blocklist feed and the console. What each of them must get
//! right lives here once:
//!
//! - the loop never waits for anything but the next connection: a client
//!   that is slow to handshake costs its own slot, never another's turn;
//! - at most [`ConnectionLimits::max_connections`] connections are open
//!   at once, and at most [`ConnectionLimits::max_per_address`] from one
//!   address (an IPv6 client counts by its /64, which one host can fill);
//!   a connection over either cap is closed at once, and refusals are
//!   logged at most once a minute with their count;
//! - a handshake that is not done within
//!   [`ConnectionLimits::handshake_timeout`] is dropped;
//! - every connection's task belongs to the loop: when `stop` fires the
//!   loop stops accepting and ends the tasks still running, so none
//!   outlives its server.
//!
//! A connection keeps its place in the counts as long as its
//! [`ConnectionSlot`] lives: `handle` holds it, or hands it on with the
//! stream (agent gRPC passes both to tonic).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long the loop waits after a failed accept before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How often refused connections are reported in the log.
const REFUSAL_REPORT: Duration = Duration::from_secs(60);

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// The listener's name in logs ("agent", "feed", "console").
    pub name: &'static str,
    /// Connections open at once, handshakes included.
    pub max_connections: usize,
    /// Connections open at once from one address (one IPv6 /64).
    pub max_per_address: usize,
    /// How long a client may take to finish its handshake.
    pub handshake_timeout: Duration,
}

/// What turns an accepted TCP connection into the stream a server reads:
/// a TLS handshake ([`TlsAcceptor`]) or nothing ([`PlainTcp`]).
pub trait Handshake: Send + Sync + 'static {
    /// The stream after the handshake.
    type Stream: Send + 'static;
    /// Runs the handshake on `tcp`.
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Handshake for TlsAcceptor {
    type Stream = TlsStream<TcpStream>;

    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        self.accept(tcp)
    }
}

/// No handshake: the server speaks plain TCP (the feed without TLS).
#[derive(Debug, Clone, Copy)]
pub struct PlainTcp;

impl Handshake for PlainTcp {
    type Stream = TcpStream;

    async fn handshake(&self, tcp: TcpStream) -> io::Result<TcpStream> {
        Ok(tcp)
    }
}

/// The open connections of one listener, in total and by address.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<AddressKey, usize>,
}

/// What one client is counted as: its IPv4 address (an IPv4-mapped IPv6
/// address too), or its IPv6 /64, since one host can use all of a /64.
/// Every per-address limit uses this: connection caps here, and the
/// console's sign-in limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl AddressKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let mut prefix = [0; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Self::V6Prefix(prefix)
                }
            },
        }
    }
}

/// One open connection's place in its listener's counts, given back when
/// this is dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: Arc<Mutex<Counts>>,
    key: AddressKey,
}

impl ConnectionSlot {
    /// A place for a connection from `ip`, unless a cap is reached.
    fn take(counts: &Arc<Mutex<Counts>>, ip: IpAddr, limits: &ConnectionLimits) -> Option<Self> {
        let key = AddressKey::of(ip);
        let mut c = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let from_address = c.by_address.get(&key).copied().unwrap_or(0);
        if c.total >= limits.max_connections || from_address >= limits.max_per_address {
            return None;
        }
        c.total += 1;
        c.by_address.insert(key, from_address + 1);
        Some(Self {
            counts: counts.clone(),
            key,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.by_address.remove(&self.key);
            }
        }
    }
}

/// Accepts connections on `listener` until `stop` completes, runs
/// `handshake` on each within the limits, and hands the result, the
/// peer's address and the connection's slot to `handle` in a task of its
/// own. Returns once every connection task has ended.
pub async fn serve_connections<H, F, Fut>(
    listener: TcpListener,
    handshake: H,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
    handle: F,
) where
    H: Handshake,
    F: Fn(H::Stream, SocketAddr, ConnectionSlot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (handshake, handle) = (Arc::new(handshake), Arc::new(handle));
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut connections = JoinSet::new();
    let mut refused = Refusals::new(limits.name);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "{} listener: accept failed", limits.name);
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                log_panic(limits.name, ended);
                continue;
            }
            () = &mut stop => break,
        };
        let Some(slot) = ConnectionSlot::take(&counts, peer.ip(), &limits) else {
            // Closing at once keeps the loop free for everyone else.
            drop(tcp);
            refused.count(peer);
            continue;
        };
        let (handshake, handle) = (handshake.clone(), handle.clone());
        connections.spawn(async move {
            // Nagle would delay small answers (gRPC acks) by up to 40 ms.
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(limits.handshake_timeout, handshake.handshake(tcp)).await {
                Ok(Ok(stream)) => handle(stream, peer, slot).await,
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // The client gave up (its own timeout, a reboot).
                    tracing::debug!(remote = %peer, "{} client closed the connection during the handshake", limits.name);
                }
                Ok(Err(e)) => {
                    tracing::warn!(remote = %peer, reason = %e, "refused {} connection: handshake failed", limits.name);
                }
                Err(_) => {
                    tracing::debug!(remote = %peer, "{} handshake timed out", limits.name);
                }
            }
        });
    }
    connections.shutdown().await;
    tracing::info!("stopped accepting {} connections", limits.name);
}

/// Connections closed over a cap, reported at most once a minute so that
/// a flood cannot flood the log too.
struct Refusals {
    name: &'static str,
    since_report: u64,
    next_report: Instant,
}

impl Refusals {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            since_report: 0,
            next_report: Instant::now(),
        }
    }

    fn count(&mut self, peer: SocketAddr) {
        self.since_report += 1;
        let now = Instant::now();
        if now >= self.next_report {
            tracing::warn!(
                last_remote = %peer,
                refused = self.since_report,
                "{} listener at its connection cap (in total or for one address): closed new connections",
                self.name
            );
            self.since_report = 0;
            self.next_report = now + REFUSAL_REPORT;
        }
    }
}

/// A connection task that panicked is a bug worth an error line; one that
/// ended is not news.
fn log_panic(name: &'static str, ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended
        && e.is_panic()
    {
        tracing::error!(error = %e, "a {name} connection task panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{Notify, oneshot};

    fn limits(max_connections: usize, max_per_address: usize) -> ConnectionLimits {
        ConnectionLimits {
            name: "test",
            max_connections,
            max_per_address,
            handshake_timeout: Duration::from_millis(300),
        }
    }

    /// A handshake the client must start: it waits for one byte.
    struct FirstByte;

    impl Handshake for FirstByte {
        type Stream = TcpStream;
        async fn handshake(&self, mut tcp: TcpStream) -> io::Result<TcpStream> {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await?;
            Ok(tcp)
        }
    }

    /// A server on loopback whose connections greet with "hi" and stay
    /// open until `release` is notified; `open` counts the served ones.
    struct Server {
        address: SocketAddr,
        open: Arc<AtomicUsize>,
        release: Arc<Notify>,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Server {
        async fn start<H: Handshake<Stream = TcpStream>>(
            handshake: H,
            limits: ConnectionLimits,
        ) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("address");
            let (stop, stop_rx) = oneshot::channel::<()>();
            let open = Arc::new(AtomicUsize::new(0));
            let release = Arc::new(Notify::new());
            let (open2, release2) = (open.clone(), release.clone());
            let task = tokio::spawn(serve_connections(
                listener,
                handshake,
                limits,
                async {
                    let _ = stop_rx.await;
                },
                move |mut tcp: TcpStream, _, slot| {
                    let (open, release) = (open2.clone(), release2.clone());
                    async move {
                        let _slot = slot;
                        open.fetch_add(1, Ordering::SeqCst);
                        let _ = tcp.write_all(b"hi").await;
                        release.notified().await;
                    }
                },
            ));
            Self {
                address,
                open,
                release,
                stop: Some(stop),
                task,
            }
        }

        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                stop.send(()).expect("server alive");
            }
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("the loop ends its connection tasks on stop")
                .expect("no panic");
        }
    }

    async fn connect_from(source: [u8; 4], address: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind a loopback source");
        let mut tcp = socket.connect(address).await.expect("connect");
        tcp.write_all(b"!").await.expect("start the handshake");
        tcp
    }

    /// "served" once the server greets, "closed" if it hangs up first.
    async fn outcome(tcp: &mut TcpStream) -> &'static str {
        let mut greeting = [0u8; 2];
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut greeting)).await {
            Ok(Ok(2)) => "served",
            Ok(Ok(0) | Err(_)) => "closed",
            Ok(Ok(_)) => "partial",
            Err(_) => "waiting",
        }
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_later_ones_served() {
        let server = Server::start(FirstByte, limits(2, 10)).await;
        let mut first = connect_from([127, 0, 0, 1], server.address).await;
        let mut second = connect_from([127, 0, 0, 2], server.address).await;
        assert_eq!(outcome(&mut first).await, "served");
        assert_eq!(outcome(&mut second).await, "served");
        let mut third = connect_from([127, 0, 0, 3], server.address).await;
        assert_eq!(outcome(&mut third).await, "closed", "over the cap of 2");

        server.release.notify_one();
        // The freed slot is given back once its task ends.
        let mut served = false;
        for _ in 0..50 {
            let mut next = connect_from([127, 0, 0, 4], server.address).await;
            if outcome(&mut next).await == "served" {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(served, "a connection is served again once one ended");
        assert_eq!(server.open.load(Ordering::SeqCst), 3);
        server.stop().await;
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_slot() {
        let server = Server::start(FirstByte, limits(100, 2)).await;
        let mut mine = Vec::new();
        for _ in 0..2 {
            let mut tcp = connect_from([127, 0, 0, 7], server.address).await;
            assert_eq!(outcome(&mut tcp).await, "served");
            mine.push(tcp);
        }
        let mut third = connect_from([127, 0, 0, 7], server.address).await;
        assert_eq!(
            outcome(&mut third).await,
            "closed",
            "over the per-address cap"
        );
        let mut other = connect_from([127, 0, 0, 8], server.address).await;
        assert_eq!(
            outcome(&mut other).await,
            "served",
            "another address still gets in"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn silent_handshakes_neither_stall_others_nor_stay() {
        let server = Server::start(FirstByte, limits(100, 100)).await;
        // Clients that connect and never start their handshake.
        let mut silent = Vec::new();
        for _ in 0..20 {
            silent.push(TcpStream::connect(server.address).await.expect("connect"));
        }
        let mut talker = connect_from([127, 0, 0, 1], server.address).await;
        assert_eq!(
            outcome(&mut talker).await,
            "served",
            "not stuck behind silent ones"
        );
        for tcp in &mut silent {
            assert_eq!(
                outcome(tcp).await,
                "closed",
                "dropped after the handshake timeout"
            );
        }
        server.stop().await;
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let a: IpAddr = "fd00:d00::1".parse().expect("ip");
        let b: IpAddr = "fd00:d00::ffff:2".parse().expect("ip");
        let c: IpAddr = "fd00:d00:0:1::1".parse().expect("ip");
        assert_eq!(AddressKey::of(a), AddressKey::of(b));
        assert_ne!(AddressKey::of(a), AddressKey::of(c));
        let mapped: IpAddr = "::ffff:198.18.0.1".parse().expect("ip");
        assert_eq!(
            AddressKey::of(mapped),
            AddressKey::of("198.18.0.1".parse().expect("ip"))
        );
    }
}

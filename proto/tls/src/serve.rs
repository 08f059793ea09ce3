//! The one accept loop for every TCP listener doorwatch serves: agent
//! gRPC, the blocklist feed and the console. What each of them must get
//! right lives here once:
//!
//! - an accept error (out of file descriptors, say) is logged and the loop
//!   waits 100 ms instead of spinning;
//! - at most [`ConnectionLimits::max_connections`] connections are open
//!   at once; more wait in the kernel's backlog, so a flood of clients
//!   costs a bounded number of tasks and sockets;
//! - a handshake that is not done within
//!   [`ConnectionLimits::handshake_timeout`] is dropped;
//! - every connection's task belongs to the loop: when `stop` fires the
//!   loop stops accepting and ends the tasks still running, so none
//!   outlives its server.
//!
//! What happens on a connection after its handshake is the caller's
//! `handle`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long the loop waits after a failed accept before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// The listener's name in logs ("agent", "feed", "console").
    pub name: &'static str,
    /// Connections open at once, handshakes included.
    pub max_connections: usize,
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

/// Accepts connections on `listener` until `stop` completes, runs
/// `handshake` on each within the limits, and hands the result and the
/// peer's address to `handle` in a task of its own. Returns once every
/// connection task has ended.
pub async fn serve_connections<H, F, Fut>(
    listener: TcpListener,
    handshake: H,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
    handle: F,
) where
    H: Handshake,
    F: Fn(H::Stream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (handshake, handle) = (Arc::new(handshake), Arc::new(handle));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        // A free slot first, so that a full server leaves new clients in
        // the backlog rather than holding them half-open.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                log_panic(limits.name, ended);
                continue;
            }
            () = &mut stop => break,
        };
        let Ok(slot) = slot else { break };
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
        let (handshake, handle) = (handshake.clone(), handle.clone());
        connections.spawn(async move {
            let _slot = slot;
            // Nagle would delay small answers (gRPC acks) by up to 40 ms.
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(limits.handshake_timeout, handshake.handshake(tcp)).await {
                Ok(Ok(stream)) => handle(stream, peer).await,
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

    fn limits(max_connections: usize, handshake_timeout: Duration) -> ConnectionLimits {
        ConnectionLimits {
            name: "test",
            max_connections,
            handshake_timeout,
        }
    }

    async fn loopback() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        (listener, address)
    }

    /// A handshake that waits as long as it is told.
    struct Slow(Duration);

    impl Handshake for Slow {
        type Stream = TcpStream;
        async fn handshake(&self, tcp: TcpStream) -> io::Result<TcpStream> {
            tokio::time::sleep(self.0).await;
            Ok(tcp)
        }
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_until_one_ends() {
        let (listener, address) = loopback().await;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let open = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let (open2, release2) = (open.clone(), release.clone());
        let server = tokio::spawn(serve_connections(
            listener,
            PlainTcp,
            limits(2, Duration::from_secs(5)),
            async {
                let _ = stop_rx.await;
            },
            move |mut tcp: TcpStream, _| {
                let (open, release) = (open2.clone(), release2.clone());
                async move {
                    open.fetch_add(1, Ordering::SeqCst);
                    let _ = tcp.write_all(b"hi").await;
                    release.notified().await;
                }
            },
        ));
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(address).await.expect("connect"));
        }
        let mut greeting = [0u8; 2];
        for client in &mut clients[..2] {
            client.read_exact(&mut greeting).await.expect("served");
        }
        let third = tokio::time::timeout(
            Duration::from_millis(300),
            clients[2].read_exact(&mut greeting),
        )
        .await;
        assert!(
            third.is_err(),
            "the third connection was served past the limit of 2"
        );
        assert_eq!(open.load(Ordering::SeqCst), 2);

        release.notify_one();
        tokio::time::timeout(Duration::from_secs(5), clients[2].read_exact(&mut greeting))
            .await
            .expect("the third connection is served once a slot is free")
            .expect("read");
        assert_eq!(open.load(Ordering::SeqCst), 3);

        stop_tx.send(()).expect("server alive");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the loop ends its connection tasks on stop")
            .expect("no panic");
    }

    #[tokio::test]
    async fn a_slow_handshake_is_dropped_and_frees_its_slot() {
        let (listener, address) = loopback().await;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let served = Arc::new(AtomicUsize::new(0));
        let served2 = served.clone();
        let server = tokio::spawn(serve_connections(
            listener,
            Slow(Duration::from_secs(60)),
            limits(1, Duration::from_millis(100)),
            async {
                let _ = stop_rx.await;
            },
            move |_tcp: TcpStream, _| {
                let served = served2.clone();
                async move {
                    served.fetch_add(1, Ordering::SeqCst);
                }
            },
        ));
        for _ in 0..2 {
            let mut client = TcpStream::connect(address).await.expect("connect");
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut byte))
                .await
                .expect("the server hangs up on a handshake that takes too long");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
        assert_eq!(served.load(Ordering::SeqCst), 0);
        stop_tx.send(()).expect("server alive");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops")
            .expect("no panic");
    }
}

//! The collector's TLS front door. The policy (rustls, ring, TLS 1.3,
//! client certificates chaining to the campus CA) is `doorwatch-tls`.
//!
//! Connections are accepted here rather than inside tonic so that the
//! verified certificate can be turned into an [`AgentIdentity`] once, at
//! the handshake, and handed to every request as [`PeerInfo`].
//!
//! A client certificate that does not chain to the campus CA, has expired,
//! or belongs to a revoked agent never gets past the handshake. When
//! enrollment is on, a client may connect without a certificate; it then
//! has no identity, and every RPC but `Enroll` refuses it.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::trust::identity::{self, AgentIdentity};
use crate::trust::revocation::{RevocationCheckingVerifier, Revocations};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more wait in the kernel's backlog.
const MAX_CONCURRENT_HANDSHAKES: usize = 512;

pub use doorwatch_tls::{ClientAuth, Protocol, TlsError, load_certs};

/// Agent gRPC's server config: TLS 1.3, ALPN h2, client certificates
/// verified against `client_ca` (see `doorwatch-tls`) and refused when
/// their agent is in `revocations`. `auth` says whether a client may come
/// without one.
pub fn server_config(
    client_ca: &Path,
    server_cert: &Path,
    server_key: &Path,
    auth: ClientAuth,
    revocations: Revocations,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_for(
        Protocol::Grpc,
        client_ca,
        server_cert,
        server_key,
        auth,
        revocations,
    )
}

/// [`server_config`] for `protocol`: the blocklist feed serves HTTPS with
/// the same certificates, and a revoked agent's certificate is refused
/// there too.
pub fn server_config_for(
    protocol: Protocol,
    client_ca: &Path,
    server_cert: &Path,
    server_key: &Path,
    auth: ClientAuth,
    revocations: Revocations,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier = RevocationCheckingVerifier::new(
        doorwatch_tls::client_verifier(client_ca, auth)?,
        revocations,
    );
    doorwatch_tls::server_config_with(Arc::new(verifier), server_cert, server_key, protocol)
}

/// What every request on a connection knows about its peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The agent its verified certificate names; `None` for a client that
    /// came without a certificate to enroll.
    pub identity: Option<AgentIdentity>,
    pub remote: std::net::SocketAddr,
}

/// A verified agent on a connection.
#[derive(Debug, Clone)]
pub struct AgentConnInfo {
    pub identity: AgentIdentity,
    pub remote: std::net::SocketAddr,
}

impl PeerInfo {
    /// The verified agent, if the client presented a certificate.
    pub fn agent(&self) -> Option<AgentConnInfo> {
        Some(AgentConnInfo {
            identity: self.identity.clone()?,
            remote: self.remote,
        })
    }
}

/// A TLS connection that passed the handshake.
#[derive(Debug)]
pub struct AgentConn {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for AgentConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for AgentConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections until `shutdown` turns true, runs the TLS
/// handshake on each, and yields only connections from verified agents.
/// Refused handshakes are logged with the peer address and reason.
pub fn accept_agents(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<Result<AgentConn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly
                    // instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                break;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                // Nagle would delay small acks by up to 40 ms.
                let _ = tcp.set_nodelay(true);
                match handshake(&acceptor, tcp, remote).await {
                    Ok(conn) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(reason) if reason == GAVE_UP => {
                        tracing::debug!(remote = %remote, "client closed the connection during the handshake");
                    }
                    Err(reason) => {
                        tracing::warn!(remote = %remote, reason = %reason, "refused agent connection");
                    }
                }
            });
        }
        tracing::info!("stopped accepting agent connections");
    });
    ReceiverStream::new(rx)
}

/// Why a handshake ended when the client hung up mid-way.
const GAVE_UP: &str = "client closed the connection during the handshake";

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    remote: std::net::SocketAddr,
) -> Result<AgentConn, String> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "tls handshake timed out".to_owned())?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                // The client gave up (its own timeout, a reboot): no refusal.
                GAVE_UP.to_owned()
            } else {
                format!("tls handshake failed: {e}")
            }
        })?;
    // Without a certificate the verifier let it in only because enrollment
    // is on: it gets no identity.
    let identity = match stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
    {
        Some(leaf) => Some(identity::from_certificate(leaf).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok(AgentConn {
        stream,
        info: PeerInfo { identity, remote },
    })
}

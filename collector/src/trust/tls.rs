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
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use doorwatch_process::shutdown;
use doorwatch_tls::serve::{ConnectionLimits, serve_connections};

use crate::trust::identity::{self, AgentIdentity};
use crate::trust::revocation::{RevocationCheckingVerifier, Revocations};

/// Agent handshakes in progress at once (more wait in the kernel's
/// backlog), and how long one may take. A connection counts only until
/// its handshake is done and tonic has it.
const AGENT_LIMITS: ConnectionLimits = ConnectionLimits {
    name: "agent",
    max_connections: 512,
    handshake_timeout: Duration::from_secs(10),
};

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
/// handshake on each (within [`AGENT_LIMITS`], see
/// `doorwatch_tls::serve`), and yields only connections from verified
/// agents. Refused handshakes are logged with the peer address and reason.
pub fn accept_agents(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<Result<AgentConn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        serve_connections(
            listener,
            TlsAcceptor::from(config),
            AGENT_LIMITS,
            shutdown::stop_requested(&mut shutdown),
            move |stream, remote| {
                let tx = tx.clone();
                async move {
                    match agent_conn(stream, remote) {
                        Ok(conn) => {
                            let _ = tx.send(Ok(conn)).await;
                        }
                        Err(reason) => {
                            tracing::warn!(remote = %remote, reason = %reason, "refused agent connection");
                        }
                    }
                }
            },
        )
        .await;
    });
    ReceiverStream::new(rx)
}

/// A verified TLS connection with the identity its certificate names.
fn agent_conn(
    stream: TlsStream<TcpStream>,
    remote: std::net::SocketAddr,
) -> Result<AgentConn, String> {
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

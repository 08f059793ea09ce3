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
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use doorwatch_process::shutdown;
use doorwatch_tls::serve::{ConnectionLimits, ConnectionSlot, serve_connections};

use crate::trust::identity::{self, AgentIdentity};
use crate::trust::revocation::{RevocationCheckingVerifier, Revocations};

/// The agent listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct AgentListenerLimits {
    /// Agent connections open at once, in total and from one address (a
    /// NAT'd lab is one address), and how long a handshake may take. A
    /// connection counts for as long as it is open, handshake to close.
    pub connections: ConnectionLimits,
    /// How long after the handshake the client's first bytes (the HTTP/2
    /// preface) may take.
    pub preface_timeout: Duration,
    /// How long a client without a certificate (one that came to enroll,
    /// which takes seconds) may stay connected.
    pub anonymous_lifetime: Duration,
}

impl Default for AgentListenerLimits {
    fn default() -> Self {
        Self {
            connections: ConnectionLimits {
                name: "agent",
                max_connections: 50_000,
                max_per_address: 1024,
                handshake_timeout: Duration::from_secs(10),
            },
            preface_timeout: Duration::from_secs(10),
            anonymous_lifetime: Duration::from_secs(60),
        }
    }
}

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

/// A TLS connection that passed the handshake. Reads fail with
/// `TimedOut` (and tonic closes the connection) when the client sent
/// nothing within the preface timeout, or, without a certificate, once
/// its short lifetime is over: a silent or lingering client cannot keep
/// its slot.
#[derive(Debug)]
pub struct AgentConn {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
    /// Until the first bytes arrive.
    preface_deadline: Option<Pin<Box<Sleep>>>,
    /// For a client without a certificate.
    anonymous_deadline: Option<Pin<Box<Sleep>>>,
    /// Its place in the listener's counts, for as long as it is open.
    _slot: ConnectionSlot,
}

impl Connected for AgentConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for AgentConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        for (deadline, what) in [
            (
                &mut this.preface_deadline,
                "the client sent nothing after the handshake",
            ),
            (
                &mut this.anonymous_deadline,
                "a client without a certificate stayed too long",
            ),
        ] {
            if let Some(sleep) = deadline
                && sleep.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.preface_deadline = None;
        }
        read
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
/// handshake on each (within `limits`, see `doorwatch_tls::serve`), and
/// yields only connections from verified agents (or, with enrollment on,
/// clients without a certificate). Refused handshakes are logged with the
/// peer address and reason.
pub fn accept_agents(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: AgentListenerLimits,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<Result<AgentConn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        serve_connections(
            listener,
            TlsAcceptor::from(config),
            limits.connections,
            shutdown::stop_requested(&mut shutdown),
            move |stream, remote, slot| {
                let tx = tx.clone();
                async move {
                    match agent_conn(stream, remote, slot, &limits) {
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
    slot: ConnectionSlot,
    limits: &AgentListenerLimits,
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
    let anonymous_deadline = identity
        .is_none()
        .then(|| Box::pin(tokio::time::sleep(limits.anonymous_lifetime)));
    Ok(AgentConn {
        stream,
        info: PeerInfo { identity, remote },
        preface_deadline: Some(Box::pin(tokio::time::sleep(limits.preface_timeout))),
        anonymous_deadline,
        _slot: slot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::pki;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    /// A collector certificate for `collector.test` and an agent's, in a
    /// temporary folder; an agent listener with short deadlines on
    /// loopback, enrollment on (a certificate is optional).
    async fn listener(
        dir: &Path,
    ) -> (
        std::net::SocketAddr,
        ReceiverStream<Result<AgentConn, io::Error>>,
        watch::Sender<bool>,
    ) {
        let (ca, server) =
            pki::init(dir, &["collector.test".to_owned()], &[], false).expect("dev PKI");
        let config = server_config(
            &ca.cert,
            &server.cert,
            &server.key,
            ClientAuth::Optional,
            Revocations::default(),
        )
        .expect("server config");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = tcp.local_addr().expect("address");
        let limits = AgentListenerLimits {
            preface_timeout: Duration::from_millis(300),
            anonymous_lifetime: Duration::from_millis(900),
            ..AgentListenerLimits::default()
        };
        let (stop_tx, stop) = doorwatch_process::shutdown::channel();
        (address, accept_agents(tcp, config, limits, stop), stop_tx)
    }

    async fn connect(
        address: std::net::SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(address).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("collector.test").expect("name");
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("handshake")
    }

    async fn next_conn(incoming: &mut ReceiverStream<Result<AgentConn, io::Error>>) -> AgentConn {
        tokio::time::timeout(Duration::from_secs(5), incoming.next())
            .await
            .expect("a connection")
            .expect("stream open")
            .expect("accepted")
    }

    /// What the server side reads next, within 5 s.
    async fn server_read(conn: &mut AgentConn) -> io::Result<usize> {
        let mut buf = [0u8; 64];
        tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("the read ends")
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_after_the_handshake_is_cut_off() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (address, mut incoming, _stop) = listener(dir.path()).await;
        let anonymous =
            doorwatch_tls::anonymous_client_config(&dir.path().join("ca.pem")).expect("client");
        let _client = connect(address, anonymous).await;
        let mut conn = next_conn(&mut incoming).await;
        let err = server_read(&mut conn).await.expect_err("no preface");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_may_not_linger() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (address, mut incoming, _stop) = listener(dir.path()).await;
        let anonymous =
            doorwatch_tls::anonymous_client_config(&dir.path().join("ca.pem")).expect("client");
        let mut client = connect(address, anonymous).await;
        let mut conn = next_conn(&mut incoming).await;
        client.write_all(b"PRI * HTTP/2.0").await.expect("send");
        assert!(server_read(&mut conn).await.expect("the preface") > 0);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        client.write_all(b"more").await.expect("send");
        let err = server_read(&mut conn).await.expect_err("past its lifetime");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    }

    #[tokio::test]
    async fn an_agent_with_a_certificate_stays_past_the_enrollment_lifetime() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (address, mut incoming, _stop) = listener(dir.path()).await;
        let agent = pki::issue_agent(dir.path(), "pc-1", 1).expect("agent certificate");
        let config =
            doorwatch_tls::client_config(&dir.path().join("ca.pem"), &agent.cert, &agent.key)
                .expect("client");
        let mut client = connect(address, config).await;
        let mut conn = next_conn(&mut incoming).await;
        assert_eq!(
            conn.connect_info().identity.map(|i| i.agent_id),
            Some("pc-1".to_owned())
        );
        client.write_all(b"PRI * HTTP/2.0").await.expect("send");
        assert!(server_read(&mut conn).await.expect("the preface") > 0);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        client.write_all(b"more").await.expect("send");
        assert!(server_read(&mut conn).await.expect("still connected") > 0);
    }
}

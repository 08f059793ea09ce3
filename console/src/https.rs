//! The console's HTTP front: the accept loop (doorwatch-tls's one
//! [`serve_connections`], with the console's connection limits) and
//! HTTP/1.1 on each connection, every request told its peer address.
//! Without TLS (behind a TLS-terminating proxy) the same loop serves plain
//! TCP. The TLS policy itself (TLS 1.3, ring, `http/1.1`, no resumption)
//! is doorwatch-tls's, as for every endpoint; this module must not grow
//! one of its own, and knows nothing of routes, sessions or the store.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use doorwatch_process::shutdown::stop_requested;
use doorwatch_tls::serve::{ConnectionLimits, ConnectionSlot, PlainTcp, serve_connections};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tower::ServiceExt;

/// The console's bounds: browsers open a handful of connections each, so
/// 1024 is far above any security team, and 256 from one address leaves
/// room for a reverse proxy in front.
pub const CONSOLE_LIMITS: ConnectionLimits = ConnectionLimits {
    name: "console",
    max_connections: 1024,
    max_per_address: 256,
    handshake_timeout: Duration::from_secs(10),
};

/// How long a client may take to send a request's headers, and how long a
/// kept-alive connection may sit idle before its next request: a
/// connection that sends nothing gives its slot back.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the router until `stop`, over TLS when `tls` is given: one task
/// per connection, owned by the loop, so they end with it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    limits: ConnectionLimits,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let stop = stop_requested(&mut stop);
    match tls {
        Some(acceptor) => {
            let handle = move |stream, peer, slot| {
                http1(stream, peer, slot, router.clone(), header_read_timeout)
            };
            serve_connections(listener, acceptor, limits, stop, handle).await;
        }
        None => {
            let handle = move |stream, peer, slot| {
                http1(stream, peer, slot, router.clone(), header_read_timeout)
            };
            serve_connections(listener, PlainTcp, limits, stop, handle).await;
        }
    }
}

/// HTTP/1.1 on one connection, until the client closes it or stays silent
/// past `header_read_timeout`; the connection's slot is given back then.
async fn http1<S>(
    stream: S,
    peer: SocketAddr,
    _slot: ConnectionSlot,
    router: axum::Router,
    header_read_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn unreadable_or_mismatched_files_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        let err = doorwatch_tls::https_server_config(&missing, &missing).expect_err("no files");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let (cert, _) = self_signed(dir.path(), "a");
        let (_, other_key) = self_signed(dir.path(), "b");
        let err = doorwatch_tls::https_server_config(&cert, &other_key).expect_err("wrong key");
        assert!(err.to_string().contains("do not work together"), "{err}");
    }

    /// A self-signed `localhost` certificate and its key, as PEM files.
    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed");
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    #[tokio::test]
    async fn requests_over_https_know_their_peer_and_the_loop_stops() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = self_signed(dir.path(), "console");
        let config = doorwatch_tls::https_server_config(&cert, &key).expect("server config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let router = axum::Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            }),
        );
        let (stop_tx, stop) = doorwatch_process::shutdown::channel();
        let server = tokio::spawn(serve(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(config)),
            router,
            CONSOLE_LIMITS,
            HEADER_READ_TIMEOUT,
            stop,
        ));

        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert).expect("read cert") {
            roots.add(c.expect("cert")).expect("add root");
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .expect("handshake");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("127.0.0.1"), "{answer}");

        stop_tx.send(true).expect("server alive");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the loop stops")
            .expect("no panic");
    }

    /// A client that stays silent, before its first request or between
    /// two on a kept-alive connection, loses its connection (and its slot)
    /// after the header timeout.
    #[tokio::test]
    async fn silent_connections_are_closed_after_the_header_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (stop_tx, stop) = doorwatch_process::shutdown::channel();
        let timeout = Duration::from_millis(300);
        let server = tokio::spawn(serve(listener, None, router, CONSOLE_LIMITS, timeout, stop));

        let mut silent = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut answer))
            .await
            .expect("a connection that sends nothing is closed")
            .expect("read");

        let mut idle = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        idle.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("send");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut answer))
            .await
            .expect("a kept-alive connection that goes silent is closed")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer}"
        );

        stop_tx.send(true).expect("server alive");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the loop stops")
            .expect("no panic");
    }
}

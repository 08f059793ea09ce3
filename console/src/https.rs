//! The console's own HTTPS: the rustls server config built from the
//! `[tls]` certificate chain and key, and the accept loop that hands each
//! TLS connection to the router with its peer address.
//!
//! It keeps today's policy (TLS 1.3 and 1.2, ring, `http/1.1`) until it
//! moves into `doorwatch-tls`; it must not grow a policy of its own, and it
//! knows nothing of routes, sessions or the store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use doorwatch_process::shutdown::stop_requested;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// The certificate or key files cannot make a server config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFileError {
    #[error("cannot read {}", path.display())]
    ReadCert {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("bad certificate in {}", path.display())]
    BadCert {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot read the key {}", path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS versions")]
    Versions(#[source] rustls::Error),
    #[error("the certificate does not match the key")]
    Mismatch(#[source] rustls::Error),
}

/// Reads the chain and key (PEM) into the console's server config.
pub fn load_tls(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsFileError> {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .map_err(|source| TlsFileError::ReadCert {
            path: cert.to_owned(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsFileError::BadCert {
            path: cert.to_owned(),
            source,
        })?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).map_err(|source| {
        TlsFileError::ReadKey {
            path: key.to_owned(),
            source,
        }
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(TlsFileError::Versions)?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(TlsFileError::Mismatch)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves HTTPS until `stop`: one task per connection, each request told
/// its peer address. The connection tasks belong to this loop; they end
/// with it.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = stop_requested(&mut stop) => break,
        };
        connections.spawn(connection(acceptor.clone(), router.clone(), tcp, peer));
    }
    connections.shutdown().await;
}

/// One TLS connection: the handshake (10 s at most), then HTTP/1.1.
async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
    if let Err(e) =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
            .await
    {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn unreadable_or_mismatched_files_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        let err = load_tls(&missing, &missing).expect_err("no files");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let (cert, _) = self_signed(dir.path(), "a");
        let (_, other_key) = self_signed(dir.path(), "b");
        let err = load_tls(&cert, &other_key).expect_err("wrong key");
        assert!(err.to_string().contains("does not match"), "{err}");
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
        let config = load_tls(&cert, &key).expect("server config");
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
        let server = tokio::spawn(serve_tls(
            listener,
            tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            router,
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
}

//! The collector's TLS front door, in process over 127.0.0.1: an agent
//! with a certificate from the campus CA gets through with its identity;
//! everything else is refused at the handshake, and so is a revoked agent.
//! With enrollment on, a client without a certificate gets through with no
//! identity.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use doorwatch_collector::trust::revocation::Revocations;
use doorwatch_collector::trust::tls::ClientAuth;
use doorwatch_collector::trust::{pki, tls};
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::StreamExt;

struct Server {
    address: std::net::SocketAddr,
    incoming: tokio_stream::wrappers::ReceiverStream<Result<tls::AgentConn, std::io::Error>>,
    _stop: watch::Sender<bool>,
}

async fn server(pki: &Path) -> Server {
    server_with(pki, ClientAuth::Required, Revocations::default()).await
}

async fn server_with(pki: &Path, auth: ClientAuth, revocations: Revocations) -> Server {
    let config = tls::server_config(
        &pki.join("ca.pem"),
        &pki.join("collector.pem"),
        &pki.join("collector.key"),
        auth,
        revocations,
    )
    .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stop_rx) = watch::channel(false);
    Server {
        address,
        incoming: tls::accept_agents(
            listener,
            config,
            tls::AgentListenerLimits::default(),
            stop_rx,
        ),
        _stop: stop,
    }
}

fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("ca cert")).expect("add ca");
    }
    let builder = rustls::ClientConfig::builder_with_provider(doorwatch_tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .expect("cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certs"),
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Connects and tries to use the connection. Returns whether the server
/// let it through (in TLS 1.3 a refused client learns it on first read).
async fn connect(server: &Server, config: Arc<rustls::ClientConfig>) -> bool {
    let tcp = TcpStream::connect(server.address).await.expect("tcp");
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("collector.doorwatch.test").expect("name");
    let Ok(mut stream) = connector.connect(name, tcp).await else {
        return false;
    };
    // The server sends nothing before the client speaks HTTP/2; a refused
    // handshake shows up as an alert or a closed connection on read.
    let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

async fn accepted(server: &mut Server) -> Option<tls::PeerInfo> {
    match tokio::time::timeout(Duration::from_millis(500), server.incoming.next()).await {
        Ok(Some(Ok(conn))) => Some(tonic::transport::server::Connected::connect_info(&conn)),
        _ => None,
    }
}

fn init_pki(dir: &Path) {
    let ip: IpAddr = "127.0.0.1".parse().expect("literal");
    pki::init(dir, &["collector.doorwatch.test".into()], &[ip], false).expect("pki init");
}

#[tokio::test]
async fn agent_with_campus_certificate_gets_its_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    init_pki(dir.path());
    let agent = pki::issue_agent(dir.path(), "pc-17", 30).expect("issue");
    let mut server = server(dir.path()).await;
    let config = client_config(&dir.path().join("ca.pem"), Some((&agent.cert, &agent.key)));
    let client = tokio::spawn({
        let address = server.address;
        async move {
            let tcp = TcpStream::connect(address).await.expect("tcp");
            let name = ServerName::try_from("collector.doorwatch.test").expect("name");
            tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .expect("handshake")
        }
    });
    let info = accepted(&mut server).await.expect("connection accepted");
    assert_eq!(info.identity.expect("identity").agent_id, "pc-17");
    drop(client.await);
}

#[tokio::test]
async fn a_revoked_agent_is_refused_in_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    init_pki(dir.path());
    let agent = pki::issue_agent(dir.path(), "pc-17", 30).expect("issue");
    let revocations = Revocations::default();
    revocations.replace([("pc-17".to_owned(), "stolen".to_owned())].into());
    let mut server = server_with(dir.path(), ClientAuth::Optional, revocations).await;
    let config = client_config(&dir.path().join("ca.pem"), Some((&agent.cert, &agent.key)));
    assert!(
        !connect(&server, config).await,
        "revoked agent must be refused"
    );
    assert!(accepted(&mut server).await.is_none());
}

#[tokio::test]
async fn with_enrollment_on_a_client_without_certificate_has_no_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    init_pki(dir.path());
    init_pki(other.path());
    let mut server = server_with(dir.path(), ClientAuth::Optional, Revocations::default()).await;
    let anonymous = client_config(&dir.path().join("ca.pem"), None);
    let client = tokio::spawn({
        let address = server.address;
        async move {
            let tcp = TcpStream::connect(address).await.expect("tcp");
            let name = ServerName::try_from("collector.doorwatch.test").expect("name");
            tokio_rustls::TlsConnector::from(anonymous)
                .connect(name, tcp)
                .await
                .expect("handshake")
        }
    });
    let info = accepted(&mut server).await.expect("may connect to enroll");
    drop(client.await);
    assert!(info.identity.is_none());
    // A certificate that is presented must still be the campus CA's.
    let stranger = pki::issue_agent(other.path(), "pc-17", 30).expect("issue");
    let config = client_config(
        &dir.path().join("ca.pem"),
        Some((&stranger.cert, &stranger.key)),
    );
    assert!(
        !connect(&server, config).await,
        "foreign CA must be refused"
    );
    assert!(accepted(&mut server).await.is_none());
}

#[tokio::test]
async fn client_without_certificate_is_refused_in_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    init_pki(dir.path());
    let mut server = server(dir.path()).await;
    let config = client_config(&dir.path().join("ca.pem"), None);
    assert!(
        !connect(&server, config).await,
        "no certificate must be refused"
    );
    assert!(accepted(&mut server).await.is_none());
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let campus = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    init_pki(campus.path());
    init_pki(other.path());
    let stranger = pki::issue_agent(other.path(), "pc-17", 30).expect("issue");
    let mut server = server(campus.path()).await;
    let config = client_config(
        &campus.path().join("ca.pem"),
        Some((&stranger.cert, &stranger.key)),
    );
    assert!(
        !connect(&server, config).await,
        "foreign CA must be refused"
    );
    assert!(accepted(&mut server).await.is_none());
}

#[tokio::test]
async fn self_signed_certificate_naming_an_agent_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    init_pki(dir.path());
    // A forger who knows the naming scheme but has no campus CA key.
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        "urn:doorwatch:agent:pc-17".try_into().expect("uri"),
    )];
    let cert = params.self_signed(&key).expect("self-signed");
    let cert_path = dir.path().join("forged.pem");
    let key_path = dir.path().join("forged.key");
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    let mut server = server(dir.path()).await;
    let config = client_config(&dir.path().join("ca.pem"), Some((&cert_path, &key_path)));
    assert!(
        !connect(&server, config).await,
        "forged certificate must be refused"
    );
    assert!(accepted(&mut server).await.is_none());
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    init_pki(dir.path());
    // Valid for zero days: expired as soon as the clock ticks past issuing.
    let agent = pki::issue_agent(dir.path(), "pc-17", 0).expect("issue");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut server = server(dir.path()).await;
    let config = client_config(&dir.path().join("ca.pem"), Some((&agent.cert, &agent.key)));
    assert!(
        !connect(&server, config).await,
        "expired certificate must be refused"
    );
    assert!(accepted(&mut server).await.is_none());
}

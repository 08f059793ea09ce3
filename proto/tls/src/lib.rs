//! doorwatch's one TLS policy, for every TLS endpoint it serves and every
//! connection it makes: rustls with the ring provider, TLS 1.3 only, no
//! session resumption on servers. Agent gRPC uses ALPN `h2` and mutual
//! authentication against the campus CA; the collector's blocklist feed
//! and the console serve HTTPS (`http/1.1`) from the same builder
//! ([`Protocol`]). Clients of outside services (alert webhooks and mail
//! relays) get [`outside_client_config`], the one place that also allows
//! TLS 1.2, because those servers are not ours. It is part of the wire
//! contract, which is why it lives beside `proto/`.
//!
//! This crate builds rustls configurations from PEM files (or, for tools
//! that issue certificates on the fly such as the load generator, from
//! certificates already in memory), and runs the one accept loop every
//! server uses ([`serve`]: connection limits, handshake timeouts, owned
//! connection tasks). Identities, certificate issuing and what a server
//! does on a connection live with their users.

#![forbid(unsafe_code)]

pub mod serve;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol both sides require (gRPC runs over HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";
/// The ALPN protocol of the HTTPS endpoints (feed, console).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What a server speaks inside TLS, which sets its ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Agent gRPC over HTTP/2 (`h2`).
    Grpc,
    /// HTTP/1.1 (`http/1.1`): the blocklist feed, the console.
    Https,
}

impl Protocol {
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Self::Grpc => vec![ALPN_H2.to_vec()],
            Self::Https => vec![ALPN_HTTP1.to_vec()],
        }
    }
}

/// A TLS setup problem, naming the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read PEM from {path}: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot read PEM from the {what} given in memory: {detail}")]
    PemData { what: &'static str, detail: String },
    #[error("the {what} given in memory holds no certificate")]
    NoCertificateData { what: &'static str },
    #[error("rejected CA certificate in {path}: {source}")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("rejected CA certificate given in memory: {0}")]
    BadCaData(#[source] rustls::Error),
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider for every TLS connection doorwatch makes.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The private key in a PEM file. Errors never include key material.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// A trust store holding the CA certificates in `path` (a bundle may hold
/// old and new CAs during a rollover).
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// The collector's config: a client certificate chaining to `client_ca`
/// is required (never optional).
pub fn server_config(
    client_ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_with(
        client_verifier(client_ca, ClientAuth::Required)?,
        cert,
        key,
        Protocol::Grpc,
    )
}

/// Whether a client may connect without a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a certificate chaining to the CA.
    Required,
    /// A client may present none (to enroll and get one). A certificate
    /// that is presented must still chain to the CA, or the handshake
    /// fails; the server must then refuse every request but enrollment
    /// from clients without one.
    Optional,
}

/// Verifies client certificates against the CA bundle in `client_ca`
/// (intermediate CAs come from the client's chain).
pub fn client_verifier(
    client_ca: &Path,
    auth: ClientAuth,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(load_roots(client_ca)?),
        provider(),
    );
    let builder = match auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    Ok(builder.build()?)
}

/// A server config with a client verifier of its own (one that also
/// checks revocations, say), speaking `protocol`.
pub fn server_config_with(
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    cert: &Path,
    key: &Path,
    protocol: Protocol,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier);
    finish_server(
        builder.with_single_cert(load_certs(cert)?, load_key(key)?)?,
        protocol,
    )
}

/// An HTTPS server that asks for no client certificate (the console:
/// people sign in with the campus identity provider instead).
pub fn https_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth();
    finish_server(
        builder.with_single_cert(load_certs(cert)?, load_key(key)?)?,
        Protocol::Https,
    )
}

fn finish_server(
    mut config: rustls::ServerConfig,
    protocol: Protocol,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    config.alpn_protocols = protocol.alpn();
    // No session resumption: a resumed session skips the client-certificate
    // check, so an agent revoked (or expired) since its last full handshake
    // would get in. Every connection pays a full handshake instead; the
    // HTTPS endpoints follow the same rule, one policy for all.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client of an outside service (an alert webhook, a mail relay) that
/// trusts `roots`, offering `alpn` (empty for none). TLS 1.2 is allowed
/// here only: those servers are the campus's or a vendor's, not ours.
pub fn outside_client_config(
    roots: rustls::RootCertStore,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Every certificate in PEM text held in memory (at least one); `what`
/// names it in errors.
pub fn certs_from_pem(
    what: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::PemData {
            what,
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificateData { what });
    }
    Ok(certs)
}

/// The private key in PEM text held in memory. Errors never include key
/// material.
pub fn key_from_pem(what: &'static str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::PemData {
        what,
        detail: e.to_string(),
    })
}

/// A trust store holding the CA certificates in PEM text held in memory.
pub fn roots_from_pem(pem: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem("CA bundle", pem)? {
        roots.add(cert).map_err(TlsError::BadCaData)?;
    }
    Ok(roots)
}

/// The agent's config: trusts only `ca`, presents `cert`.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_with(Arc::new(load_roots(ca)?), load_certs(cert)?, load_key(key)?)
}

/// The agent's config from certificates already in memory: trusts only
/// `roots` (shareable, so thousands of simulated agents hold one copy),
/// presents `chain` with `key`. The same policy as [`client_config`].
pub fn client_config_with(
    roots: Arc<rustls::RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The agent's config before it has a certificate (enrollment): trusts
/// only `ca` and presents none.
pub fn anonymous_client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(Arc::new(load_roots(ca)?))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

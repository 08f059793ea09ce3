//! The agent's side of mutual TLS: the policy from `doorwatch-tls` (the
//! campus CA as the only trust anchor, this agent's client certificate),
//! and the connector that gives tonic a verified TLS stream.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// How long TCP connect plus TLS handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent's TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientTlsError {
    #[error(transparent)]
    Files(#[from] doorwatch_tls::TlsError),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// What the agent needs to open a mutually authenticated connection.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Loads the CA, certificate and key; checks they fit together.
    pub fn load(
        ca: &Path,
        cert: &Path,
        key: &Path,
        server_name: &str,
    ) -> Result<Self, ClientTlsError> {
        let config = doorwatch_tls::client_config(ca, cert, key)?;
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| ClientTlsError::ServerName(server_name.to_owned()))?;
        Ok(Self {
            config,
            server_name,
        })
    }

    /// Uses a client configuration built elsewhere (the load generator
    /// issues certificates in memory); `server_name` must be valid.
    pub fn from_config(
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Self {
        Self {
            config,
            server_name,
        }
    }

    /// Connects to `address` (host:port) and returns a gRPC channel over
    /// the verified TLS connection.
    pub async fn connect(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let connector = TlsConnector::from(self.config.clone());
        let server_name = self.server_name.clone();
        let address = address.to_owned();
        let make_connection = tower::service_fn(move |_: tonic::transport::Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let address = address.clone();
            async move {
                let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "tcp connect timed out")
                    })??;
                tcp.set_nodelay(true)?;
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, tcp))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "tls handshake timed out",
                            )
                        })??;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        // The URI only labels the channel; the connector above decides where
        // and how to connect, and it always uses TLS.
        Endpoint::from_static("http://doorwatch-collector")
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .connect_with_connector(make_connection)
            .await
    }
}

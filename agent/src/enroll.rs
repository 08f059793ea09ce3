//! The agent's identity: enrolling with a bootstrap token, renewing its
//! certificate before it expires, and writing both files safely.
//!
//! The agent makes its own key pair (ECDSA P-256); the private key is
//! written with mode 0600 and never leaves the PC. Only a certificate
//! signing request goes to the collector, which answers with a certificate
//! naming the agent id it assigned. Files are replaced atomically (write,
//! fsync, rename), key first, so a crash never leaves a certificate next to
//! a key it does not match for long: the next start finds either the old
//! pair or the new one, or a new key with the old certificate, which the
//! next start detects and replaces by enrolling or renewing again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doorwatch_proto::v1::{self, EnrollRequest, EnrollResponse, RenewRequest};
use rustls::pki_types::ServerName;

use crate::tls::{ClientTls, ClientTlsError};
use doorwatch_process::secret::Secret;

/// Longest an Enroll or Renew call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why enrolling or renewing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    #[error(transparent)]
    Tls(#[from] ClientTlsError),
    #[error("cannot reach the collector at {address}: {detail}")]
    Connect { address: String, detail: String },
    #[error("the collector refused: {}", .0.message())]
    Refused(tonic::Status),
    #[error("the collector did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot make a key pair or request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the collector sent an unusable certificate: {0}")]
    BadCertificate(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the certificate {path}: {detail}")]
    ReadCertificate { path: PathBuf, detail: String },
    #[error(
        "the certificate {path} has expired and no collector.token is configured to enroll again; run `doorwatch-agent enroll`"
    )]
    ExpiredWithoutToken { path: PathBuf },
}

impl EnrollError {
    /// Whether trying again later may work (the collector or network was
    /// away), as opposed to a refusal that only a person can fix.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout(_) => true,
            Self::Refused(status) => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
            ),
            _ => false,
        }
    }
}

/// Where the agent keeps its identity, and how it reaches the collector.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle that must sign the collector's certificate.
    pub ca: PathBuf,
    pub address: String,
    pub server_name: String,
}

/// What the PC tells the collector about itself (recorded for people).
#[derive(Debug, Clone, Default)]
pub struct Claims {
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
}

/// A certificate just obtained.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub agent_id: String,
    pub group: String,
    pub not_after: SystemTime,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// When to renew: two thirds into the lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

/// Keeps a running agent's certificate current: renews it two thirds into
/// its lifetime over mutual TLS and, if it expired anyway (the PC was off
/// for weeks), enrolls again with the configured token.
#[derive(Debug)]
pub struct Renewal {
    files: IdentityFiles,
    claims: Claims,
    token: Option<Secret>,
    validity: Validity,
    /// After a failure, the next attempt waits until then.
    next_try: SystemTime,
}

impl Renewal {
    /// Reads the current certificate's validity.
    pub fn new(
        files: IdentityFiles,
        claims: Claims,
        token: Option<Secret>,
    ) -> Result<Self, EnrollError> {
        let validity = validity(&files.cert)?;
        Ok(Self {
            files,
            claims,
            token,
            validity,
            next_try: UNIX_EPOCH,
        })
    }

    /// When the next renewal (or re-enrollment) attempt is due.
    pub fn due_at(&self) -> SystemTime {
        self.validity.renew_at().max(self.next_try)
    }

    /// Whether the current certificate has expired.
    pub fn expired(&self) -> bool {
        self.validity.expired(SystemTime::now())
    }

    /// Renews with `current`, or enrolls again if the certificate has
    /// expired, and returns the TLS setup for the new certificate. After a
    /// failure the next attempt waits a tenth of the lifetime (10 s to 1 h).
    pub async fn refresh(&mut self, current: &ClientTls) -> Result<ClientTls, EnrollError> {
        let now = SystemTime::now();
        let outcome = if self.validity.expired(now) {
            match &self.token {
                Some(token) => enroll(&self.files, token.expose(), &self.claims).await,
                None => Err(EnrollError::ExpiredWithoutToken {
                    path: self.files.cert.clone(),
                }),
            }
        } else {
            renew(&self.files, current, &self.claims).await
        };
        let loaded = outcome.and_then(|_| {
            let validity = validity(&self.files.cert)?;
            let tls = ClientTls::load(
                &self.files.ca,
                &self.files.cert,
                &self.files.key,
                &self.files.server_name,
            )?;
            Ok((validity, tls))
        });
        match loaded {
            Ok((validity, tls)) => {
                self.validity = validity;
                self.next_try = UNIX_EPOCH;
                Ok(tls)
            }
            Err(e) => {
                let life = self
                    .validity
                    .not_after
                    .duration_since(self.validity.not_before)
                    .unwrap_or_default();
                let wait = (life / 10).clamp(Duration::from_secs(10), Duration::from_secs(3600));
                self.next_try = now + wait;
                Err(e)
            }
        }
    }
}

/// Reads the validity of the first certificate in a PEM file.
pub fn validity(path: &Path) -> Result<Validity, EnrollError> {
    let bad = |detail: String| EnrollError::ReadCertificate {
        path: path.to_owned(),
        detail,
    };
    let chain = doorwatch_tls::load_certs(path).map_err(|e| bad(e.to_string()))?;
    validity_of(&chain[0]).map_err(bad)
}

fn validity_of(der: &[u8]) -> Result<Validity, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).unwrap_or(0);
        UNIX_EPOCH + Duration::from_secs(secs)
    };
    Ok(Validity {
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
    })
}

/// Enrolls with `token` over server-authenticated TLS and writes the new
/// key and certificate. Each call makes a new key and so a new agent.
pub async fn enroll(
    files: &IdentityFiles,
    token: &str,
    claims: &Claims,
) -> Result<Enrolled, EnrollError> {
    let (key, csr_der) = new_key_and_request()?;
    let config = doorwatch_tls::anonymous_client_config(&files.ca).map_err(ClientTlsError::from)?;
    let tls = ClientTls::from_config(config, server_name(&files.server_name)?);
    let mut client = v1::enrollment_client::EnrollmentClient::new(connect(&tls, files).await?);
    let request = EnrollRequest {
        token: token.trim().to_owned(),
        csr_der,
        hostname: claims.hostname.clone(),
        os: claims.os.clone(),
        agent_version: claims.agent_version.clone(),
    };
    let response = call(client.enroll(request)).await?;
    store(files, &key, response)
}

/// Renews over mutual TLS with the current certificate (`tls`) and writes
/// the new key and certificate. The agent id stays the same.
pub async fn renew(
    files: &IdentityFiles,
    tls: &ClientTls,
    claims: &Claims,
) -> Result<Enrolled, EnrollError> {
    let (key, csr_der) = new_key_and_request()?;
    let mut client = v1::enrollment_client::EnrollmentClient::new(connect(tls, files).await?);
    let request = RenewRequest {
        csr_der,
        hostname: claims.hostname.clone(),
        agent_version: claims.agent_version.clone(),
    };
    let response = call(client.renew(request)).await?;
    store(files, &key, response)
}

fn new_key_and_request() -> Result<(rcgen::KeyPair, Vec<u8>), EnrollError> {
    let key = rcgen::KeyPair::generate()?;
    // The collector ignores names in the request; it decides them.
    let request = rcgen::CertificateParams::default().serialize_request(&key)?;
    Ok((key, request.der().to_vec()))
}

fn server_name(name: &str) -> Result<ServerName<'static>, EnrollError> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| EnrollError::Tls(ClientTlsError::ServerName(name.to_owned())))
}

async fn connect(
    tls: &ClientTls,
    files: &IdentityFiles,
) -> Result<tonic::transport::Channel, EnrollError> {
    tls.connect(&files.address)
        .await
        .map_err(|e| EnrollError::Connect {
            address: files.address.clone(),
            detail: doorwatch_process::logging::error_chain(&e),
        })
}

async fn call(
    call: impl Future<Output = Result<tonic::Response<EnrollResponse>, tonic::Status>>,
) -> Result<EnrollResponse, EnrollError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| EnrollError::Timeout(CALL_TIMEOUT))?
        .map(tonic::Response::into_inner)
        .map_err(EnrollError::Refused)
}

/// Checks the answer fits our key, then writes key and certificate.
fn store(
    files: &IdentityFiles,
    key: &rcgen::KeyPair,
    response: EnrollResponse,
) -> Result<Enrolled, EnrollError> {
    let bad = |detail: String| EnrollError::BadCertificate(detail);
    let chain = doorwatch_tls::certs_from_pem(
        "certificate chain",
        response.certificate_chain_pem.as_bytes(),
    )
    .map_err(|e| bad(e.to_string()))?;
    let key_pem = key.serialize_pem();
    // The same checks the TLS client will make: it must fit our key.
    let roots = doorwatch_tls::load_roots(&files.ca).map_err(|e| bad(e.to_string()))?;
    let private = doorwatch_tls::key_from_pem("new key", key_pem.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    doorwatch_tls::client_config_with(Arc::new(roots), chain.clone(), private)
        .map_err(|e| bad(e.to_string()))?;
    let validity = validity_of(&chain[0]).map_err(bad)?;
    write_atomically(&files.key, key_pem.as_bytes(), true)?;
    write_atomically(
        &files.cert,
        response.certificate_chain_pem.as_bytes(),
        false,
    )?;
    Ok(Enrolled {
        agent_id: response.agent_id,
        group: response.group,
        not_after: validity.not_after,
    })
}

/// Writes `contents` to a temporary file beside `path`, fsyncs it and
/// renames it over `path`. Private files get mode 0600 from the start.
fn write_atomically(path: &Path, contents: &[u8], private: bool) -> Result<(), EnrollError> {
    let err = |source| EnrollError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let _ = private;
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_two_thirds_into_the_lifetime() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let validity = Validity {
            not_before: start,
            not_after: start + Duration::from_secs(30 * 86_400),
        };
        assert_eq!(
            validity.renew_at(),
            start + Duration::from_secs(20 * 86_400)
        );
        assert!(!validity.expired(start));
        assert!(validity.expired(validity.not_after));
    }

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("sub/agent.key");
        write_atomically(&key, b"first", true).expect("write");
        write_atomically(&key, b"second", true).expect("replace");
        assert_eq!(std::fs::read(&key).expect("read"), b"second");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!dir.path().join("sub/agent.key.new").exists());
    }

    #[test]
    fn a_request_carries_the_new_key() {
        let (key, der) = new_key_and_request().expect("request");
        let request = rcgen::CertificateSigningRequestParams::from_der(&der.as_slice().into())
            .expect("a valid, self-signed request");
        assert_eq!(
            rcgen::PublicKeyData::subject_public_key_info(&request.public_key),
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
    }

    #[test]
    fn refusals_that_need_a_person_are_not_retried() {
        let refused = |code| EnrollError::Refused(tonic::Status::new(code, "x"));
        assert!(!refused(tonic::Code::PermissionDenied).is_transient());
        assert!(!refused(tonic::Code::AlreadyExists).is_transient());
        assert!(refused(tonic::Code::Unavailable).is_transient());
        assert!(refused(tonic::Code::ResourceExhausted).is_transient());
    }
}

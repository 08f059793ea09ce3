//! The campus PKI, made with rcgen: a root CA that can stay offline, an
//! issuing CA the collector signs with, the collector's server certificate,
//! and agent client certificates (signed from an agent's CSR at enrollment,
//! or made by hand for tests and the demo).
//!
//! ```text
//! DIR/ca.pem                                trust bundle: the root CA(s)
//! DIR/root.key                              root CA key (move it offline)
//! DIR/issuing.pem  DIR/issuing.key          issuing CA, signed by the root
//! DIR/collector.pem  DIR/collector.key      server certificate + issuing CA
//! DIR/agents/NAME.pem  DIR/agents/NAME.key  hand-made agent certificates
//! ```
//!
//! Every private key is written with mode 0600. Certificates signed by the
//! issuing CA are handed out with it appended, so a peer that trusts only
//! the root can build the chain.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::trust::identity::{AGENT_URI_PREFIX, is_valid_agent_id};

/// A PKI operation that failed, naming the file or input involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error(
        "{path} already exists; pass --force to replace the CA (every agent must then get a new certificate)"
    )]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not a usable name: use 1 to 128 of A-Z a-z 0-9 . _ -")]
    BadName(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the system random number generator failed")]
    Random,
    #[error("the certificate signing request is invalid: {0}")]
    BadRequest(rcgen::Error),
}

/// Paths of one certificate and its key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Creates the CA and the collector's server certificate in `dir`.
/// The server certificate is valid for `dns_names` and `ips`.
pub fn init(
    dir: &Path,
    dns_names: &[String],
    ips: &[IpAddr],
    force: bool,
) -> Result<(CertFiles, CertFiles), PkiError> {
    let ca_files = CertFiles {
        cert: dir.join("ca.pem"),
        key: dir.join("root.key"),
    };
    if ca_files.cert.exists() && !force {
        return Err(PkiError::Exists {
            path: ca_files.cert,
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;

    let root_key = KeyPair::generate()?;
    let mut root_params = CertificateParams::default();
    root_params.distinguished_name = name("doorwatch campus root CA");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut root_params, 3650);
    let root_cert = root_params.self_signed(&root_key)?;
    write_public(&ca_files.cert, &root_cert.pem())?;
    write_private(&ca_files.key, &root_key.serialize_pem())?;
    let root = Issuer::new(root_params, root_key);
    let (issuing_pem, issuer) = new_issuing_ca(dir, &root)?;

    let server_files = CertFiles {
        cert: dir.join("collector.pem"),
        key: dir.join("collector.key"),
    };
    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(dns_names.first().map_or("doorwatch-collector", |n| n));
    params.subject_alt_names = dns_names
        .iter()
        .map(|n| Ok(SanType::DnsName(n.as_str().try_into()?)))
        .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<_, rcgen::Error>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, 397);
    let cert = params.signed_by(&server_key, &issuer)?;
    write_public(&server_files.cert, &format!("{}{issuing_pem}", cert.pem()))?;
    write_private(&server_files.key, &server_key.serialize_pem())?;
    Ok((ca_files, server_files))
}

/// Makes a new issuing CA in `DIR/issuing.pem` and `DIR/issuing.key`,
/// signed by `root`; returns its PEM and an issuer for it.
fn new_issuing_ca(
    dir: &Path,
    root: &Issuer<'_, KeyPair>,
) -> Result<(String, Issuer<'static, KeyPair>), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("doorwatch issuing CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, 3 * 365);
    let cert = params.signed_by(&key, root)?;
    let pem = cert.pem();
    write_public(&dir.join("issuing.pem"), &pem)?;
    write_private(&dir.join("issuing.key"), &key.serialize_pem())?;
    Ok((pem, Issuer::new(params, key)))
}

/// Replaces the issuing CA in `dir` with a new one signed by the root
/// (`DIR/ca.pem` and `DIR/root.key`). Agents keep trusting the root, so
/// certificates from the old and the new issuing CA both stay valid.
pub fn rotate_issuing(dir: &Path) -> Result<CertFiles, PkiError> {
    let root_pem = read(&dir.join("ca.pem"))?;
    let root_key = KeyPair::from_pem(&read(&dir.join("root.key"))?)?;
    let root = Issuer::from_ca_cert_pem(&root_pem, root_key)?;
    new_issuing_ca(dir, &root)?;
    Ok(CertFiles {
        cert: dir.join("issuing.pem"),
        key: dir.join("issuing.key"),
    })
}

/// An agent's client certificate and private key, in PEM, held in memory.
#[derive(Clone)]
pub struct AgentPem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for AgentPem {
    /// Shows the certificate, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentPem")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// The issuing CA, loaded once to sign many agent certificates: from CSRs
/// at enrollment, or with new keys in memory (the load generator issues
/// thousands without touching the disk).
#[derive(Debug)]
pub struct AgentIssuer {
    issuer: Issuer<'static, KeyPair>,
    /// Appended to every certificate issued.
    issuing_pem: String,
}

/// A certificate signed from an agent's CSR.
#[derive(Debug, Clone)]
pub struct SignedAgent {
    /// The certificate, then the issuing CA's.
    pub chain_pem: String,
    /// Hex serial number.
    pub serial: String,
    pub not_after: OffsetDateTime,
    /// Hex SHA-256 of the certificate's public key.
    pub key_sha256: String,
}

impl AgentIssuer {
    /// Reads `DIR/issuing.pem` and `DIR/issuing.key`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        Self::from_files(&dir.join("issuing.pem"), &dir.join("issuing.key"))
    }

    /// Reads the issuing CA's certificate and key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, PkiError> {
        let issuing_pem = read(cert)?;
        let key = KeyPair::from_pem(&read(key)?)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(&issuing_pem, key)?,
            issuing_pem,
        })
    }

    /// Signs a client certificate for `agent` from a PKCS#10 request. Only
    /// the request's public key is used (its signature must verify, which
    /// proves the requester holds the private key); names, extensions and
    /// validity come from us.
    pub fn sign_request(
        &self,
        csr_der: &[u8],
        agent: &str,
        lifetime: std::time::Duration,
    ) -> Result<SignedAgent, PkiError> {
        if !is_valid_agent_id(agent) {
            return Err(PkiError::BadName(agent.to_owned()));
        }
        let der = rustls::pki_types::CertificateSigningRequestDer::from(csr_der);
        let request =
            rcgen::CertificateSigningRequestParams::from_der(&der).map_err(PkiError::BadRequest)?;
        let key_sha256 = hex_sha256(&rcgen::PublicKeyData::subject_public_key_info(
            &request.public_key,
        ));
        let mut params = agent_params(agent)?;
        let now = OffsetDateTime::now_utc();
        let lifetime = Duration::seconds(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2));
        // Back-dated a little for PCs whose clock is behind, but not so
        // much that renewal (two thirds into the validity) comes early.
        params.not_before = now - std::cmp::min(lifetime / 10_i32, ENROLLED_SKEW);
        params.not_after = now + lifetime;
        let serial = random_serial()?;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let not_after = params.not_after;
        let signed = rcgen::CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer)?;
        Ok(SignedAgent {
            chain_pem: format!("{}{}", signed.pem(), self.issuing_pem),
            serial: hex(&serial),
            not_after,
            key_sha256,
        })
    }

    /// A client certificate for agent `agent`, valid for `days`, with a new
    /// key. The agent id is carried in the SAN URI `urn:doorwatch:agent:NAME`.
    pub fn issue(&self, agent: &str, days: u32) -> Result<AgentPem, PkiError> {
        if !is_valid_agent_id(agent) {
            return Err(PkiError::BadName(agent.to_owned()));
        }
        let key = KeyPair::generate()?;
        let mut params = agent_params(agent)?;
        set_validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(AgentPem {
            cert_pem: format!("{}{}", cert.pem(), self.issuing_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What every agent certificate says: the agent id as common name and as
/// the SAN URI `urn:doorwatch:agent:ID`, client authentication only.
fn agent_params(agent: &str) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(agent);
    params.subject_alt_names = vec![SanType::URI(
        format!("{AGENT_URI_PREFIX}{agent}").as_str().try_into()?,
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// 16 random bytes with the top bit clear (a positive DER integer).
fn random_serial() -> Result<[u8; 16], PkiError> {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiError::Random)?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    Ok(serial)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Issues a client certificate for agent `agent`, signed by the CA in
/// `dir`, and returns it in memory. To issue many, load an
/// [`AgentIssuer`] once instead.
pub fn issue_agent_pem(dir: &Path, agent: &str, days: u32) -> Result<AgentPem, PkiError> {
    if !is_valid_agent_id(agent) {
        return Err(PkiError::BadName(agent.to_owned()));
    }
    AgentIssuer::load(dir)?.issue(agent, days)
}

/// Issues a client certificate for agent `agent`, signed by the CA in
/// `dir`, and writes it to `DIR/agents/NAME.pem` and `.key` (0600).
/// The agent id is carried in the SAN URI `urn:doorwatch:agent:NAME`.
pub fn issue_agent(dir: &Path, agent: &str, days: u32) -> Result<CertFiles, PkiError> {
    let pem = issue_agent_pem(dir, agent, days)?;
    let agents = dir.join("agents");
    std::fs::create_dir_all(&agents).map_err(|source| PkiError::Write {
        path: agents.clone(),
        source,
    })?;
    let files = CertFiles {
        cert: agents.join(format!("{agent}.pem")),
        key: agents.join(format!("{agent}.key")),
    };
    write_public(&files.cert, &pem.cert_pem)?;
    write_private(&files.key, &pem.key_pem)?;
    Ok(files)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "doorwatch");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Hand-made and CA certificates start this long before they are made, so
/// a PC whose clock is behind the collector's accepts them at once.
const CLOCK_SKEW: Duration = Duration::hours(1);
/// Most an enrolled agent's certificate is back-dated.
const ENROLLED_SKEW: Duration = Duration::minutes(5);

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + Duration::days(i64::from(days));
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    std::fs::write(path, contents).map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Writes a private key readable by its owner only (0600 on Unix), also
/// when replacing an existing file with looser permissions.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
    }
    let mut file = options.open(path).map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_issue_writes_keys_0600_and_names_the_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip: IpAddr = "127.0.0.1".parse().expect("literal");
        let (ca, server) =
            init(dir.path(), &["collector.test".into()], &[ip], false).expect("init");
        let agent = issue_agent(dir.path(), "pc-1", 30).expect("issue");
        #[cfg(unix)]
        for key in [&ca.key, &server.key, &agent.key] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        let der = crate::trust::tls::load_certs(&agent.cert).expect("pem");
        let identity = crate::trust::identity::from_certificate(&der[0]).expect("identity");
        assert_eq!(identity.agent_id, "pc-1");
    }

    #[test]
    fn init_refuses_to_replace_a_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &["c".into()], &[], false).expect("first init");
        assert!(matches!(
            init(dir.path(), &["c".into()], &[], false),
            Err(PkiError::Exists { .. })
        ));
    }

    #[test]
    fn certificates_issued_in_memory_name_their_agent_and_make_a_client_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &["c".into()], &[], false).expect("init");
        let issuer = AgentIssuer::load(dir.path()).expect("load CA");
        let roots = std::sync::Arc::new(
            doorwatch_tls::roots_from_pem(
                &std::fs::read(dir.path().join("ca.pem")).expect("read ca.pem"),
            )
            .expect("roots"),
        );
        let mut keys = std::collections::HashSet::new();
        for agent in ["lg-00000", "lg-00001"] {
            let pem = issuer.issue(agent, 1).expect("issue");
            assert!(
                keys.insert(pem.key_pem.clone()),
                "every agent gets its own key"
            );
            assert!(
                !format!("{pem:?}").contains("PRIVATE KEY"),
                "Debug hides the key"
            );
            let chain =
                doorwatch_tls::certs_from_pem("cert", pem.cert_pem.as_bytes()).expect("cert pem");
            let identity = crate::trust::identity::from_certificate(&chain[0]).expect("identity");
            assert_eq!(identity.agent_id, agent);
            let key = doorwatch_tls::key_from_pem("key", pem.key_pem.as_bytes()).expect("key");
            doorwatch_tls::client_config_with(roots.clone(), chain, key)
                .expect("certificate and key fit the client policy");
        }
        assert!(
            !dir.path().join("agents").exists(),
            "nothing written to disk"
        );
        assert!(matches!(
            issuer.issue("no spaces", 1),
            Err(PkiError::BadName(_))
        ));
    }

    #[test]
    fn odd_agent_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &["c".into()], &[], false).expect("init");
        assert!(matches!(
            issue_agent(dir.path(), "../etc/passwd", 30),
            Err(PkiError::BadName(_))
        ));
    }
}

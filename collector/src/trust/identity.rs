//! Who an agent is, read from its verified client certificate.
//!
//! The identity is the agent id carried in the certificate's SAN URI
//! `urn:doorwatch:agent:<id>`. Nothing an agent writes in a message is ever
//! used for attribution; what an agent says about itself (hostname,
//! version) is a [`claim`], bounded and escaped before it is logged or
//! stored. This module is pure: DER bytes in, identity out.

use std::fmt;

/// Longest text recorded from what an agent says about itself (hostname,
/// version).
pub const MAX_CLAIM_CHARS: usize = 255;

/// What an agent says about itself (its hostname, its version), as it may
/// be logged and stored: bounded, with control characters escaped. It is
/// a claim, never an identity.
pub fn claim(text: &str) -> String {
    doorwatch_process::text::printable_bounded(text, MAX_CLAIM_CHARS)
}

/// Prefix of the SAN URI that names an agent.
pub const AGENT_URI_PREFIX: &str = "urn:doorwatch:agent:";

/// A verified agent, as attached to each request by the TLS layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentIdentity {
    pub agent_id: String,
}

impl fmt::Display for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.agent_id)
    }
}

/// Why a verified certificate still names no usable agent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("client certificate is not valid X.509: {0}")]
    Malformed(String),
    #[error("client certificate has no {AGENT_URI_PREFIX}<id> SAN URI")]
    NoAgentUri,
    #[error("client certificate names several agents")]
    SeveralAgentUris,
    #[error(
        "agent id in client certificate is empty, too long or has characters outside [A-Za-z0-9._-]"
    )]
    BadAgentId,
}

/// Whether `id` is an acceptable agent id: the store's one naming rule,
/// shared by certificate issuing and reading, the CLI and the console.
pub use doorwatch_store::rules::is_valid_name as is_valid_agent_id;

/// Reads the agent identity from a leaf certificate (DER) that rustls has
/// already verified against the campus CA.
pub fn from_certificate(der: &[u8]) -> Result<AgentIdentity, IdentityError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let mut ids = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(AGENT_URI_PREFIX),
            _ => None,
        });
    let id = ids.next().ok_or(IdentityError::NoAgentUri)?;
    if ids.next().is_some() {
        return Err(IdentityError::SeveralAgentUris);
    }
    if !is_valid_agent_id(id) {
        return Err(IdentityError::BadAgentId);
    }
    Ok(AgentIdentity {
        agent_id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use rcgen::{CertificateParams, KeyPair, SanType};

    #[test]
    fn claims_are_bounded_and_printable() {
        assert_eq!(claim("pc\n-1\u{7}"), "pc\\u{a}-1\\u{7}");
        assert_eq!(
            claim(&"x".repeat(1000)).chars().count(),
            MAX_CLAIM_CHARS + 1
        );
    }

    fn cert_with(sans: Vec<SanType>) -> Vec<u8> {
        let key = KeyPair::generate().expect("keygen");
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    fn uri(text: &str) -> SanType {
        SanType::URI(text.try_into().expect("ia5"))
    }

    #[test]
    fn reads_agent_id_from_san_uri() {
        let der = cert_with(vec![
            SanType::DnsName("pc-17.campus.example".try_into().expect("ia5")),
            uri("urn:doorwatch:agent:pc-17"),
        ]);
        assert_eq!(
            from_certificate(&der),
            Ok(AgentIdentity {
                agent_id: "pc-17".into()
            })
        );
    }

    #[test]
    fn certificate_without_agent_uri_is_refused() {
        let der = cert_with(vec![SanType::DnsName("pc".try_into().expect("ia5"))]);
        assert_eq!(from_certificate(&der), Err(IdentityError::NoAgentUri));
        let der = cert_with(vec![]);
        assert_eq!(from_certificate(&der), Err(IdentityError::NoAgentUri));
    }

    #[test]
    fn certificate_naming_two_agents_is_refused() {
        let der = cert_with(vec![
            uri("urn:doorwatch:agent:a"),
            uri("urn:doorwatch:agent:b"),
        ]);
        assert_eq!(from_certificate(&der), Err(IdentityError::SeveralAgentUris));
    }

    #[test]
    fn odd_agent_ids_are_refused() {
        for bad in ["", "a b", "a/b", "x'--"] {
            let der = cert_with(vec![uri(&format!("urn:doorwatch:agent:{bad}"))]);
            assert_eq!(
                from_certificate(&der),
                Err(IdentityError::BadAgentId),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            from_certificate(b"not a certificate"),
            Err(IdentityError::Malformed(_))
        ));
    }
}

//! The `[enrollment]` table: the issuing CA, certificate lifetime, and how
//! fast enrollment attempts and revocations are taken.

use std::path::PathBuf;

use doorwatch_process::config::ConfigError;
use serde::Deserialize;

/// How agents get and renew their certificates, and how fast revocations
/// take effect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentConfig {
    /// Issuing CA certificate (PEM) that signs agent certificates. Without
    /// it (and `issuing_key`) the collector enrolls no agents and renews
    /// no certificates; agents then need certificates made by hand.
    pub issuing_cert: Option<PathBuf>,
    /// The issuing CA's private key (PEM, mode 0600).
    pub issuing_key: Option<PathBuf>,
    /// Lifetime of agent certificates, e.g. "30d". Agents renew at two
    /// thirds of it.
    pub certificate_lifetime: String,
    /// Enroll requests one source address may make per minute (a burst of
    /// this many, then this many per minute).
    pub enrolls_per_address_per_minute: u32,
    /// Seconds between reads of the revocation list from ClickHouse. A
    /// revoked agent is cut off within this plus a second.
    pub revocation_check_seconds: u64,
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        Self {
            issuing_cert: None,
            issuing_key: None,
            certificate_lifetime: "30d".to_owned(),
            enrolls_per_address_per_minute: 30,
            revocation_check_seconds: 2,
        }
    }
}

/// Enrollment settings that passed validation.
#[derive(Debug, Clone)]
pub struct ValidEnrollment {
    /// Issuing CA certificate and key, when enrollment is on.
    pub issuing: Option<(PathBuf, PathBuf)>,
    pub certificate_lifetime: std::time::Duration,
    pub enrolls_per_address_per_minute: u32,
    pub revocation_check: std::time::Duration,
}

impl EnrollmentConfig {
    pub(crate) fn validate(self) -> Result<ValidEnrollment, ConfigError> {
        let issuing = match (self.issuing_cert, self.issuing_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::invalid(
                    "enrollment.issuing_cert",
                    "set both issuing_cert and issuing_key, or neither",
                ));
            }
        };
        let lifetime = humantime::parse_duration(&self.certificate_lifetime).map_err(|e| {
            ConfigError::invalid(
                "enrollment.certificate_lifetime",
                format!(
                    "{:?} is not a duration like \"30d\" ({e})",
                    self.certificate_lifetime
                ),
            )
        })?;
        let (min, max) = (
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(825 * 86_400),
        );
        if !(min..=max).contains(&lifetime) {
            return Err(ConfigError::invalid(
                "enrollment.certificate_lifetime",
                format!(
                    "{:?} is outside 1 minute ..= 825 days",
                    self.certificate_lifetime
                ),
            ));
        }
        if !(1..=10_000).contains(&self.enrolls_per_address_per_minute) {
            return Err(ConfigError::invalid(
                "enrollment.enrolls_per_address_per_minute",
                format!(
                    "{} is outside 1..=10000",
                    self.enrolls_per_address_per_minute
                ),
            ));
        }
        if !(1..=60).contains(&self.revocation_check_seconds) {
            return Err(ConfigError::invalid(
                "enrollment.revocation_check_seconds",
                format!("{} is outside 1..=60", self.revocation_check_seconds),
            ));
        }
        Ok(ValidEnrollment {
            issuing,
            certificate_lifetime: lifetime,
            enrolls_per_address_per_minute: self.enrolls_per_address_per_minute,
            revocation_check: std::time::Duration::from_secs(self.revocation_check_seconds),
        })
    }
}

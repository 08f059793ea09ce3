//! The console's configuration file (TOML): where it listens, how staff
//! sign in (campus OIDC, an optional local break-glass admin, API tokens
//! for automation), and where ClickHouse is. [`ConsoleConfig::validate`]
//! checks every field without I/O and returns a [`ValidConfig`];
//! [`ValidConfig::read_files`] then reads and checks every file it names
//! (secrets, CA, certificate and key) into a [`ReadyConfig`]. Both
//! `check-config` and `serve` go through both steps.
//!
//! It must not connect anywhere: reaching ClickHouse and the IdP is
//! `app`'s job.

use doorwatch_process::secret::Secret;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use doorwatch_process::config::ConfigError;
use doorwatch_process::config::{load_toml, read_secret};
use doorwatch_store::{ClickHouseConfig, PasswordFileError, StoreConfig};
use serde::Deserialize;

use crate::auth::Role;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address and port to listen on, e.g. "0.0.0.0:8443".
    pub listen: SocketAddr,
    /// The address staff type in their browser, e.g.
    /// "https://doorwatch.campus.example". The OIDC redirect URI is this
    /// plus "/auth/callback".
    pub public_url: String,
    /// Serve HTTPS with this certificate chain and key (PEM). Without it
    /// the console speaks plain HTTP and must sit behind a TLS proxy, or
    /// listen on loopback only.
    pub tls: Option<TlsConfig>,
    pub clickhouse: ClickHouseConfig,
    /// Sign-in with the campus identity provider.
    pub oidc: Option<OidcConfig>,
    /// A local admin account for first setup and break-glass; off unless
    /// configured.
    pub local_admin: Option<LocalAdminConfig>,
    /// Bearer tokens for scripts using `/api/v1`.
    #[serde(default)]
    pub api_tokens: Vec<ApiTokenConfig>,
    /// Minutes a session lasts without activity.
    #[serde(default = "default_idle_minutes")]
    pub session_idle_minutes: u64,
    /// Hours a session lasts at most, however active.
    #[serde(default = "default_max_hours")]
    pub session_max_hours: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The IdP's issuer URL; its discovery document must be at
    /// ISSUER/.well-known/openid-configuration.
    pub issuer: String,
    pub client_id: String,
    /// File holding the client secret (first line), kept out of this file.
    pub client_secret_file: PathBuf,
    /// Scopes asked for besides "openid".
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID-token claim listing the user's groups or roles, e.g.
    /// "groups". A string or a list of strings.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Which claim values grant which role. A user gets the highest role
    /// any of their values grants; a user with none cannot sign in.
    pub roles: RoleMapping,
    /// Extra CA certificates (PEM) to trust for the IdP, for campus CAs.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    #[serde(default)]
    pub admin: Vec<String>,
    #[serde(default)]
    pub analyst: Vec<String>,
    #[serde(default)]
    pub viewer: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalAdminConfig {
    pub username: String,
    /// An argon2 PHC string, made with `doorwatch-console hash-password`.
    pub password_hash: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// Who the token is for; shows in the audit log as "token:NAME".
    pub name: String,
    /// "viewer", "analyst" or "admin".
    pub role: String,
    /// Hex SHA-256 of the token, made with `doorwatch-console api-token`.
    pub sha256: String,
}

fn default_idle_minutes() -> u64 {
    30
}

fn default_max_hours() -> u64 {
    12
}

fn default_scopes() -> Vec<String> {
    vec!["profile".to_owned(), "email".to_owned()]
}

fn default_role_claim() -> String {
    "groups".to_owned()
}

/// A validated API token.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

/// Role mapping from claim values.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    pub admin: BTreeSet<String>,
    pub analyst: BTreeSet<String>,
    pub viewer: BTreeSet<String>,
}

impl Roles {
    /// The highest role any of `values` grants.
    pub fn of<'a>(&self, values: impl IntoIterator<Item = &'a str>) -> Option<Role> {
        values
            .into_iter()
            .filter_map(|v| {
                if self.admin.contains(v) {
                    Some(Role::Admin)
                } else if self.analyst.contains(v) {
                    Some(Role::Analyst)
                } else if self.viewer.contains(v) {
                    Some(Role::Viewer)
                } else {
                    None
                }
            })
            .max()
    }
}

/// OIDC settings that passed validation.
#[derive(Debug, Clone)]
pub struct ValidOidc {
    pub issuer: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    pub scopes: Vec<String>,
    pub role_claim: String,
    pub roles: Roles,
    pub ca_file: Option<PathBuf>,
}

/// A configuration that passed validation.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub public_url: String,
    /// `public_url`'s origin (`scheme://host[:port]`), as browsers send it
    /// in `Origin`.
    pub public_origin: String,
    /// The public URL is https: cookies are marked Secure.
    pub https: bool,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub clickhouse: ClickHouseConfig,
    pub oidc: Option<ValidOidc>,
    /// The break-glass admin: name and argon2 hash.
    pub local_admin: Option<(String, Secret)>,
    pub api_tokens: Vec<ApiToken>,
    pub session_idle_secs: u64,
    pub session_max_secs: u64,
}

/// A URL's origin (`scheme://host[:port]`, the host lower-cased and a
/// default port left out), as browsers send it in `Origin`; `None` for
/// text that is not a URL with a host.
pub fn origin_of(url: &str) -> Option<String> {
    let origin = url::Url::parse(url).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// An IdP must be https://, or http:// on this machine's loopback
/// (127.0.0.0/8, ::1, localhost), where nothing crosses the network. The
/// host is parsed, never prefix-matched: `http://127.attacker.example` is
/// a name on the internet.
fn issuer_is_allowed(issuer: &str) -> bool {
    let Ok(url) = url::Url::parse(issuer) else {
        return false;
    };
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Domain(name))) => name.eq_ignore_ascii_case("localhost"),
        _ => false,
    }
}

impl ConsoleConfig {
    /// Reads and parses `path`. Parse errors name the line and field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_toml(path)
    }

    /// Checks every field; pure.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let public_url = self.public_url.trim_end_matches('/').to_owned();
        let https = if public_url.starts_with("https://") {
            true
        } else if public_url.starts_with("http://") {
            false
        } else {
            return Err(ConfigError::invalid(
                "public_url",
                "must start with https:// (or http:// behind a TLS proxy or on loopback)",
            ));
        };
        let public_origin = origin_of(&public_url).ok_or_else(|| {
            ConfigError::invalid(
                "public_url",
                "is not a URL with a host (https://console.example.edu)",
            )
        })?;
        if !https && self.tls.is_some() {
            return Err(ConfigError::invalid(
                "public_url",
                "is http:// but [tls] is set",
            ));
        }
        if !https && !self.listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "public_url",
                "must be https:// when listening beyond loopback: sign-in cookies and tokens \
                 must never cross the network in clear",
            ));
        }
        if self.oidc.is_none() && self.local_admin.is_none() {
            return Err(ConfigError::invalid(
                "oidc",
                "nobody could sign in: configure [oidc], or [local_admin] for first setup",
            ));
        }
        let oidc = match self.oidc {
            Some(o) => {
                if !issuer_is_allowed(&o.issuer) {
                    return Err(ConfigError::invalid(
                        "oidc.issuer",
                        "must be https:// (http:// only for an IdP on loopback)",
                    ));
                }
                if o.client_id.trim().is_empty() {
                    return Err(ConfigError::invalid("oidc.client_id", "is empty"));
                }
                if o.role_claim.trim().is_empty() {
                    return Err(ConfigError::invalid("oidc.role_claim", "is empty"));
                }
                let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
                let roles = Roles {
                    admin: set(o.roles.admin),
                    analyst: set(o.roles.analyst),
                    viewer: set(o.roles.viewer),
                };
                if roles.admin.is_empty() && roles.analyst.is_empty() && roles.viewer.is_empty() {
                    return Err(ConfigError::invalid(
                        "oidc.roles",
                        "maps no claim value to a role: nobody could sign in",
                    ));
                }
                Some(ValidOidc {
                    issuer: o.issuer.trim_end_matches('/').to_owned(),
                    client_id: o.client_id,
                    client_secret_file: o.client_secret_file,
                    scopes: o.scopes,
                    role_claim: o.role_claim,
                    roles,
                    ca_file: o.ca_file,
                })
            }
            None => None,
        };
        let local_admin = match self.local_admin {
            Some(l) => {
                if l.username.trim().is_empty() {
                    return Err(ConfigError::invalid("local_admin.username", "is empty"));
                }
                if argon2::PasswordHash::new(&l.password_hash).is_err() {
                    return Err(ConfigError::invalid(
                        "local_admin.password_hash",
                        "is not an argon2 PHC string (make one with `doorwatch-console hash-password`)",
                    ));
                }
                Some((l.username, l.password_hash.into()))
            }
            None => None,
        };
        let mut api_tokens = Vec::new();
        for (i, t) in self.api_tokens.into_iter().enumerate() {
            let field = format!("api_tokens[{i}]");
            let role = Role::parse(&t.role).ok_or_else(|| {
                ConfigError::invalid(&field, "role must be viewer, analyst or admin")
            })?;
            let sha256 = decode_hex32(&t.sha256)
                .ok_or_else(|| ConfigError::invalid(&field, "sha256 must be 64 hex digits"))?;
            if t.name.trim().is_empty() {
                return Err(ConfigError::invalid(&field, "name is empty"));
            }
            api_tokens.push(ApiToken {
                name: t.name,
                role,
                sha256,
            });
        }
        if self.session_idle_minutes == 0 || self.session_max_hours == 0 {
            return Err(ConfigError::invalid(
                "session_idle_minutes",
                "sessions must last above zero",
            ));
        }
        // Unchecked, a huge value wrapped to a short session in a release
        // build (and panicked in a debug one).
        self.clickhouse
            .validate()
            .map_err(|e| ConfigError::invalid(e.field, e.problem))?;
        let session_idle_secs = self.session_idle_minutes.checked_mul(60).ok_or_else(|| {
            ConfigError::invalid("session_idle_minutes", "is too long to count in seconds")
        })?;
        let session_max_secs = self.session_max_hours.checked_mul(3600).ok_or_else(|| {
            ConfigError::invalid("session_max_hours", "is too long to count in seconds")
        })?;
        Ok(ValidConfig {
            listen: self.listen,
            public_url,
            public_origin,
            https,
            tls: self.tls.map(|t| (t.cert, t.key)),
            clickhouse: self.clickhouse,
            oidc,
            local_admin,
            api_tokens,
            session_idle_secs,
            session_max_secs,
        })
    }
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A file the configuration names cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A secret or CA file, naming its field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("clickhouse.password_file")]
    ClickHousePassword(#[source] PasswordFileError),
    /// The `[tls]` certificate chain or key.
    #[error(transparent)]
    Tls(#[from] doorwatch_tls::TlsError),
}

/// What the OIDC client needs from the files `[oidc]` names.
#[derive(Clone)]
pub struct OidcFiles {
    /// The first line of `client_secret_file`.
    pub client_secret: String,
    /// The certificates of `ca_file`, trusted besides the system's.
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for OidcFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcFiles")
            .field("client_secret", &"<redacted>")
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

/// A validated configuration with every file it names read and checked:
/// what `check-config` vouches for and what `serve` starts from.
pub struct ReadyConfig {
    pub config: ValidConfig,
    /// Present exactly when `config.oidc` is.
    pub oidc: Option<OidcFiles>,
    /// ClickHouse, with the password read.
    pub store: StoreConfig,
    /// Present exactly when `config.tls` is.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ReadyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyConfig")
            .field("config", &self.config)
            .field("oidc", &self.oidc)
            .field("store", &self.store.url)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl ValidConfig {
    /// Reads and checks every file the configuration names: the OIDC
    /// client secret and extra CA, the ClickHouse password, the HTTPS
    /// certificate and key. `check-config` and `serve` both go through
    /// here, so they cannot disagree.
    pub fn read_files(self) -> Result<ReadyConfig, FileError> {
        let oidc = match &self.oidc {
            Some(o) => Some(OidcFiles {
                client_secret: read_secret("oidc.client_secret_file", &o.client_secret_file)?,
                extra_roots: match &o.ca_file {
                    Some(path) => read_roots(path)?,
                    None => Vec::new(),
                },
            }),
            None => None,
        };
        let store = self
            .clickhouse
            .store_config()
            .map_err(FileError::ClickHousePassword)?;
        let tls = match &self.tls {
            Some((cert, key)) => Some(doorwatch_tls::https_server_config(cert, key)?),
            None => None,
        };
        Ok(ReadyConfig {
            config: self,
            oidc,
            store,
            tls,
        })
    }
}

/// The certificates (PEM) of `oidc.ca_file`.
fn read_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| {
        ConfigError::invalid(
            "oidc.ca_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| ConfigError::invalid("oidc.ca_file", format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080/"

[clickhouse]
url = "http://127.0.0.1:8123"

[oidc]
issuer = "https://idp.campus.example"
client_id = "doorwatch"
client_secret_file = "/etc/doorwatch/oidc-secret"
roles = { admin = ["sec-admins"], analyst = ["sec-team"], viewer = ["it-staff"] }
"#;

    fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
        toml::from_str::<ConsoleConfig>(text)
            .map_err(|e| ConfigError::Parse {
                path: "t".into(),
                source: Box::new(e),
            })?
            .validate()
    }

    #[test]
    fn the_shipped_example_parses_and_validates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/console.toml");
        let text = std::fs::read_to_string(path).expect("deploy/console.toml");
        let config = parse(&text).expect("deploy/console.toml is valid");
        assert_eq!(config.session_idle_secs, 30 * 60);
        assert_eq!(config.session_max_secs, 12 * 3600);
    }

    #[test]
    fn a_good_config_validates_and_maps_roles() {
        let config = parse(GOOD).expect("valid");
        assert_eq!(config.public_url, "http://127.0.0.1:8080");
        let oidc = config.oidc.expect("oidc");
        assert_eq!(oidc.role_claim, "groups");
        assert_eq!(oidc.roles.of(["it-staff", "sec-team"]), Some(Role::Analyst));
        assert_eq!(oidc.roles.of(["students"]), None);
    }

    #[test]
    fn session_lengths_too_long_to_count_are_refused_not_wrapped() {
        // Found by the fuzz target `config` (fuzz/regressions/config/).
        for (field, value) in [
            ("session_max_hours", u64::MAX / 3600 + 1),
            ("session_idle_minutes", u64::MAX / 60 + 1),
        ] {
            let text = GOOD.replace("[clickhouse]", &format!("{field} = {value}\n[clickhouse]"));
            let err = parse(&text).expect_err("too long");
            assert!(err.to_string().contains(field), "{err}");
        }
        let text = GOOD.replace("[clickhouse]", "session_max_hours = 8760\n[clickhouse]");
        assert_eq!(parse(&text).expect("a year").session_max_secs, 8760 * 3600);
    }

    #[test]
    fn an_idp_on_loopback_may_use_http() {
        for issuer in [
            "http://127.0.0.1:9000",
            "http://127.1.2.3/realms/campus",
            "http://localhost:9000",
            "http://[::1]:9000",
        ] {
            let text = GOOD.replace("https://idp.campus.example", issuer);
            parse(&text).unwrap_or_else(|e| panic!("{issuer}: {e}"));
        }
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (from, to, field) in [
            ("http://127.0.0.1:8080/", "ftp://x", "public_url"),
            ("127.0.0.1:8080", "0.0.0.0:8080", "public_url"),
            (
                "https://idp.campus.example",
                "http://idp.campus.example",
                "oidc.issuer",
            ),
            // A name that merely starts like a loopback address.
            (
                "https://idp.campus.example",
                "http://127.attacker.example",
                "oidc.issuer",
            ),
            ("http://127.0.0.1:8080/", "https://", "public_url"),
            (
                "admin = [\"sec-admins\"], analyst = [\"sec-team\"], viewer = [\"it-staff\"]",
                "",
                "oidc.roles",
            ),
        ] {
            let text = GOOD.replace(from, to);
            let err = parse(&text).expect_err(&text).to_string();
            assert!(err.contains(field), "{err}");
        }
        let err = parse(&GOOD.replace("[oidc]", "[oidc]\nissuerr = 1")).expect_err("typo");
        assert!(err.to_string().contains("issuerr"), "{err}");
        let local = format!(
            "{GOOD}\n[local_admin]\nusername = \"breakglass\"\npassword_hash = \"not-a-hash\"\n"
        );
        assert!(
            parse(&local)
                .expect_err("bad hash")
                .to_string()
                .contains("password_hash")
        );
        let token =
            format!("{GOOD}\n[[api_tokens]]\nname = \"siem\"\nrole = \"root\"\nsha256 = \"00\"\n");
        assert!(
            parse(&token)
                .expect_err("bad role")
                .to_string()
                .contains("api_tokens[0]")
        );
    }

    #[test]
    fn every_named_file_is_read_and_a_bad_one_names_its_field() {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = dir.path().join("secret");
        let with = |secret: &std::path::Path, ca: Option<&std::path::Path>| {
            let mut text =
                GOOD.replace("/etc/doorwatch/oidc-secret", &secret.display().to_string());
            if let Some(ca) = ca {
                text = text.replace("[oidc]", &format!("[oidc]\nca_file = \"{}\"", ca.display()));
            }
            parse(&text).expect("valid").read_files()
        };
        let err = with(&secret, None).expect_err("no secret file").to_string();
        assert!(err.contains("oidc.client_secret_file"), "{err}");
        std::fs::write(&secret, "s3cret\n").expect("write secret");
        let ready = with(&secret, None).expect("ready");
        let files = ready.oidc.expect("oidc files");
        assert_eq!(files.client_secret, "s3cret");
        assert!(files.extra_roots.is_empty());
        let err = with(&secret, Some(&dir.path().join("no-ca.pem")))
            .expect_err("missing CA")
            .to_string();
        assert!(err.contains("oidc.ca_file"), "{err}");
    }
}

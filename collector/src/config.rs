//! `collector.toml`: what the collector does. How the process runs (log
//! format, which file to read) is set by CLI flags instead.
//!
//! [`CollectorConfig::load`] reads and parses; [`CollectorConfig::validate`]
//! is pure and returns a [`ValidConfig`] or an error naming the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::campaigns::alert::config::AlertsConfig;
pub use crate::campaigns::correlate::config::CorrelationConfig;
pub use crate::campaigns::feed::{FeedConfig, ValidFeed};
pub use crate::enroll::config::{EnrollmentConfig, ValidEnrollment};
pub use crate::ingest::config::IngestConfig;
pub use crate::policy::PolicyConfig;
pub use crate::retention::RetentionConfig;
pub use doorwatch_process::config::ConfigError;
pub use doorwatch_store::ClickHouseConfig;

/// The whole configuration file. Unknown fields are errors, so a typo is
/// caught at start instead of being silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Where agents connect.
    pub listen: ListenConfig,
    /// Certificates for mutual TLS.
    pub tls: TlsConfig,
    /// The ClickHouse server events are written to.
    pub clickhouse: ClickHouseConfig,
    /// Detection settings pushed to every agent.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Batching and backpressure.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Enrollment of new agents and renewal of their certificates.
    #[serde(default)]
    pub enrollment: EnrollmentConfig,
    /// Campus-wide campaigns.
    #[serde(default)]
    pub correlation: CorrelationConfig,
    /// Where alerts (campaigns, revoked PCs' returns) go.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The blocklist feed for firewalls.
    #[serde(default)]
    pub feed: FeedConfig,
    /// How long data is kept, per family of tables.
    #[serde(default)]
    pub retention: RetentionConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address and port for the agent stream, e.g. "0.0.0.0:4443".
    pub address: String,
    /// Agent connections open at once (each PC holds one). More are
    /// closed at once until some end. Default 50,000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Agent connections open at once from one address (one IPv6 /64):
    /// the PCs of a lab behind NAT share one. Default 1,024.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
}

fn default_max_connections() -> usize {
    crate::trust::tls::AgentListenerLimits::default()
        .connections
        .max_connections
}

fn default_max_connections_per_address() -> usize {
    crate::trust::tls::AgentListenerLimits::default()
        .connections
        .max_per_address
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of the CA(s) that sign agent certificates. Agents without
    /// a certificate chaining to one of these are refused in the handshake.
    pub client_ca: PathBuf,
    /// PEM certificate chain the collector presents to agents.
    pub server_cert: PathBuf,
    /// PEM private key for `server_cert` (keep it mode 0600).
    pub server_key: PathBuf,
}

/// A configuration that passed validation.
#[derive(Debug)]
pub struct ValidConfig {
    pub listen: SocketAddr,
    /// The agent listener's connection caps and deadlines.
    pub listen_limits: crate::trust::tls::AgentListenerLimits,
    pub client_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub clickhouse: ClickHouseConfig,
    pub policy: PolicyConfig,
    pub writer: crate::ingest::writer::WriterLimits,
    pub agent_limits: crate::ingest::AgentLimits,
    pub enrollment: ValidEnrollment,
    /// `None` when this collector does not correlate.
    pub correlation: Option<crate::campaigns::correlate::Settings>,
    pub alerts: crate::campaigns::alert::Settings,
    pub feed: Option<ValidFeed>,
    pub retention: crate::retention::Settings,
    /// The campus's networks and the correlation allowlist, also applied
    /// by the feed.
    pub campus_networks: Vec<doorwatch_store::ip::Cidr>,
    pub allowlist: Vec<doorwatch_store::ip::Cidr>,
}

impl CollectorConfig {
    /// Reads and parses `path`. Parse errors name the line and field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        doorwatch_process::config::load_toml(path)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let listen = self.listen.address.parse().map_err(|e| {
            ConfigError::invalid(
                "listen.address",
                format!("{:?} is not an IP:port ({e})", self.listen.address),
            )
        })?;
        let range = doorwatch_process::config::in_range;
        range(
            "listen.max_connections",
            self.listen.max_connections as u64,
            1,
            10_000_000,
        )?;
        range(
            "listen.max_connections_per_address",
            self.listen.max_connections_per_address as u64,
            1,
            self.listen.max_connections as u64,
        )?;
        let mut listen_limits = crate::trust::tls::AgentListenerLimits::default();
        listen_limits.connections.max_connections = self.listen.max_connections;
        listen_limits.connections.max_per_address = self.listen.max_connections_per_address;
        self.clickhouse
            .validate()
            .map_err(|e| ConfigError::invalid(e.field, e.problem))?;
        let (writer, agent_limits) = self.ingest.validate()?;
        let enrollment = self.enrollment.validate()?;
        let (correlation, campus_networks, allowlist) = self.correlation.validate()?;
        let alerts = self.alerts.validate()?;
        let feed = self.feed.validate()?;
        let retention = self.retention.validate()?;
        Ok(ValidConfig {
            listen,
            listen_limits,
            client_ca: self.tls.client_ca,
            server_cert: self.tls.server_cert,
            server_key: self.tls.server_key,
            clickhouse: self.clickhouse,
            policy: self.policy,
            writer,
            agent_limits,
            enrollment,
            correlation,
            alerts,
            feed,
            retention,
            campus_networks,
            allowlist,
        })
    }
}

/// What the config names on disk besides the TLS files, read once: what
/// `check-config` checks and what `serve` uses, so the two cannot
/// disagree. `Debug` shows no secret.
pub struct ConfigFiles {
    /// How to reach ClickHouse, its password read from `password_file`.
    pub store: doorwatch_store::StoreConfig,
    /// The feed's token, when the feed is on.
    pub feed_token: Option<String>,
}

impl std::fmt::Debug for ConfigFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFiles")
            .field("store", &self.store.url)
            .field(
                "feed_token",
                &self.feed_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The shortest feed token accepted.
const MIN_FEED_TOKEN: usize = 16;

impl ValidConfig {
    /// Reads the files named in the config (the ClickHouse password, the
    /// feed token); an error names the field.
    pub fn read_files(&self) -> Result<ConfigFiles, ConfigError> {
        let store = self
            .clickhouse
            .store_config()
            .map_err(|e| ConfigError::invalid("clickhouse.password_file", e.to_string()))?;
        let feed_token = match &self.feed {
            Some(feed) => {
                let token =
                    doorwatch_process::config::read_secret("feed.token_file", &feed.token_file)?;
                if token.len() < MIN_FEED_TOKEN {
                    return Err(ConfigError::invalid(
                        "feed.token_file",
                        format!(
                            "{}: the token must be at least {MIN_FEED_TOKEN} characters",
                            feed.token_file.display()
                        ),
                    ));
                }
                Some(token)
            }
            None => None,
        };
        Ok(ConfigFiles { store, feed_token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
        let config: CollectorConfig =
            toml::from_str(text).map_err(|source| ConfigError::Parse {
                path: "test.toml".into(),
                source: Box::new(source),
            })?;
        config.validate()
    }

    const GOOD: &str = r#"
        [listen]
        address = "127.0.0.1:4443"
        [tls]
        client_ca = "ca.pem"
        server_cert = "collector.pem"
        server_key = "collector.key"
        [clickhouse]
        url = "http://127.0.0.1:8123"
    "#;

    #[test]
    fn example_config_is_valid() {
        let config = parse(GOOD).expect("valid");
        assert_eq!(config.clickhouse.database, "doorwatch");
    }

    #[test]
    fn bad_listen_address_names_the_field() {
        let text = GOOD.replace("127.0.0.1:4443", "localhost");
        let err = parse(&text).expect_err("invalid").to_string();
        assert!(err.contains("listen.address"), "{err}");
    }

    #[test]
    fn connection_caps_are_read_and_checked() {
        let config = parse(GOOD).expect("valid");
        assert_eq!(config.listen_limits.connections.max_connections, 50_000);
        assert_eq!(config.listen_limits.connections.max_per_address, 1024);
        let text = GOOD.replace(
            "127.0.0.1:4443\"",
            "127.0.0.1:4443\"\nmax_connections = 100\nmax_connections_per_address = 10",
        );
        let config = parse(&text).expect("valid");
        assert_eq!(config.listen_limits.connections.max_connections, 100);
        assert_eq!(config.listen_limits.connections.max_per_address, 10);
        let text = GOOD.replace(
            "127.0.0.1:4443\"",
            "127.0.0.1:4443\"\nmax_connections = 100\nmax_connections_per_address = 101",
        );
        let err = parse(&text).expect_err("invalid").to_string();
        assert!(err.contains("listen.max_connections_per_address"), "{err}");
    }

    #[test]
    fn unknown_field_is_named() {
        let text = GOOD.replace("[clickhouse]", "[clickhouse]\nurll = \"x\"");
        let err = parse(&text).expect_err("invalid").to_string();
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn database_name_cannot_carry_sql() {
        let text = format!("{GOOD}database = \"x; DROP TABLE y\"\n");
        let err = parse(&text).expect_err("invalid").to_string();
        assert!(err.contains("clickhouse.database"), "{err}");
    }

    #[test]
    fn ingest_limits_default_and_are_checked() {
        let config = parse(GOOD).expect("valid");
        assert_eq!(config.agent_limits, crate::ingest::AgentLimits::default());
        assert_eq!(
            config.writer.insert,
            doorwatch_store::InsertLimits::default()
        );
        let text = format!("{GOOD}[ingest]\nagent_burst_events = 10\n");
        let err = parse(&text).expect_err("burst below a batch").to_string();
        assert!(err.contains("ingest.agent_burst_events"), "{err}");
    }

    #[test]
    fn campaign_alert_and_feed_settings_are_checked() {
        let config = parse(GOOD).expect("valid");
        assert!(config.correlation.is_some(), "correlation is on by default");
        assert!(config.alerts.channels.is_empty() && config.feed.is_none());
        for (table, field) in [
            (
                "[correlation]\ncampus_networks = [\"10.0.0.0/33\"]\n",
                "correlation.campus_networks",
            ),
            (
                "[correlation]\nallowlist = [\"scanner\"]\n",
                "correlation.allowlist",
            ),
            (
                "[correlation]\nclose_minutes = 1\nquiet_minutes = 5\n",
                "correlation.close_minutes",
            ),
            ("[alerts]\nsyslog = \"siem:514\"\n", "alerts.syslog"),
            (
                "[alerts]\nwebhook_url = \"ftp://x/\"\n",
                "alerts.webhook_url",
            ),
            ("[alerts]\nemail_server = \"smtp:587\"\n", "alerts.email_to"),
            (
                "[alerts]\nemail_server = \"smtp:587\"\nemail_to = [\"a <b>\"]\n",
                "alerts.email_to",
            ),
            ("[feed]\nlisten = \"0.0.0.0:8443\"\n", "feed.token_file"),
            (
                "[feed]\nlisten = \"nowhere\"\ntoken_file = \"t\"\n",
                "feed.listen",
            ),
            (
                "[feed]\nlisten = \"127.0.0.1:8443\"\ntoken_file = \"t\"\nnever_list = [\"resolver\"]\n",
                "feed.never_list",
            ),
            (
                "[feed]\nlisten = \"127.0.0.1:8443\"\ntoken_file = \"t\"\nevidence = \"syn\"\n",
                "feed.evidence",
            ),
        ] {
            let err = parse(&format!("{GOOD}{table}"))
                .expect_err(table)
                .to_string();
            assert!(err.contains(field), "{table}: {err}");
        }
        let text = format!(
            "{GOOD}[alerts]\nsyslog = \"udp://127.0.0.1:514\"\nwebhook_url = \"http://127.0.0.1:9/hook\"\n"
        );
        let names: Vec<&str> = parse(&text)
            .expect("valid")
            .alerts
            .channels
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(names, ["webhook", "syslog"]);
    }

    #[test]
    fn shipped_example_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/collector.toml");
        CollectorConfig::load(Path::new(path))
            .expect("deploy/collector.toml parses")
            .validate()
            .expect("deploy/collector.toml is valid");
    }

    #[test]
    fn files_named_in_the_config_are_read_by_check_config_and_serve_alike() {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = dir.path().join("feed.token");
        let password = dir.path().join("ch.password");
        let with = |extra: &str| parse(&format!("{GOOD}\n{extra}")).expect("valid");
        let config = with(&format!(
            "password_file = \"{}\"\n[feed]\nlisten = \"127.0.0.1:8443\"\ntoken_file = \"{}\"",
            password.display(),
            token.display()
        ));
        let missing = config.read_files().expect_err("no password file yet");
        assert!(
            missing.to_string().contains("clickhouse.password_file"),
            "{missing}"
        );
        std::fs::write(&password, "secret\n").expect("write password");
        let missing = config.read_files().expect_err("no token file yet");
        assert!(missing.to_string().contains("feed.token_file"), "{missing}");
        std::fs::write(&token, "short\n").expect("write token");
        let short = config.read_files().expect_err("token too short");
        assert!(short.to_string().contains("at least 16"), "{short}");
        std::fs::write(&token, "0123456789abcdef0123\n").expect("write token");
        let files = config.read_files().expect("all files there");
        assert_eq!(files.store.password.as_deref(), Some("secret"));
        assert_eq!(files.feed_token.as_deref(), Some("0123456789abcdef0123"));
        assert!(
            !format!("{files:?}").contains("secret"),
            "Debug shows no secret"
        );
    }
}

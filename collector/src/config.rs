//! `collector.toml`: what the collector does. How the process runs (log
//! format, which file to read) is set by CLI flags instead.
//!
//! [`CollectorConfig::load`] reads and parses; [`CollectorConfig::validate`]
//! is pure and returns a [`ValidConfig`] or an error naming the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// Where campaign alerts go.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The blocklist feed for firewalls.
    #[serde(default)]
    pub feed: FeedConfig,
    /// How long data is kept, per family of tables.
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// How long each family of tables keeps its rows. Old data goes by whole
/// days (whole months for the audit log), dropped by one collector at a
/// time. 0 keeps a family forever.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Take part in applying retention (one collector at a time does it).
    pub enabled: bool,
    /// Minutes between two retention passes.
    pub check_minutes: u64,
    /// Days of scan, knock and flood events.
    pub events_days: u32,
    /// Days of flow minutes and outbound anomalies.
    pub outbound_days: u32,
    /// Days of agent heartbeats.
    pub heartbeats_days: u32,
    /// Days after its last activity that a campaign is kept, with its
    /// members, alerts and triage.
    pub campaigns_days: u32,
    /// Days of the console's audit log (kept longest by default).
    pub audit_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let d = crate::retention::Settings::default();
        Self {
            enabled: d.enabled,
            check_minutes: d.interval.as_secs() / 60,
            events_days: d.events_days,
            outbound_days: d.outbound_days,
            heartbeats_days: d.heartbeats_days,
            campaigns_days: d.campaigns_days,
            audit_days: d.audit_days,
        }
    }
}

impl RetentionConfig {
    fn validate(self) -> Result<crate::retention::Settings, ConfigError> {
        let range = |field: &'static str, value: u64, min: u64, max: u64| {
            if (value == 0 && field.ends_with("_days")) || (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    field,
                    problem: format!("{value} is outside {min}..={max} (0 keeps forever)"),
                })
            }
        };
        range("retention.check_minutes", self.check_minutes, 1, 1440)?;
        // A day at least: partitions are whole days. 100 years at most.
        range("retention.events_days", self.events_days.into(), 1, 36_500)?;
        range(
            "retention.outbound_days",
            self.outbound_days.into(),
            1,
            36_500,
        )?;
        range(
            "retention.heartbeats_days",
            self.heartbeats_days.into(),
            1,
            36_500,
        )?;
        range(
            "retention.campaigns_days",
            self.campaigns_days.into(),
            1,
            36_500,
        )?;
        range("retention.audit_days", self.audit_days.into(), 1, 36_500)?;
        Ok(crate::retention::Settings {
            enabled: self.enabled,
            interval: std::time::Duration::from_secs(self.check_minutes * 60),
            events_days: self.events_days,
            outbound_days: self.outbound_days,
            heartbeats_days: self.heartbeats_days,
            campaigns_days: self.campaigns_days,
            audit_days: self.audit_days,
        })
    }
}

/// The blocklist feed. Off unless `listen` is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// Address and port of the feed, e.g. "0.0.0.0:8443".
    pub listen: Option<String>,
    /// File whose first line is the token every request must carry
    /// (Bearer, or the password of HTTP Basic). Keep it mode 0600.
    pub token_file: Option<PathBuf>,
    /// Hours after its last activity that a source stays listed.
    pub entry_hours: u64,
    /// Serve over TLS with the collector's certificate ([tls]).
    pub tls: bool,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token_file: None,
            entry_hours: 24,
            tls: true,
        }
    }
}

/// Feed settings that passed validation (the token is read at start).
#[derive(Debug, Clone)]
pub struct ValidFeed {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
    pub entry_lifetime: std::time::Duration,
    pub tls: bool,
}

impl FeedConfig {
    fn validate(self) -> Result<Option<ValidFeed>, ConfigError> {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        let invalid =
            |field: &'static str, problem: String| ConfigError::Invalid { field, problem };
        let listen = listen
            .parse()
            .map_err(|e| invalid("feed.listen", format!("{listen:?} is not an IP:port ({e})")))?;
        let token_file = self.token_file.ok_or_else(|| {
            invalid(
                "feed.token_file",
                "is required when feed.listen is set".into(),
            )
        })?;
        if !(1..=24 * 365).contains(&self.entry_hours) {
            return Err(invalid(
                "feed.entry_hours",
                format!("{} is outside 1..=8760", self.entry_hours),
            ));
        }
        Ok(Some(ValidFeed {
            listen,
            token_file,
            entry_lifetime: std::time::Duration::from_secs(self.entry_hours * 3600),
            tls: self.tls,
        }))
    }
}

/// Alert channels. With none set, campaigns are stored but nobody is told.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// JSON webhook (http:// or https://), e.g. a Slack or Teams incoming
    /// webhook: its `text` field is the alert in plain words.
    pub webhook_url: Option<String>,
    /// CA bundle for an https webhook (default: the system's).
    pub webhook_ca_file: Option<PathBuf>,
    /// Syslog receiver, "udp://HOST:PORT" or "tcp://HOST:PORT" (RFC 5424,
    /// CEF message).
    pub syslog: Option<String>,
    /// SMTP relay for email alerts, "HOST:PORT" (usually 587). The relay
    /// must offer STARTTLS; nothing is sent in the clear.
    pub email_server: Option<String>,
    /// Name in the relay's certificate (default: the host of email_server).
    pub email_tls_name: Option<String>,
    /// CA bundle for the relay's certificate (default: the system's).
    pub email_ca_file: Option<PathBuf>,
    /// Sender address.
    pub email_from: String,
    /// Recipients.
    pub email_to: Vec<String>,
    /// Login for the relay (AUTH PLAIN over TLS), if it wants one.
    pub email_user: Option<String>,
    /// File whose first line is that login's password.
    pub email_password_file: Option<PathBuf>,
    /// Base URL of the console, for links in alerts.
    pub console_url: String,
    /// Alerts per channel per minute; more wait their turn.
    pub per_channel_per_minute: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_ca_file: None,
            syslog: None,
            email_server: None,
            email_tls_name: None,
            email_ca_file: None,
            email_from: "doorwatch@localhost".to_owned(),
            email_to: Vec::new(),
            email_user: None,
            email_password_file: None,
            console_url: "https://doorwatch.invalid".to_owned(),
            per_channel_per_minute: 30,
        }
    }
}

impl AlertsConfig {
    fn validate(self) -> Result<crate::campaigns::alert::Settings, ConfigError> {
        let invalid =
            |field: &'static str, problem: String| ConfigError::Invalid { field, problem };
        let mut channels = Vec::new();
        // TLS to a webhook or relay: the given bundle or the system's.
        let client_tls = |field: &'static str, bundle: &Option<PathBuf>, alpn: &[u8]| {
            let bundle = bundle
                .clone()
                .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
            let roots =
                doorwatch_tls::load_roots(&bundle).map_err(|e| invalid(field, e.to_string()))?;
            let mut config = rustls::ClientConfig::builder_with_provider(doorwatch_tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(field, e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            if !alpn.is_empty() {
                config.alpn_protocols = vec![alpn.to_vec()];
            }
            Ok::<_, ConfigError>(std::sync::Arc::new(config))
        };
        if let Some(url) = &self.webhook_url {
            let url: crate::campaigns::alert::WebhookUrl =
                url.parse().map_err(|e| invalid("alerts.webhook_url", e))?;
            let tls = if url.https {
                Some(client_tls(
                    "alerts.webhook_ca_file",
                    &self.webhook_ca_file,
                    b"http/1.1",
                )?)
            } else {
                None
            };
            channels.push(crate::campaigns::alert::Channel::Webhook { url, tls });
        }
        if let Some(server) = &self.email_server {
            let host = server
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                .ok_or_else(|| {
                    invalid(
                        "alerts.email_server",
                        format!("{server:?} is not HOST:PORT"),
                    )
                })?;
            if self.email_to.is_empty() {
                return Err(invalid(
                    "alerts.email_to",
                    "name at least one recipient".into(),
                ));
            }
            for address in self
                .email_to
                .iter()
                .chain(std::iter::once(&self.email_from))
            {
                if !address.contains('@') || address.contains(['<', '>', '\r', '\n', ' ']) {
                    return Err(invalid(
                        "alerts.email_to",
                        format!("{address:?} is not an email address"),
                    ));
                }
            }
            let login = match (&self.email_user, &self.email_password_file) {
                (Some(user), Some(file)) => {
                    let password = std::fs::read_to_string(file)
                        .map_err(|e| {
                            invalid(
                                "alerts.email_password_file",
                                format!("{}: {e}", file.display()),
                            )
                        })?
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    Some((user.clone(), password))
                }
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "alerts.email_user",
                        "set both email_user and email_password_file, or neither".into(),
                    ));
                }
            };
            channels.push(crate::campaigns::alert::Channel::Email(
                std::sync::Arc::new(crate::campaigns::alert::Email {
                    server: server.clone(),
                    tls_name: self
                        .email_tls_name
                        .clone()
                        .unwrap_or_else(|| host.to_owned()),
                    tls: client_tls("alerts.email_ca_file", &self.email_ca_file, b"")?,
                    from: self.email_from.clone(),
                    to: self.email_to.clone(),
                    login,
                }),
            ));
        }
        if let Some(target) = &self.syslog {
            let (tcp, address) = if let Some(a) = target.strip_prefix("tcp://") {
                (true, a)
            } else if let Some(a) = target.strip_prefix("udp://") {
                (false, a)
            } else {
                return Err(invalid(
                    "alerts.syslog",
                    format!("{target:?} must be udp://HOST:PORT or tcp://HOST:PORT"),
                ));
            };
            if !address.contains(':') {
                return Err(invalid("alerts.syslog", format!("{target:?} has no port")));
            }
            channels.push(crate::campaigns::alert::Channel::Syslog {
                address: address.to_owned(),
                tcp,
            });
        }
        if !(self.console_url.starts_with("http://") || self.console_url.starts_with("https://")) {
            return Err(invalid(
                "alerts.console_url",
                format!("{:?} must start with http:// or https://", self.console_url),
            ));
        }
        if !(1..=10_000).contains(&self.per_channel_per_minute) {
            return Err(invalid(
                "alerts.per_channel_per_minute",
                format!("{} is outside 1..=10000", self.per_channel_per_minute),
            ));
        }
        Ok(crate::campaigns::alert::Settings {
            channels,
            console_url: self.console_url,
            per_minute: self.per_channel_per_minute,
            interval: std::time::Duration::from_secs(1),
        })
    }
}

/// How scans seen by many PCs are grouped into campaigns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    /// Run the correlator in this collector. Several may run at once.
    pub enabled: bool,
    /// Seconds between correlation passes.
    pub interval_seconds: u64,
    /// Minutes of recent events each pass looks at.
    pub window_minutes: u64,
    /// Minutes without activity after which a campaign is quiet.
    pub quiet_minutes: u64,
    /// Minutes without activity after which a campaign is closed.
    pub close_minutes: u64,
    /// PCs one outside source (or /24, /64) must scan to be a sweep.
    pub sweep_min_pcs: u32,
    /// Outside sources that must probe one port for a distributed campaign.
    pub distributed_min_sources: u32,
    /// PCs they must probe it on.
    pub distributed_min_pcs: u32,
    /// A source counts towards a distributed campaign only if it probed at
    /// most this many ports of a PC.
    pub distributed_max_ports: u32,
    /// Campus PCs one campus address must scan for an internal campaign.
    pub internal_min_pcs: u32,
    /// PCs that must report the same outbound anomaly (kind and
    /// destination) for an outbound campaign.
    pub outbound_min_pcs: u32,
    /// The campus's own networks (CIDR): scans from them are internal.
    pub campus_networks: Vec<String>,
    /// Sources never made into campaigns (the campus's vulnerability
    /// scanners, monitoring), as CIDRs; their events are still stored.
    pub allowlist: Vec<String>,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        let d = crate::campaigns::correlate::Settings::default();
        Self {
            enabled: true,
            interval_seconds: d.interval.as_secs(),
            window_minutes: d.window.as_secs() / 60,
            quiet_minutes: d.quiet_after.as_secs() / 60,
            close_minutes: d.close_after.as_secs() / 60,
            sweep_min_pcs: d.sweep_min_pcs,
            distributed_min_sources: d.distributed_min_sources,
            distributed_min_pcs: d.distributed_min_pcs,
            distributed_max_ports: d.distributed_max_ports,
            internal_min_pcs: d.internal_min_pcs,
            outbound_min_pcs: d.outbound_min_pcs,
            campus_networks: Vec::new(),
            allowlist: Vec::new(),
        }
    }
}

impl CorrelationConfig {
    /// The correlator's settings (`None` when off), and the campus
    /// networks and allowlist, which the feed applies too.
    #[allow(clippy::type_complexity)]
    fn validate(
        self,
    ) -> Result<
        (
            Option<crate::campaigns::correlate::Settings>,
            Vec<doorwatch_store::ip::Cidr>,
            Vec<doorwatch_store::ip::Cidr>,
        ),
        ConfigError,
    > {
        let invalid =
            |field: &'static str, problem: String| ConfigError::Invalid { field, problem };
        let range = |field: &'static str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(invalid(field, format!("{value} is outside {min}..={max}")))
            }
        };
        range(
            "correlation.interval_seconds",
            self.interval_seconds,
            1,
            3600,
        )?;
        range("correlation.window_minutes", self.window_minutes, 1, 1440)?;
        range("correlation.quiet_minutes", self.quiet_minutes, 1, 1440)?;
        range(
            "correlation.close_minutes",
            self.close_minutes,
            self.quiet_minutes,
            10_080,
        )?;
        range(
            "correlation.sweep_min_pcs",
            self.sweep_min_pcs.into(),
            2,
            100_000,
        )?;
        range(
            "correlation.distributed_min_sources",
            self.distributed_min_sources.into(),
            2,
            100_000,
        )?;
        range(
            "correlation.distributed_min_pcs",
            self.distributed_min_pcs.into(),
            1,
            100_000,
        )?;
        range(
            "correlation.distributed_max_ports",
            self.distributed_max_ports.into(),
            1,
            65_535,
        )?;
        range(
            "correlation.internal_min_pcs",
            self.internal_min_pcs.into(),
            1,
            100_000,
        )?;
        range(
            "correlation.outbound_min_pcs",
            self.outbound_min_pcs.into(),
            1,
            100_000,
        )?;
        let cidrs = |field: &'static str, list: &[String]| {
            list.iter()
                .map(|text| {
                    text.parse()
                        .map_err(|e: doorwatch_store::ip::BadCidr| invalid(field, e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let campus = cidrs("correlation.campus_networks", &self.campus_networks)?;
        let allowlist = cidrs("correlation.allowlist", &self.allowlist)?;
        if !self.enabled {
            return Ok((None, campus, allowlist));
        }
        let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
        Ok((
            Some(crate::campaigns::correlate::Settings {
                interval: std::time::Duration::from_secs(self.interval_seconds),
                window: minutes(self.window_minutes),
                quiet_after: minutes(self.quiet_minutes),
                close_after: minutes(self.close_minutes),
                sweep_min_pcs: self.sweep_min_pcs,
                distributed_min_sources: self.distributed_min_sources,
                distributed_min_pcs: self.distributed_min_pcs,
                distributed_max_ports: self.distributed_max_ports,
                internal_min_pcs: self.internal_min_pcs,
                outbound_min_pcs: self.outbound_min_pcs,
                campus: campus.clone(),
                allowlist: allowlist.clone(),
            }),
            campus,
            allowlist,
        ))
    }
}

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
    fn validate(self) -> Result<ValidEnrollment, ConfigError> {
        let issuing = match (self.issuing_cert, self.issuing_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    field: "enrollment.issuing_cert",
                    problem: "set both issuing_cert and issuing_key, or neither".into(),
                });
            }
        };
        let lifetime = humantime::parse_duration(&self.certificate_lifetime).map_err(|e| {
            ConfigError::Invalid {
                field: "enrollment.certificate_lifetime",
                problem: format!(
                    "{:?} is not a duration like \"30d\" ({e})",
                    self.certificate_lifetime
                ),
            }
        })?;
        let (min, max) = (
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(825 * 86_400),
        );
        if !(min..=max).contains(&lifetime) {
            return Err(ConfigError::Invalid {
                field: "enrollment.certificate_lifetime",
                problem: format!(
                    "{:?} is outside 1 minute ..= 825 days",
                    self.certificate_lifetime
                ),
            });
        }
        if !(1..=10_000).contains(&self.enrolls_per_address_per_minute) {
            return Err(ConfigError::Invalid {
                field: "enrollment.enrolls_per_address_per_minute",
                problem: format!(
                    "{} is outside 1..=10000",
                    self.enrolls_per_address_per_minute
                ),
            });
        }
        if !(1..=60).contains(&self.revocation_check_seconds) {
            return Err(ConfigError::Invalid {
                field: "enrollment.revocation_check_seconds",
                problem: format!("{} is outside 1..=60", self.revocation_check_seconds),
            });
        }
        Ok(ValidEnrollment {
            issuing,
            certificate_lifetime: lifetime,
            enrolls_per_address_per_minute: self.enrolls_per_address_per_minute,
            revocation_check: std::time::Duration::from_secs(self.revocation_check_seconds),
        })
    }
}

/// How batches are written and how much load one agent, and all agents
/// together, may put on the collector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Rows (both event tables) after which a batched INSERT is ended.
    pub insert_max_rows: u64,
    /// Uncompressed MiB after which a batched INSERT is ended (per table).
    pub insert_max_mib: u64,
    /// Milliseconds after which a batched INSERT is ended anyway while
    /// ingest is quiet; this is most of the acknowledgement latency.
    pub insert_period_ms: u64,
    /// Longest insert period, used while ingest is busy (over 25,000
    /// events/s): fewer, larger INSERTs, less ClickHouse CPU per event.
    pub insert_period_max_ms: u64,
    /// Seconds one INSERT may take before it counts as failed.
    pub insert_timeout_seconds: u64,
    /// MiB of batches received but not yet stored, across all agents.
    /// When it is used up, agents are throttled.
    pub in_flight_mib: u64,
    /// Batches of one agent waiting for storage at once.
    pub agent_in_flight_batches: usize,
    /// Events per second one agent may send, sustained.
    pub agent_events_per_second: u32,
    /// Events one agent may send at once above that rate.
    pub agent_burst_events: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let insert = doorwatch_store::InsertLimits::default();
        let agent = crate::ingest::AgentLimits::default();
        Self {
            insert_max_rows: insert.max_rows,
            insert_max_mib: insert.max_bytes >> 20,
            insert_period_ms: insert.period.as_millis() as u64,
            insert_period_max_ms: 1000,
            insert_timeout_seconds: insert.timeout.as_secs(),
            in_flight_mib: 256,
            agent_in_flight_batches: agent.in_flight_batches,
            agent_events_per_second: agent.events_per_second as u32,
            agent_burst_events: agent.burst_events as u32,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address and port for the agent stream, e.g. "0.0.0.0:4443".
    pub address: String,
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

/// Detection settings sent to agents in `Policy`. Zero keeps the agent's
/// own value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Policy version reported back by agents in heartbeats.
    #[serde(default)]
    pub version: u64,
    /// Distinct closed ports a source must probe before a scan is reported.
    #[serde(default)]
    pub scan_min_ports: u32,
    /// Seconds of silence after which an episode is closed.
    #[serde(default)]
    pub episode_idle_seconds: u32,
    /// Sources never reported, such as the campus vulnerability scanners.
    #[serde(default)]
    pub allowlisted_sources: Vec<std::net::IpAddr>,
}

/// A configuration that passed validation.
#[derive(Debug)]
pub struct ValidConfig {
    pub listen: SocketAddr,
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

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("field `{field}`: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

impl CollectorConfig {
    /// Reads and parses `path`. Parse errors name the line and field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Checks values that parse but make no sense.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let listen = self
            .listen
            .address
            .parse()
            .map_err(|e| ConfigError::Invalid {
                field: "listen.address",
                problem: format!("{:?} is not an IP:port ({e})", self.listen.address),
            })?;
        let url = &self.clickhouse.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                field: "clickhouse.url",
                problem: format!("{url:?} must start with http:// or https://"),
            });
        }
        let db = &self.clickhouse.database;
        if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::Invalid {
                field: "clickhouse.database",
                problem: format!("{db:?} must be letters, digits and underscores"),
            });
        }
        let (writer, agent_limits) = self.ingest.validate()?;
        let enrollment = self.enrollment.validate()?;
        let (correlation, campus_networks, allowlist) = self.correlation.validate()?;
        let alerts = self.alerts.validate()?;
        let feed = self.feed.validate()?;
        let retention = self.retention.validate()?;
        Ok(ValidConfig {
            listen,
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

impl IngestConfig {
    fn validate(
        &self,
    ) -> Result<
        (
            crate::ingest::writer::WriterLimits,
            crate::ingest::AgentLimits,
        ),
        ConfigError,
    > {
        let range = |field: &'static str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    field,
                    problem: format!("{value} is outside {min}..={max}"),
                })
            }
        };
        range(
            "ingest.insert_max_rows",
            self.insert_max_rows,
            1,
            10_000_000,
        )?;
        range("ingest.insert_max_mib", self.insert_max_mib, 1, 1024)?;
        range("ingest.insert_period_ms", self.insert_period_ms, 10, 60_000)?;
        range(
            "ingest.insert_period_max_ms",
            self.insert_period_max_ms,
            self.insert_period_ms,
            60_000,
        )?;
        range(
            "ingest.insert_timeout_seconds",
            self.insert_timeout_seconds,
            1,
            600,
        )?;
        range("ingest.in_flight_mib", self.in_flight_mib, 8, 65_536)?;
        range(
            "ingest.agent_in_flight_batches",
            self.agent_in_flight_batches as u64,
            1,
            1024,
        )?;
        range(
            "ingest.agent_events_per_second",
            self.agent_events_per_second.into(),
            1,
            10_000_000,
        )?;
        // A full batch must fit in the burst, or it could never be sent.
        range(
            "ingest.agent_burst_events",
            self.agent_burst_events.into(),
            doorwatch_proto::MAX_EVENTS_PER_BATCH as u64,
            100_000_000,
        )?;
        let writer = crate::ingest::writer::WriterLimits {
            insert: doorwatch_store::InsertLimits {
                max_rows: self.insert_max_rows,
                max_bytes: self.insert_max_mib << 20,
                period: std::time::Duration::from_millis(self.insert_period_ms),
                timeout: std::time::Duration::from_secs(self.insert_timeout_seconds),
            },
            period_max: std::time::Duration::from_millis(self.insert_period_max_ms),
            in_flight_bytes: usize::try_from(self.in_flight_mib << 20).unwrap_or(usize::MAX),
        };
        let agent = crate::ingest::AgentLimits {
            in_flight_batches: self.agent_in_flight_batches,
            events_per_second: self.agent_events_per_second.into(),
            burst_events: self.agent_burst_events.into(),
        };
        Ok((writer, agent))
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
}

//! The `[alerts]` table: channels (webhook, email, syslog), their TLS, and
//! the rate per channel, validated into [`super::Settings`].

use std::path::PathBuf;

use doorwatch_process::config::ConfigError;
use serde::Deserialize;

/// Alert channels. With none set, campaigns and revoked PCs' returns are
/// stored (and returns logged) but nobody is told.
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
    pub(crate) fn validate(self) -> Result<crate::campaigns::alert::Settings, ConfigError> {
        let invalid = |field: &'static str, problem: String| ConfigError::invalid(field, problem);
        let mut channels = Vec::new();
        // TLS to a webhook or relay: the given bundle or the system's.
        let client_tls = |field: &'static str, bundle: &Option<PathBuf>, alpn: &[u8]| {
            let bundle = bundle
                .clone()
                .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
            let roots =
                doorwatch_tls::load_roots(&bundle).map_err(|e| invalid(field, e.to_string()))?;
            let alpn: &[&[u8]] = if alpn.is_empty() { &[] } else { &[alpn] };
            doorwatch_tls::outside_client_config(roots, alpn)
                .map_err(|e| invalid(field, e.to_string()))
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

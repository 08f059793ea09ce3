//! Alerts: one per campaign opening, then one per escalation, and one per
//! revoked PC's return (an enrollment that claimed the hostname, or
//! presented the key, of a revoked agent), to each configured channel (a
//! JSON webhook, email, syslog), recorded in ClickHouse.
//!
//! The record is the memory: a campaign is alerted on a channel when its
//! severity is above the highest severity recorded for that channel, and a
//! return when nothing is recorded for it there, so a restarted collector
//! sends nothing twice. Only the holder of the `alerts` lease sends. Each
//! channel has its own queue, rate limit and retries with backoff; an
//! alert that still fails is recorded as given up, never silently dropped.
//! What a return alert says is in [`returned`].

pub mod config;
pub mod returned;

use doorwatch_process::{clock, shutdown};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use doorwatch_store::{
    AlertRow, AlertStatus, AlertSubject, CampaignRow, CampaignState, RevokedReturnRow, Store,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::campaigns::correlate::severity_label;

/// Attempts per alert and channel before it is recorded as given up.
const ATTEMPTS: u32 = 5;
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How far back returns are looked for. One that no channel took within
/// a week (none was set, or none worked) stays in the record and the log,
/// but is no longer news to send.
const RETURN_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// Where alerts go.
#[derive(Debug, Clone)]
pub enum Channel {
    /// HTTP(S) POST of JSON with a Slack/Teams-compatible `text` field.
    Webhook {
        url: WebhookUrl,
        tls: Option<Arc<rustls::ClientConfig>>,
    },
    /// RFC 5424 syslog with a CEF message, over UDP or TCP.
    Syslog { address: String, tcp: bool },
    /// Email over SMTP; STARTTLS is required before anything is sent.
    Email(Arc<Email>),
}

/// An SMTP relay and the message envelope.
#[derive(Clone)]
pub struct Email {
    /// host:port of the relay (usually port 587).
    pub server: String,
    /// Name in the relay's certificate.
    pub tls_name: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub from: String,
    pub to: Vec<String>,
    /// AUTH PLAIN user and password, if the relay wants them.
    pub login: Option<(String, String)>,
}

impl std::fmt::Debug for Email {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("server", &self.server)
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// The name recorded with each alert.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Syslog { .. } => "syslog",
            Self::Email(_) => "email",
        }
    }
}

/// A webhook URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::str::FromStr for WebhookUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url:?} must start with http:// or https://"));
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("{url:?} has a bad port"))?,
            ),
            _ => (authority, if https { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        Ok(Self {
            https,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
        })
    }
}

/// Alert settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub channels: Vec<Channel>,
    /// Base of links to the console, e.g. `https://doorwatch.campus.example`.
    pub console_url: String,
    /// Alerts per channel per minute (a burst of this many).
    pub per_minute: u32,
    /// How often pending alerts are looked for.
    pub interval: Duration,
}

/// What an alert is about.
#[derive(Debug, Clone)]
pub enum Subject {
    Campaign(CampaignRow),
    /// An enrollment that resembled a revoked agent.
    Return(RevokedReturnRow),
}

impl Subject {
    /// The id its alerts are recorded under.
    pub fn id(&self) -> uuid::Uuid {
        match self {
            Self::Campaign(c) => c.campaign_id,
            Self::Return(r) => r.return_id,
        }
    }

    /// The campaign's severity; a return is always [`returned::SEVERITY`].
    pub fn severity(&self) -> u8 {
        match self {
            Self::Campaign(c) => c.severity,
            Self::Return(_) => returned::SEVERITY,
        }
    }

    fn kind(&self) -> AlertSubject {
        match self {
            Self::Campaign(_) => AlertSubject::Campaign,
            Self::Return(_) => AlertSubject::RevokedPcReturned,
        }
    }

    /// Pure: the alert due on a channel whose highest recorded severity for
    /// this subject is `recorded`, if one is: a campaign that is not closed
    /// and is above what the channel was told; a return once.
    pub fn due(&self, recorded: Option<u8>) -> Option<Alert> {
        let told = match self {
            Self::Campaign(c) => {
                c.state == CampaignState::Closed || recorded.is_some_and(|r| r >= c.severity)
            }
            Self::Return(_) => recorded.is_some(),
        };
        if told {
            return None;
        }
        Some(Alert {
            subject: self.clone(),
            opened: recorded.is_none(),
        })
    }
}

/// One alert to send.
#[derive(Debug, Clone)]
pub struct Alert {
    pub subject: Subject,
    /// True for the first alert of its subject on a channel.
    pub opened: bool,
}

impl Alert {
    /// One line for people (the webhook's `text`, the syslog message, the
    /// email's body).
    pub fn text(&self, console_url: &str) -> String {
        match &self.subject {
            Subject::Campaign(c) => campaign_text(c, self.opened, console_url),
            Subject::Return(r) => returned::text(r, console_url),
        }
    }

    /// The webhook body.
    pub fn json(&self, console_url: &str) -> String {
        let value = match &self.subject {
            Subject::Campaign(c) => campaign_json(c, self.opened, console_url),
            Subject::Return(r) => returned::json(r, console_url),
        };
        value.to_string()
    }

    /// RFC 5424 syslog line with a CEF message.
    pub fn syslog(&self, console_url: &str) -> String {
        match &self.subject {
            Subject::Campaign(c) => {
                let label = if self.opened { "New" } else { "Escalated" };
                syslog_line(
                    c.severity,
                    "campaign",
                    &format!("campaign-{}", c.kind.label()),
                    &format!("{label} {} campaign", c.kind.label()),
                    &[
                        ("cs1Label", "campaignId".into()),
                        ("cs1", c.campaign_id.to_string()),
                        ("cs2Label", "key".into()),
                        ("cs2", c.campaign_key.clone()),
                        ("cnt", c.pcs.to_string()),
                        ("msg", c.explanation.clone()),
                        ("request", campaign_link(c, console_url)),
                    ],
                )
            }
            Subject::Return(r) => syslog_line(
                returned::SEVERITY,
                "enrollment",
                "revoked-pc-returned",
                returned::TITLE,
                &returned::cef_fields(r, console_url),
            ),
        }
    }

    /// The email's subject line.
    fn email_subject(&self) -> String {
        match &self.subject {
            Subject::Campaign(c) => format!(
                "[doorwatch] {} {} campaign {} ({})",
                if self.opened { "New" } else { "Escalated" },
                c.kind.label(),
                c.campaign_key,
                severity_label(c.severity)
            ),
            Subject::Return(r) => returned::email_subject(r),
        }
    }
}

fn campaign_link(c: &CampaignRow, console_url: &str) -> String {
    format!(
        "{}/campaigns/{}",
        console_url.trim_end_matches('/'),
        c.campaign_id
    )
}

fn campaign_text(c: &CampaignRow, opened: bool, console_url: &str) -> String {
    format!(
        "[doorwatch] {what} {kind} campaign {key}, severity {severity}: {explanation} {link}",
        what = if opened { "New" } else { "Escalated:" },
        kind = c.kind.label(),
        key = c.campaign_key,
        severity = severity_label(c.severity),
        explanation = c.explanation,
        link = campaign_link(c, console_url),
    )
}

fn campaign_json(c: &CampaignRow, opened: bool, console_url: &str) -> serde_json::Value {
    serde_json::json!({
        "text": campaign_text(c, opened, console_url),
        "event": if opened { "campaign_opened" } else { "campaign_escalated" },
        "campaign": {
            "id": c.campaign_id.to_string(),
            "kind": c.kind.label(),
            "key": c.campaign_key,
            "state": c.state.label(),
            "severity": severity_label(c.severity),
            "pcs": c.pcs,
            "sources": c.sources,
            "ports": c.ports,
            "open_ports": c.open_ports,
            "exposed_ports": c.exposed_ports,
            "first_seen": clock::rfc3339(c.first_seen),
            "last_seen": clock::rfc3339(c.last_seen),
            "explanation": c.explanation,
        },
        "link": campaign_link(c, console_url),
    })
}

/// An RFC 5424 line whose message is CEF: facility security/authorization
/// (4); severity warning (4), or alert (1) from high (3) up. `fields` are
/// the CEF extension's keys and values, escaped here.
fn syslog_line(
    severity: u8,
    msgid: &str,
    signature: &str,
    name: &str,
    fields: &[(&str, String)],
) -> String {
    let priority = 4 * 8 + if severity >= 3 { 1 } else { 4 };
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "-".into());
    let cef_severity = u32::from(severity.min(4)) * 2 + 1;
    let extension: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{key}={}", cef_escape(value)))
        .collect();
    format!(
        "<{priority}>1 {time} {host} doorwatch - {msgid} - CEF:0|doorwatch|doorwatch-collector|{version}|{signature}|{name}|{cef_severity}|{extension}",
        time = clock::rfc3339(clock::unix_now_u32()),
        version = env!("CARGO_PKG_VERSION"),
        name = cef_escape(name),
        extension = extension.join(" "),
    )
}

/// CEF extension values escape `\`, `=` and line breaks (and `|` in the
/// header, which we never put there unescaped either).
fn cef_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

/// Sends `alert` once on `channel`.
async fn send(channel: &Channel, alert: &Alert, console_url: &str) -> Result<(), String> {
    match channel {
        Channel::Webhook { url, tls } => post(url, tls.as_ref(), &alert.json(console_url)).await,
        Channel::Email(email) => mail(email, alert, console_url).await,
        Channel::Syslog { address, tcp } => {
            let line = alert.syslog(console_url);
            if *tcp {
                let mut stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(|e| format!("cannot connect to {address}: {e}"))?;
                // RFC 6587 octet counting.
                let framed = format!("{} {line}", line.len());
                stream
                    .write_all(framed.as_bytes())
                    .await
                    .map_err(|e| format!("cannot send to {address}: {e}"))
            } else {
                let socket = tokio::net::UdpSocket::bind(if address.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .await
                .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
                socket
                    .send_to(line.as_bytes(), address)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("cannot send to {address}: {e}"))
            }
        }
    }
}

/// Sends one message through the relay: EHLO, STARTTLS, EHLO, optional
/// AUTH PLAIN, MAIL, RCPT, DATA. A relay without STARTTLS gets nothing.
async fn mail(email: &Email, alert: &Alert, console_url: &str) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(&email.server)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", email.server))?;
    let mut plain = tokio::io::BufReader::new(tcp);
    smtp_reply(&mut plain, 220).await?;
    smtp(&mut plain, "EHLO doorwatch-collector", 250).await?;
    smtp(&mut plain, "STARTTLS", 220).await?;
    let name = rustls::pki_types::ServerName::try_from(email.tls_name.clone())
        .map_err(|_| format!("{:?} is not a TLS server name", email.tls_name))?;
    let tls = tokio_rustls::TlsConnector::from(email.tls.clone())
        .connect(name, plain.into_inner())
        .await
        .map_err(|e| format!("STARTTLS with {} failed: {e}", email.server))?;
    let mut stream = tokio::io::BufReader::new(tls);
    smtp(&mut stream, "EHLO doorwatch-collector", 250).await?;
    if let Some((user, password)) = &email.login {
        let token = crate::campaigns::base64::encode(format!("\0{user}\0{password}").as_bytes());
        smtp(&mut stream, &format!("AUTH PLAIN {token}"), 235).await?;
    }
    smtp(&mut stream, &format!("MAIL FROM:<{}>", email.from), 250).await?;
    for to in &email.to {
        smtp(&mut stream, &format!("RCPT TO:<{to}>"), 250).await?;
    }
    smtp(&mut stream, "DATA", 354).await?;
    let subject = alert.email_subject();
    let body = alert.text(console_url);
    let message = format!(
        "From: <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}.{severity}@doorwatch>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        from = email.from,
        to = email
            .to
            .iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(", "),
        date = httpdate(),
        id = alert.subject.id(),
        severity = alert.subject.severity(),
    );
    // Dot-stuffing: a line starting with "." gets another.
    let stuffed = message.replace("\r\n.", "\r\n..");
    smtp(&mut stream, &format!("{stuffed}."), 250).await?;
    let _ = smtp(&mut stream, "QUIT", 221).await;
    Ok(())
}

/// Sends one command line and expects reply `code`.
async fn smtp<S: tokio::io::AsyncBufRead + AsyncWrite + Unpin>(
    stream: &mut S,
    line: &str,
    code: u16,
) -> Result<(), String> {
    stream
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| format!("SMTP send failed: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("SMTP send failed: {e}"))?;
    smtp_reply(stream, code).await.map_err(|e| {
        let verb = line.split_whitespace().next().unwrap_or_default();
        format!("SMTP {verb}: {e}")
    })
}

/// Reads a (possibly multi-line) reply and checks its code.
async fn smtp_reply<S: tokio::io::AsyncBufRead + Unpin>(
    stream: &mut S,
    code: u16,
) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    loop {
        let mut line = String::new();
        let n = stream
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading the reply failed: {e}"))?;
        if n == 0 {
            return Err("the relay closed the connection".into());
        }
        let got: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        return if got == code {
            Ok(())
        } else {
            Err(format!("expected {code}, got {:?}", line.trim_end()))
        };
    }
}

/// The current time as an RFC 5322 date, in UTC.
fn httpdate() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    now.format(&format).unwrap_or_default()
}

/// One HTTP/1.1 POST; success is any 2xx answer.
async fn post(
    url: &WebhookUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: &str,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", url.host, url.port))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: doorwatch-collector\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}",
        path = url.path,
        host = url.host,
        len = body.len(),
    );
    let mut answer = Vec::new();
    if url.https {
        let config = tls.ok_or("https webhook without TLS settings")?;
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|_| format!("{:?} is not a TLS server name", url.host))?;
        let mut stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {} failed: {e}", url.host))?;
        exchange(&mut stream, &request, &mut answer).await?;
    } else {
        let mut stream = tcp;
        exchange(&mut stream, &request, &mut answer).await?;
    }
    let status = String::from_utf8_lossy(&answer);
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "no HTTP answer".to_owned())?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("webhook answered HTTP {code}"))
    }
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    request: &str,
    answer: &mut Vec<u8>,
) -> Result<(), String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    // The status line is all we need.
    let mut buf = [0u8; 256];
    let n = stream
        .read(&mut buf)
        .await
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    answer.extend_from_slice(&buf[..n]);
    Ok(())
}

/// Finds what each channel has not been told yet (campaigns above the
/// severity recorded for it, returns not recorded for it) and hands it to
/// the channel workers, until shutdown. Only the holder of the alerting
/// lease does, so several collectors send each alert once.
pub async fn run(store: Store, settings: Settings, mut shutdown: watch::Receiver<bool>) {
    let mut lease = crate::lease::Lease::new("alerts");
    let mut workers = HashMap::new();
    for channel in &settings.channels {
        let (tx, rx) = mpsc::channel::<Alert>(1024);
        tokio::spawn(worker(store.clone(), channel.clone(), settings.clone(), rx));
        workers.insert(channel.name(), tx);
    }
    // (subject, channel, severity) handed to a worker and not yet recorded.
    let mut queued: HashSet<(uuid::Uuid, &'static str, u8)> = HashSet::new();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            _ = shutdown::stop_requested(&mut shutdown) => return,
        }
        let pending = async {
            if lease.held(&store).await? != Some(true) {
                return Ok(None);
            }
            let since = clock::unix_now().saturating_sub(RETURN_WINDOW.as_secs());
            let returns = store.revoked_returns(clock::seconds(since)).await?;
            let subjects: Vec<Subject> = store
                .active_campaigns()
                .await?
                .into_iter()
                .map(Subject::Campaign)
                .chain(returns.into_iter().map(Subject::Return))
                .collect();
            let ids: Vec<uuid::Uuid> = subjects.iter().map(Subject::id).collect();
            let told = store.alerted(&ids).await?;
            Ok::<_, doorwatch_store::StoreError>(Some((subjects, told)))
        };
        let (subjects, told) = match pending.await {
            Ok(Some(found)) => {
                failing = false;
                found
            }
            Ok(None) => {
                failing = false;
                continue;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot look for pending alerts; retrying");
                }
                failing = true;
                continue;
            }
        };
        let told: HashMap<(uuid::Uuid, String), u8> = told
            .into_iter()
            .map(|(id, channel, severity)| ((id, channel), severity))
            .collect();
        queued.retain(|(id, channel, severity)| {
            told.get(&(*id, (*channel).to_owned()))
                .is_none_or(|recorded| recorded < severity)
        });
        for subject in &subjects {
            for (name, tx) in &workers {
                let recorded = told.get(&(subject.id(), (*name).to_owned())).copied();
                let Some(alert) = subject.due(recorded) else {
                    continue;
                };
                let key = (subject.id(), *name, subject.severity());
                if !queued.insert(key) {
                    continue;
                }
                if tx.try_send(alert).is_err() {
                    queued.remove(&key);
                    tracing::warn!(channel = name, "alert queue full; will retry");
                }
            }
        }
    }
}

/// Sends one channel's alerts in order, within its rate limit, retrying
/// with backoff, and records each outcome.
async fn worker(
    store: Store,
    channel: Channel,
    settings: Settings,
    mut queue: mpsc::Receiver<Alert>,
) {
    let per_minute = f64::from(settings.per_minute.max(1));
    let mut limit =
        crate::rate::RateLimit::new(per_minute / 60.0, per_minute, std::time::Instant::now());
    while let Some(alert) = queue.recv().await {
        let wait = limit.take(1, std::time::Instant::now());
        if !wait.is_zero() {
            tracing::info!(channel = channel.name(), wait = ?wait, "alert rate limit: waiting");
            tokio::time::sleep(wait).await;
        }
        let mut attempts = 0;
        let mut delay = Duration::from_secs(1);
        let outcome = loop {
            attempts += 1;
            let sent = tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                send(&channel, &alert, &settings.console_url),
            )
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
            match sent {
                Ok(()) => break Ok(()),
                Err(e) if attempts >= ATTEMPTS => break Err(e),
                Err(e) => {
                    tracing::warn!(channel = channel.name(), subject = %alert.subject.kind(), id = %alert.subject.id(), attempt = attempts, error = %e, retry_in = ?delay, "alert not delivered; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        };
        let record = AlertRow {
            campaign_id: alert.subject.id(),
            severity: alert.subject.severity(),
            channel: channel.name().to_owned(),
            status: if outcome.is_ok() {
                AlertStatus::Sent
            } else {
                AlertStatus::GaveUp
            },
            attempts,
            at: clock::unix_now_u32(),
            error: outcome.clone().err().unwrap_or_default(),
            text: alert.text(&settings.console_url),
            subject: alert.subject.kind(),
        };
        match &outcome {
            Ok(()) => {
                tracing::info!(channel = channel.name(), subject = %alert.subject.kind(), id = %alert.subject.id(), severity = severity_label(alert.subject.severity()), opened = alert.opened, "alert sent")
            }
            Err(e) => {
                tracing::error!(channel = channel.name(), subject = %alert.subject.kind(), id = %alert.subject.id(), attempts, error = %e, "alert given up")
            }
        }
        // Without the record the alert would be sent again: keep trying.
        let mut delay = Duration::from_secs(1);
        while let Err(e) = store.insert_alert(&record).await {
            tracing::warn!(error = %e, "cannot record an alert; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorwatch_store::CampaignKind;

    fn campaign() -> CampaignRow {
        CampaignRow {
            campaign_id: uuid::Uuid::nil(),
            kind: CampaignKind::Sweep,
            campaign_key: "203.0.113.0/24".into(),
            state: CampaignState::Open,
            severity: 3,
            first_seen: 1_700_000_000,
            last_seen: 1_700_000_060,
            pcs: 12,
            sources: 1,
            ports: 100,
            open_ports: 1,
            explanation: "203.0.113.0/24 swept 12 campus PCs | a=b".into(),
            updated_at: 0,
            version: 0,
            exposed_ports: 0,
        }
    }

    #[test]
    fn a_campaign_is_due_above_the_recorded_severity_a_return_once() {
        let open = Subject::Campaign(campaign());
        let first = open.due(None).expect("never told");
        assert!(first.opened);
        let raised = open.due(Some(2)).expect("told medium, now high");
        assert!(!raised.opened);
        assert!(open.due(Some(3)).is_none(), "told high already");
        let closed = Subject::Campaign(CampaignRow {
            state: CampaignState::Closed,
            ..campaign()
        });
        assert!(closed.due(None).is_none(), "closed campaigns are not news");
        let back = Subject::Return(doorwatch_store::RevokedReturnRow {
            return_id: uuid::Uuid::from_u128(7),
            at: 1_700_000_000,
            revoked_agent_id: "a".into(),
            revoked_hostname: "pc".into(),
            revoked_at: 1_699_999_000,
            revoked_reason: "stolen".into(),
            hostname_matched: 1,
            key_matched: 0,
            agent_id: "b".into(),
            claimed_hostname: "pc=1|\n".into(),
            token_id: "t".into(),
            remote: "198.18.0.2".into(),
            key_sha256: String::new(),
        });
        assert_eq!(back.id(), uuid::Uuid::from_u128(7));
        assert!(back.due(None).is_some_and(|a| a.opened));
        assert!(back.due(Some(returned::SEVERITY)).is_none(), "sent once");
        assert!(back.due(Some(1)).is_none(), "any record of it counts");
        let line = back.due(None).expect("due").syslog("https://c");
        assert!(line.starts_with("<33>1 "), "alert severity: {line}");
        assert!(
            line.contains(" doorwatch - enrollment - CEF:0|doorwatch|doorwatch-collector|")
                && line.contains(
                    "|revoked-pc-returned|Revoked PC back?|7|cs1Label=revokedAgentId cs1=a "
                ),
            "{line}"
        );
        assert!(
            line.contains(" cs3=pc\\=1\\|\\\\u{a} cs4Label=tokenId "),
            "a claimed hostname is made printable, then CEF-escaped: {line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn webhook_urls_parse() {
        let url: WebhookUrl = "https://hooks.example/services/T0/B0".parse().expect("url");
        assert_eq!(
            url,
            WebhookUrl {
                https: true,
                host: "hooks.example".into(),
                port: 443,
                path: "/services/T0/B0".into()
            }
        );
        let url: WebhookUrl = "http://127.0.0.1:8080".parse().expect("url");
        assert_eq!((url.port, url.path.as_str()), (8080, "/"));
        assert!("ftp://x".parse::<WebhookUrl>().is_err());
        assert!("http://:80/".parse::<WebhookUrl>().is_err());
    }

    #[test]
    fn alert_texts_carry_the_explanation_and_the_link() {
        let alert = Alert {
            subject: Subject::Campaign(campaign()),
            opened: true,
        };
        let text = alert.text("https://console.example/");
        assert!(text.contains("New sweep campaign 203.0.113.0/24, severity high"));
        assert!(
            text.ends_with(
                "https://console.example/campaigns/00000000-0000-0000-0000-000000000000"
            )
        );
        let json: serde_json::Value = serde_json::from_str(&alert.json("https://c")).expect("json");
        assert_eq!(json["campaign"]["pcs"], 12);
        assert_eq!(json["event"], "campaign_opened");
        let line = alert.syslog("https://c");
        assert!(
            line.starts_with("<33>1 "),
            "security facility, alert severity: {line}"
        );
        assert!(line.contains("CEF:0|doorwatch|doorwatch-collector|"));
        assert!(
            line.contains("msg=203.0.113.0/24 swept 12 campus PCs \\| a\\=b"),
            "{line}"
        );
    }
}

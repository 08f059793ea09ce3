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

mod channels;
pub mod config;
pub mod returned;

use channels::send;
pub use channels::{Channel, Email, WebhookUrl};

use doorwatch_process::{clock, shutdown};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use doorwatch_store::{
    AlertRow, AlertStatus, AlertSubject, CampaignRow, CampaignState, RevokedReturnRow, Store,
};
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
            let mut subjects: Vec<Subject> = store
                .active_campaigns()
                .await?
                .into_iter()
                .map(Subject::Campaign)
                .chain(returns.into_iter().map(Subject::Return))
                .collect();
            // In a storm, under the per-channel rate limit, the most
            // severe are queued first.
            subjects.sort_by_key(|s| std::cmp::Reverse(s.severity()));
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

//! The blocklist feed: the outside sources of active sweep and distributed
//! campaigns, for campus firewalls ("external dynamic lists").
//!
//! - `GET /blocklist.txt`: one address per line, nothing else;
//! - `GET /blocklist.json`: the same with last activity, campaign count,
//!   evidence and, for each entry, why it is listed.
//!
//! Either takes `?evidence=handshake` to list only sources whose address
//! is proven (see [`super::listing`], which owns what may be listed and
//! why); the feed's `evidence` setting is the least any request gets.
//!
//! An entry expires `entry_hours` after its source was last active. Every
//! request needs the feed token, as `Authorization: Bearer
//! TOKEN` or as the password of HTTP Basic authentication (what firewalls
//! support). With `tls` on, the feed is served over TLS 1.3 with the
//! collector's certificate.
//!
//! The HTTP handling is deliberately tiny: GET only, one request per
//! connection, a bounded request head and a timeout.

use doorwatch_process::config::ConfigError;
use doorwatch_process::{clock, shutdown};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use doorwatch_store::Store;
use doorwatch_store::ip::Cidr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use doorwatch_tls::serve::{ConnectionLimits, ConnectionSlot, PlainTcp, serve_connections};

use super::listing::{Evidence, ListingPolicy};

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Feed connections open at once, and from one address (firewalls and
/// SIEMs poll now and then; more is a flood), and how long a TLS
/// handshake may take.
const FEED_LIMITS: ConnectionLimits = ConnectionLimits {
    name: "feed",
    max_connections: 256,
    max_per_address: 16,
    handshake_timeout: REQUEST_TIMEOUT,
};

/// Feed settings.
#[derive(Clone)]
pub struct Settings {
    pub listen: std::net::SocketAddr,
    /// Every request must carry this.
    pub token: String,
    pub entry_lifetime: Duration,
    /// Who is never listed.
    pub policy: ListingPolicy,
    /// The least evidence any entry needs.
    pub minimum: Evidence,
    /// TLS with the collector's certificate, or plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Settings {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("entry_lifetime", &self.entry_lifetime)
            .field("minimum", &self.minimum)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// One listed address.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    pub address: String,
    pub last_active: String,
    pub campaigns: u64,
    pub expires: String,
    pub evidence: Evidence,
    /// In plain words: the campaigns, and whether the address is proven.
    pub why: String,
}

/// The current list: campaign sources active within the lifetime that the
/// listing policy lets through with at least `minimum` evidence.
pub async fn entries(
    store: &Store,
    settings: &Settings,
    minimum: Evidence,
    now: u32,
) -> Result<Vec<Entry>, doorwatch_store::StoreError> {
    let lifetime = u32::try_from(settings.entry_lifetime.as_secs()).unwrap_or(u32::MAX);
    let since = now.saturating_sub(lifetime);
    let (rows, verified) =
        tokio::try_join!(store.feed_sources(since), store.verified_scanners(since))?;
    let verified: HashSet<_> = verified.into_iter().collect();
    let mut ids: Vec<uuid::Uuid> = rows
        .iter()
        .flat_map(|row| row.campaign_ids.iter())
        .filter_map(|id| id.parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let campaigns: HashMap<_, _> = store
        .campaigns_by_id(&ids)
        .await?
        .into_iter()
        .map(|c| (c.campaign_id, c))
        .collect();
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let listing = settings.policy.judge(&row, &campaigns, &verified).ok()?;
            (listing.evidence >= minimum).then(|| Entry {
                last_active: clock::rfc3339(row.last_active),
                campaigns: row.campaigns,
                expires: clock::rfc3339(row.last_active.saturating_add(lifetime)),
                evidence: listing.evidence,
                why: listing.why,
                address: row.source,
            })
        })
        .collect())
}

/// Serves the feed until shutdown.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
) {
    let settings = Arc::new(settings);
    let stop = shutdown::stop_requested(&mut shutdown);
    match settings.tls.clone() {
        Some(config) => {
            let handle = answer_and_log(store, settings);
            serve_connections(
                listener,
                TlsAcceptor::from(config),
                FEED_LIMITS,
                stop,
                handle,
            )
            .await;
        }
        None => {
            let handle = answer_and_log(store, settings);
            serve_connections(listener, PlainTcp, FEED_LIMITS, stop, handle).await;
        }
    }
}

/// What the feed does on each connection, TLS or plain: answer one
/// request and log it.
fn answer_and_log<S>(
    store: Store,
    settings: Arc<Settings>,
) -> impl Fn(S, SocketAddr, ConnectionSlot) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
+ Send
+ Sync
+ 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    move |stream, remote, slot| {
        let (store, settings) = (store.clone(), settings.clone());
        Box::pin(async move {
            let _slot = slot;
            match answer(stream, &store, &settings).await {
                Ok((status, path)) => {
                    tracing::info!(remote = %remote, status, path = %path, "feed request")
                }
                Err(e) => tracing::debug!(remote = %remote, error = %e, "feed request failed"),
            }
        })
    }
}

/// Reads one request and answers it; returns the status and path.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    store: &Store,
    settings: &Settings,
) -> Result<(u16, String), String> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| "request timed out".to_owned())??;
    let request = Request::parse(&head);
    let (status, content_type, body) = respond(&request, store, settings).await;
    let reply = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nCache-Control: no-store\r\nConnection: close\r\n{auth}\r\n",
        reason = reason(status),
        len = body.len(),
        auth = if status == 401 {
            "WWW-Authenticate: Basic realm=\"doorwatch feed\"\r\n"
        } else {
            ""
        },
    );
    stream
        .write_all(reply.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if request.method != "HEAD" {
        stream
            .write_all(body.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    let _ = stream.shutdown().await;
    Ok((status, request.path))
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err("request head too large".into());
        }
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the request ended".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The parts of a request the feed looks at.
#[derive(Debug, Default, PartialEq)]
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
}

impl Request {
    fn parse(head: &str) -> Self {
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split_whitespace();
        let method = first.next().unwrap_or_default().to_owned();
        let path = first.next().unwrap_or_default().to_owned();
        let authorization = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
            .map(|(_, value)| value.trim().to_owned());
        Self {
            method,
            path,
            authorization,
        }
    }

    /// The token the client presented (Bearer, or a Basic password).
    fn token(&self) -> Option<String> {
        let value = self.authorization.as_deref()?;
        if let Some(token) = value.strip_prefix("Bearer ") {
            return Some(token.trim().to_owned());
        }
        let encoded = value.strip_prefix("Basic ")?;
        let decoded = super::base64::decode(encoded.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        Some(text.split_once(':')?.1.to_owned())
    }
}

async fn respond(
    request: &Request,
    store: &Store,
    settings: &Settings,
) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method != "GET" && request.method != "HEAD" {
        return (405, TEXT, "only GET\n".into());
    }
    let authorised = request
        .token()
        .is_some_and(|t| constant_time_eq(t.as_bytes(), settings.token.as_bytes()));
    if !authorised {
        return (401, TEXT, "the feed token is required\n".into());
    }
    let (path, query) = request
        .path
        .split_once('?')
        .unwrap_or((request.path.as_str(), ""));
    if path != "/blocklist.txt" && path != "/blocklist.json" {
        return (404, TEXT, "try /blocklist.txt or /blocklist.json\n".into());
    }
    let minimum = match requested_evidence(query) {
        Ok(asked) => asked.max(settings.minimum),
        Err(problem) => return (400, TEXT, format!("{problem}\n")),
    };
    let now = clock::unix_now_u32();
    let list = match entries(store, settings, minimum, now).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "feed: cannot read campaigns");
            return (503, TEXT, "campaigns unavailable, retry later\n".into());
        }
    };
    if path == "/blocklist.txt" {
        let body: String = list.iter().map(|e| format!("{}\n", e.address)).collect();
        (200, TEXT, body)
    } else {
        let body = serde_json::json!({
            "generated": clock::rfc3339(now),
            "evidence": minimum_label(minimum),
            "entries": list,
        });
        (200, "application/json", body.to_string())
    }
}

/// The least evidence a request asks for: `evidence=any` (the default) or
/// `evidence=handshake`; anything else is refused, so that a firewall
/// admin's typo never widens the list.
fn requested_evidence(query: &str) -> Result<Evidence, String> {
    let mut minimum = Evidence::Unverified;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("evidence", value)) => {
                minimum = Evidence::parse_minimum(value)
                    .ok_or_else(|| "evidence must be \"any\" or \"handshake\"".to_owned())?;
            }
            _ => return Err("the only parameter is evidence=any|handshake".to_owned()),
        }
    }
    Ok(minimum)
}

fn minimum_label(minimum: Evidence) -> &'static str {
    match minimum {
        Evidence::Unverified => "any",
        Evidence::Handshake => "handshake",
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
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
    /// Networks never listed, on top of the campus, the correlation
    /// allowlist and the built-in list: the campus's DNS resolvers and
    /// upstream services, partners. CIDRs or addresses.
    pub never_list: Vec<String>,
    /// The least evidence an entry needs: "any", or "handshake" (the
    /// source completed a TCP handshake with a PC, so its address is not
    /// forged). A request may ask for more, never less.
    pub evidence: String,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token_file: None,
            entry_hours: 24,
            tls: true,
            never_list: Vec::new(),
            evidence: "any".to_owned(),
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
    pub never_list: Vec<Cidr>,
    pub minimum: Evidence,
}

impl FeedConfig {
    pub(crate) fn validate(self) -> Result<Option<ValidFeed>, ConfigError> {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        let invalid = |field: &'static str, problem: String| ConfigError::invalid(field, problem);
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
        let never_list = self
            .never_list
            .iter()
            .map(|text| {
                text.parse::<Cidr>()
                    .map_err(|e| invalid("feed.never_list", format!("{text:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let minimum = Evidence::parse_minimum(&self.evidence).ok_or_else(|| {
            invalid(
                "feed.evidence",
                format!("{:?} is not \"any\" or \"handshake\"", self.evidence),
            )
        })?;
        Ok(Some(ValidFeed {
            listen,
            token_file,
            entry_lifetime: std::time::Duration::from_secs(self.entry_hours * 3600),
            tls: self.tls,
            never_list,
            minimum,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_tokens_come_from_bearer_or_basic() {
        let r = Request::parse(
            "GET /blocklist.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n",
        );
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/blocklist.txt");
        assert_eq!(r.token().as_deref(), Some("s3cret"));
        // "firewall:s3cret"
        let r =
            Request::parse("GET / HTTP/1.1\r\nauthorization: Basic ZmlyZXdhbGw6czNjcmV0\r\n\r\n");
        assert_eq!(r.token().as_deref(), Some("s3cret"));
        assert_eq!(Request::parse("GET / HTTP/1.1\r\n\r\n").token(), None);
        assert_eq!(Request::parse("\r\n\r\n"), Request::default());
    }

    #[test]
    fn a_request_may_ask_for_proven_addresses_only_and_typos_are_refused() {
        assert_eq!(requested_evidence(""), Ok(Evidence::Unverified));
        assert_eq!(requested_evidence("evidence=any"), Ok(Evidence::Unverified));
        assert_eq!(
            requested_evidence("evidence=handshake"),
            Ok(Evidence::Handshake)
        );
        for bad in [
            "evidence=hand",
            "evidence",
            "evidnce=handshake",
            "x=1&evidence=any",
        ] {
            assert!(requested_evidence(bad).is_err(), "{bad}");
        }
    }
}

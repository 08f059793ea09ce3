//! The alert channels: a JSON webhook (http or https), email over SMTP
//! with STARTTLS required, and syslog over UDP or TCP. Each sends one
//! [`Alert`] once; retries, rate limits and the record are the caller's.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Alert;

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

/// Sends `alert` once on `channel`.
pub(super) async fn send(
    channel: &Channel,
    alert: &Alert,
    console_url: &str,
) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

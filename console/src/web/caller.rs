//! Who is asking: the request extractors for pages ([`PageCaller`]) and
//! the API ([`ApiCaller`]), authentication by bearer API token or session
//! cookie, the role check, and the cookies and request facts they read.
//! It must not change state beyond what a session lookup does.

use doorwatch_process::secret::Secret;
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, header};
use doorwatch_process::clock::unix_now_u32;

use super::errors::{ApiError, PageError, WebError};
use super::state::{App, Shared};
use crate::auth::{Role, User, same_bytes, token_digest};
use crate::views::PageContext;

/// The session cookie (an id into the server-side session table).
pub(super) const SESSION_COOKIE: &str = "__Host-doorwatch_session";
/// The browser cookie: ties a sign-in to the browser that started it.
pub(super) const BROWSER_COOKIE: &str = "__Host-doorwatch_browser";

/// Who is asking, and from where.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub(super) user: User,
    /// The session's CSRF token; `None` for bearer tokens (no ambient
    /// credentials, so nothing to forge).
    pub(super) csrf: Option<Secret>,
    pub(super) ip: IpAddr,
    pub(super) user_agent: String,
    /// The request's `Origin` and `X-CSRF-Token` headers, for changes.
    pub(super) origin: Option<String>,
    pub(super) csrf_header: Option<Secret>,
}

/// A signed-in caller of a page; without one, the page redirects to
/// sign-in.
#[derive(Debug)]
pub(super) struct PageCaller(pub(super) Caller);

/// A caller of `/api/v1`; without one, 401.
#[derive(Debug)]
pub(super) struct ApiCaller(pub(super) Caller);

impl axum::extract::FromRequestParts<Shared> for PageCaller {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &Shared,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(resolve_caller(parts, app)?))
    }
}

impl axum::extract::FromRequestParts<Shared> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &Shared,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(resolve_caller(parts, app)?))
    }
}

/// The caller of a request, from its parts.
pub(super) fn resolve_caller(
    parts: &axum::http::request::Parts,
    app: &App,
) -> Result<Caller, WebError> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .ok_or_else(|| WebError::Internal("no peer address on the request".into()))?;
    let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    caller(app, &parts.headers, peer, next)
}

impl Caller {
    pub(super) fn page(&self) -> PageContext {
        PageContext {
            user: self.user.clone(),
            csrf: self.csrf.as_deref().unwrap_or_default().to_owned(),
        }
    }

    pub(super) fn require(&self, role: Role) -> Result<(), WebError> {
        if self.user.role >= role {
            Ok(())
        } else {
            tracing::warn!(user = %self.user.name, role = self.user.role.label(), needed = role.label(), "refused: role too low");
            Err(WebError::Forbidden)
        }
    }
}

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

pub(super) fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age.map_or(String::new(), |a| format!("; Max-Age={a}"));
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; Secure; SameSite=Lax{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

pub(super) fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

/// The caller from the session cookie or a bearer token.
pub(super) fn caller(
    app: &App,
    headers: &HeaderMap,
    peer: SocketAddr,
    path: &str,
) -> Result<Caller, WebError> {
    let ip = peer.ip();
    let agent = user_agent(headers);
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        let digest = token_digest(token.trim());
        let found = app
            .config
            .api_tokens
            .iter()
            .find(|t| same_bytes(&t.sha256, &digest));
        return match found {
            Some(t) => Ok(Caller {
                user: User {
                    name: format!("token:{}", t.name),
                    role: t.role,
                },
                csrf: None,
                ip,
                user_agent: agent,
                origin: None,
                csrf_header: None,
            }),
            None => {
                tracing::warn!(%ip, "refused: unknown API token");
                Err(WebError::NotSignedIn {
                    next: path.to_owned(),
                })
            }
        };
    }
    let session = cookie(headers, SESSION_COOKIE)
        .and_then(|id| app.sessions.get(&id, u64::from(unix_now_u32())))
        .ok_or_else(|| WebError::NotSignedIn {
            next: path.to_owned(),
        })?;
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Ok(Caller {
        user: session.user,
        csrf: Some(session.csrf),
        ip,
        user_agent: agent,
        origin: text(header::ORIGIN),
        csrf_header: text(header::HeaderName::from_static("x-csrf-token")).map(Secret::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-doorwatch_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }
}

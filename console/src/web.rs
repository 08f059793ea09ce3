//! The console's HTTP side: routes, sign-in and sign-out, the checks on
//! every request (session or bearer token, role, CSRF on every change),
//! security headers on every response, the pages and `/api/v1`.
//!
//! Errors shown to users are generic; the details go to the log under a
//! reference the page shows.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Json, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use doorwatch_store::{AuditRow, Store, StoreError, TriageRow, triage_state};
use maud::Markup;
use serde::Deserialize;

use crate::auth::{
    LoginLimiter, PendingLogin, Role, Session, Sessions, User, password_matches, random_token,
    same_bytes, same_secret, token_digest,
};
use crate::config::ValidConfig;
use crate::data::{self, CSV_ROWS, PAGE_ROWS, SearchForm, unix_now};
use crate::oidc::Oidc;
use crate::views::{self, PageContext};

/// Audit entries per page.
pub const AUDIT_ROWS: u64 = 100;
/// Longest triage note kept.
const MAX_NOTE: usize = 2000;

const SESSION_COOKIE: &str = "__Host-doorwatch_session";
const BROWSER_COOKIE: &str = "__Host-doorwatch_browser";

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    pub config: ValidConfig,
    pub store: Store,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
    pub oidc: Option<Oidc>,
    /// The overview's 24-hour aggregates, refreshed in the background.
    pub aggregates: data::AggregatesCache,
}

type Shared = Arc<App>;

/// The console's routes.
pub fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route("/login", get(login_page))
        .route("/login/local", post(local_login))
        .route("/auth/start", get(auth_start))
        .route("/auth/callback", get(auth_callback))
        .route("/logout", post(logout))
        .route("/campaigns", get(campaigns_page))
        .route("/campaigns/{id}", get(campaign_page))
        .route("/campaigns/{id}/triage", post(triage_form))
        .route("/hosts/{id}", get(host_page))
        .route("/sources/{ip}", get(source_page))
        .route("/search", get(search_page))
        .route("/search.csv", get(search_csv))
        .route("/agents", get(agents_page))
        .route("/agents/{id}/revoke", post(revoke_form))
        .route("/agents/tokens", post(create_token_form))
        .route("/agents/tokens/{id}/revoke", post(revoke_token_form))
        .route("/audit", get(audit_page))
        .route("/static/console.css", get(stylesheet))
        .route("/api/v1/overview", get(api_overview))
        .route("/api/v1/campaigns", get(api_campaigns))
        .route("/api/v1/campaigns/{id}", get(api_campaign))
        .route("/api/v1/campaigns/{id}/triage", post(api_triage))
        .route("/api/v1/hosts/{id}", get(api_host))
        .route("/api/v1/sources/{ip}", get(api_source))
        .route("/api/v1/events", get(api_events))
        .route("/api/v1/agents", get(api_agents))
        .route("/api/v1/audit", get(api_audit))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            security_headers,
        ))
        .with_state(app)
}

/// Headers on every response: a strict CSP, no framing, no sniffing, no
/// referrer, no caching of pages with campus data, HSTS over HTTPS.
async fn security_headers(
    State(app): State<Shared>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(
        app.config.oidc.as_ref().map(|o| o.issuer.as_str()),
    )) {
        h.insert("content-security-policy", csp);
    }
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cross-origin-opener-policy", "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    if app.config.https {
        set(h, "strict-transport-security", "max-age=31536000");
    }
    response
}

/// The policy: nothing but this console's own stylesheet, images and
/// forms. Signing out sends the form on to the IdP's logout page, so its
/// origin may receive forms too.
pub fn content_security_policy(issuer: Option<&str>) -> String {
    let idp = issuer
        .and_then(|url| {
            let (scheme, rest) = url.split_once("://")?;
            let host = rest.split('/').next()?;
            Some(format!(" {scheme}://{host}"))
        })
        .unwrap_or_default();
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'{idp}; \
         frame-ancestors 'none'; base-uri 'none'"
    )
}

/// What went wrong, for the page or the API.
#[derive(Debug)]
pub enum WebError {
    /// No session: pages redirect to sign-in, the API answers 401.
    NotSignedIn {
        next: String,
    },
    Forbidden,
    NotFound,
    BadRequest(String),
    /// A change without a valid CSRF token, or from another origin.
    Csrf,
    TooManyAttempts,
    Store(StoreError),
    Internal(String),
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// A failure rendered as a page.
#[derive(Debug)]
pub struct PageError(WebError);

/// A failure rendered as JSON.
#[derive(Debug)]
pub struct ApiError(WebError);

impl From<WebError> for PageError {
    fn from(e: WebError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        Self(e.into())
    }
}

impl From<WebError> for ApiError {
    fn from(e: WebError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self(e.into())
    }
}

impl WebError {
    /// Status, title and user-facing message; server faults are logged
    /// here with a reference.
    fn describe(&self) -> (StatusCode, &'static str, String, Option<String>) {
        match self {
            Self::NotSignedIn { .. } => (
                StatusCode::UNAUTHORIZED,
                "Sign in first",
                "Sign in to use the console.".into(),
                None,
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                "Your role does not allow this.".into(),
                None,
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here.".into(),
                None,
            ),
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, "Bad request", why.clone(), None),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "Request refused",
                "This form has expired or did not come from the console. Reload the page and try again.".into(),
                None,
            ),
            Self::TooManyAttempts => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                "Too many failed sign-ins. Wait a few minutes.".into(),
                None,
            ),
            Self::Store(e) => {
                let reference = random_token()[..12].to_owned();
                tracing::error!(reference, error = %e, "clickhouse request failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Data unavailable",
                    "The event database did not answer. Try again in a minute.".into(),
                    Some(reference),
                )
            }
            Self::Internal(detail) => {
                let reference = random_token()[..12].to_owned();
                tracing::error!(reference, error = %detail, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The console could not do this.".into(),
                    Some(reference),
                )
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let WebError::NotSignedIn { next } = &self.0 {
            return Redirect::to(&format!("/login?next={}", views::urlencode(next)))
                .into_response();
        }
        let (status, title, message, reference) = self.0.describe();
        (
            status,
            views::error_page(title, &message, reference.as_deref()),
        )
            .into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, message, reference) = self.0.describe();
        (
            status,
            Json(serde_json::json!({ "error": message, "reference": reference })),
        )
            .into_response()
    }
}

/// Who is asking, and from where.
#[derive(Debug, Clone)]
struct Caller {
    user: User,
    /// The session's CSRF token; `None` for bearer tokens (no ambient
    /// credentials, so nothing to forge).
    csrf: Option<String>,
    ip: IpAddr,
    user_agent: String,
    /// The request's `Origin` and `X-CSRF-Token` headers, for changes.
    origin: Option<String>,
    csrf_header: Option<String>,
}

/// A signed-in caller of a page; without one, the page redirects to
/// sign-in.
#[derive(Debug)]
struct PageCaller(Caller);

/// A caller of `/api/v1`; without one, 401.
#[derive(Debug)]
struct ApiCaller(Caller);

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
fn resolve_caller(parts: &axum::http::request::Parts, app: &App) -> Result<Caller, WebError> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .ok_or_else(|| WebError::Internal("no peer address on the request".into()))?;
    let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    caller(app, &parts.headers, peer, next)
}

impl Caller {
    fn page(&self) -> PageContext {
        PageContext {
            user: self.user.clone(),
            csrf: self.csrf.clone().unwrap_or_default(),
        }
    }

    fn require(&self, role: Role) -> Result<(), WebError> {
        if self.user.role >= role {
            Ok(())
        } else {
            tracing::warn!(user = %self.user.name, role = self.user.role.label(), needed = role.label(), "refused: role too low");
            Err(WebError::Forbidden)
        }
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age.map_or(String::new(), |a| format!("; Max-Age={a}"));
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; Secure; SameSite=Lax{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

/// The caller from the session cookie or a bearer token.
fn caller(
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
        .and_then(|id| app.sessions.get(&id, u64::from(unix_now())))
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
        csrf_header: text(header::HeaderName::from_static("x-csrf-token")),
    })
}

/// A change from a session must carry its CSRF token and, if the browser
/// says where it comes from, come from this console.
fn check_csrf(app: &App, caller: &Caller, sent: Option<&str>) -> Result<(), WebError> {
    let Some(expected) = &caller.csrf else {
        return Ok(());
    };
    if let Some(origin) = caller.origin.as_deref()
        && origin != "null"
        && !app.config.public_url.starts_with(origin)
    {
        tracing::warn!(user = %caller.user.name, origin, "refused: cross-origin change");
        return Err(WebError::Csrf);
    }
    let sent = sent
        .map(str::to_owned)
        .or_else(|| caller.csrf_header.clone())
        .unwrap_or_default();
    if sent.is_empty() || !same_secret(&sent, expected) {
        tracing::warn!(user = %caller.user.name, ip = %caller.ip, "refused: missing or wrong CSRF token");
        return Err(WebError::Csrf);
    }
    Ok(())
}

/// Records a change; the change goes ahead only once this succeeded.
async fn audit(
    app: &App,
    caller: &Caller,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), WebError> {
    audit_as(
        app,
        &caller.user,
        caller.ip,
        &caller.user_agent,
        action,
        target,
        detail,
    )
    .await
}

async fn audit_as(
    app: &App,
    user: &User,
    ip: IpAddr,
    agent: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), WebError> {
    let row = AuditRow {
        audit_id: uuid::Uuid::now_v7(),
        at: unix_now(),
        actor: user.name.clone(),
        role: user.role.label().to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail: detail.chars().take(MAX_NOTE).collect(),
        source_ip: ip.to_string(),
        user_agent: agent.to_owned(),
    };
    tracing::info!(actor = %row.actor, action, target, ip = %ip, "audit");
    app.store.insert_audit(&row).await.map_err(WebError::from)
}

fn html(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        views::CSS,
    )
        .into_response()
}

async fn not_found() -> PageError {
    PageError(WebError::NotFound)
}

// ---- sign-in ----

#[derive(Debug, Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    error: String,
}

/// Only paths on this console are followed after sign-in.
fn safe_next(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

async fn login_page(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let browser = cookie(&headers, BROWSER_COOKIE).unwrap_or_else(random_token);
    let error = match q.error.as_str() {
        "" => None,
        "failed" => {
            Some("Sign-in failed. Try again, or ask your administrator if it keeps failing.")
        }
        "password" => Some("Wrong user name or password."),
        _ => Some("Sign-in failed."),
    };
    let page = views::login(
        app.oidc.is_some(),
        app.config.local_admin.is_some(),
        &browser,
        &safe_next(&q.next),
        error,
    );
    let mut response = html(page);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(BROWSER_COOKIE, &browser, Some(3600)),
    );
    response
}

async fn auth_start(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Result<Response, PageError> {
    let oidc = app.oidc.as_ref().ok_or(WebError::NotFound)?;
    let start = oidc
        .start()
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let browser = cookie(&headers, BROWSER_COOKIE).unwrap_or_else(random_token);
    app.sessions.add_pending(
        start.state,
        PendingLogin::new(
            start.pkce_verifier,
            start.nonce,
            browser.clone(),
            safe_next(&q.next),
            u64::from(unix_now()),
        ),
    );
    let mut response = Redirect::to(&start.url).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(BROWSER_COOKIE, &browser, Some(3600)),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn auth_callback(
    State(app): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, PageError> {
    let oidc = app.oidc.as_ref().ok_or(WebError::NotFound)?;
    let ip = peer.ip();
    let agent = user_agent(&headers);
    let refuse = |why: &str| {
        tracing::warn!(%ip, reason = why, "sign-in refused");
        Redirect::to("/login?error=failed").into_response()
    };
    if let Some(error) = &q.error {
        return Ok(refuse(&format!("the identity provider said {error}")));
    }
    let (Some(code), Some(state)) = (&q.code, &q.state) else {
        return Ok(refuse("callback without code or state"));
    };
    let Some(pending) = app.sessions.take_pending(state, u64::from(unix_now())) else {
        return Ok(refuse("unknown, used or expired state"));
    };
    let browser = cookie(&headers, BROWSER_COOKIE).unwrap_or_default();
    if !same_secret(&browser, &pending.browser) {
        return Ok(refuse(
            "the callback came to another browser than the one that started",
        ));
    }
    let signed_in = match oidc
        .finish(code, &pending.nonce, &pending.pkce_verifier)
        .await
    {
        Ok(s) => s,
        Err(e) => return Ok(refuse(&e.to_string())),
    };
    audit_as(
        &app,
        &signed_in.user,
        ip,
        &agent,
        "login",
        "",
        "campus sign-in",
    )
    .await?;
    tracing::info!(user = %signed_in.user.name, role = signed_in.user.role.label(), %ip, "signed in");
    let id = app.sessions.create(
        signed_in.user,
        Some(signed_in.id_token),
        u64::from(unix_now()),
    );
    let mut response = Redirect::to(&pending.return_to).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &id, None));
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct LocalLogin {
    username: String,
    password: String,
    #[serde(default)]
    browser: String,
    #[serde(default)]
    next: String,
}

async fn local_login(
    State(app): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LocalLogin>,
) -> Result<Response, PageError> {
    let Some((name, hash)) = &app.config.local_admin else {
        return Err(WebError::NotFound.into());
    };
    // The form must come from a page this browser got from us.
    let browser = cookie(&headers, BROWSER_COOKIE).unwrap_or_default();
    if browser.is_empty() || !same_secret(&browser, &form.browser) {
        tracing::warn!(ip = %peer.ip(), "refused: local sign-in without the browser token");
        return Err(WebError::Csrf.into());
    }
    let now = u64::from(unix_now());
    let ip = peer.ip();
    if !app.limiter.allowed(ip, &form.username, now) {
        tracing::warn!(%ip, username = %form.username, "local sign-in rate-limited");
        return Err(WebError::TooManyAttempts.into());
    }
    let user = User {
        name: format!("local:{}", form.username),
        role: Role::Admin,
    };
    // Verify the hash even for a wrong name, so timing does not tell
    // which names exist.
    let password_ok = password_matches(hash, &form.password);
    if form.username != *name || !password_ok {
        app.limiter.failed(ip, &form.username, now);
        audit_as(
            &app,
            &user,
            ip,
            &user_agent(&headers),
            "login.failed",
            "",
            "local admin",
        )
        .await?;
        return Ok(Redirect::to("/login?error=password").into_response());
    }
    audit_as(
        &app,
        &user,
        ip,
        &user_agent(&headers),
        "login",
        "",
        "local admin",
    )
    .await?;
    let id = app.sessions.create(user, None, now);
    let mut response = Redirect::to(&safe_next(&form.next)).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &id, None));
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    check_csrf(&app, &caller, Some(&form.csrf))?;
    let session: Option<Session> =
        cookie(&headers, SESSION_COOKIE).and_then(|id| app.sessions.remove(&id));
    audit(&app, &caller, "logout", "", "").await?;
    let after = format!("{}/login", app.config.public_url);
    let target = match (&app.oidc, session.and_then(|s| s.id_token)) {
        (Some(oidc), Some(token)) => oidc.logout_url(Some(&token), &after).await.unwrap_or(after),
        _ => after,
    };
    let mut response = Redirect::to(&target).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0)));
    Ok(response)
}

// ---- pages ----

async fn overview_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
) -> Result<Response, PageError> {
    let o = data::overview(&app.store, &app.aggregates).await?;
    Ok(html(views::overview(&caller.page(), &o)))
}

async fn campaigns_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
) -> Result<Response, PageError> {
    let list = data::campaigns(&app.store, 30).await?;
    Ok(html(views::campaigns(&caller.page(), &list)))
}

fn campaign_id(text: &str) -> Result<uuid::Uuid, WebError> {
    uuid::Uuid::parse_str(text).map_err(|_| WebError::NotFound)
}

async fn campaign_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = campaign_id(&id)?;
    let detail = data::campaign(&app.store, id)
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(html(views::campaign(&caller.page(), &detail)))
}

#[derive(Debug, Deserialize)]
struct TriageForm {
    #[serde(default)]
    csrf: String,
    state: String,
    #[serde(default)]
    note: String,
}

/// Validates and records a triage change (audit first).
async fn triage(
    app: &App,
    caller: &Caller,
    id: uuid::Uuid,
    state: &str,
    note: &str,
) -> Result<(), WebError> {
    caller.require(Role::Analyst)?;
    let state = triage_state::parse(state).ok_or_else(|| {
        WebError::BadRequest("state must be new, acknowledged, resolved or false_positive".into())
    })?;
    if note.len() > MAX_NOTE {
        return Err(WebError::BadRequest(format!(
            "the note is over {MAX_NOTE} bytes"
        )));
    }
    if app.store.campaigns_by_id(&[id]).await?.is_empty() {
        return Err(WebError::NotFound);
    }
    audit(
        app,
        caller,
        "campaign.triage",
        &id.to_string(),
        &format!("{}: {note}", triage_state::label(state)),
    )
    .await?;
    app.store
        .insert_triage(&TriageRow {
            campaign_id: id,
            state,
            note: note.to_owned(),
            actor: caller.user.name.clone(),
            at: unix_now(),
        })
        .await?;
    Ok(())
}

async fn triage_form(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
    Form(form): Form<TriageForm>,
) -> Result<Response, PageError> {
    check_csrf(&app, &caller, Some(&form.csrf))?;
    let id = campaign_id(&id)?;
    triage(&app, &caller, id, &form.state, &form.note).await?;
    Ok(Redirect::to(&format!("/campaigns/{id}")).into_response())
}

async fn host_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let view = data::host(&app.store, &id).await?;
    Ok(html(views::host(&caller.page(), &view)))
}

fn address(text: &str) -> Result<IpAddr, WebError> {
    text.parse()
        .map_err(|_| WebError::BadRequest("not an IP address".into()))
}

async fn source_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Path(ip): Path<String>,
) -> Result<Response, PageError> {
    let view = data::source(&app.store, address(&ip)?).await?;
    Ok(html(views::source(&caller.page(), &view)))
}

async fn search_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Query(form): Query<SearchForm>,
) -> Result<Response, PageError> {
    let page = match form.to_search(PAGE_ROWS) {
        Ok(search) => {
            let result = data::search(&app.store, &search).await?;
            views::search(&caller.page(), &form, Some(&result), None)
        }
        Err(bad) => views::search(&caller.page(), &form, None, Some(&bad.0)),
    };
    Ok(html(page))
}

/// A CSV field, quoted, with formula-looking values defused for
/// spreadsheets.
fn csv_field(text: &str) -> String {
    let defused = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

async fn search_csv(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Query(form): Query<SearchForm>,
) -> Result<Response, PageError> {
    let mut search = form
        .to_search(CSV_ROWS)
        .map_err(|bad| WebError::BadRequest(bad.0))?;
    search.offset = 0;
    let result = data::search(&app.store, &search).await?;
    tracing::info!(user = %caller.user.name, rows = result.episodes.len(), "csv export");
    let mut out = String::from(
        "last_seen,first_seen,source,pc,target,scan_types,ports_probed,open_ports,severity,explanation\n",
    );
    for e in &result.episodes {
        let fields = [
            views::when(e.last_seen),
            views::when(e.first_seen),
            e.scanner.clone(),
            e.agent_id.clone(),
            e.target.clone(),
            e.scan_types.join(" "),
            e.ports_probed.to_string(),
            e.open_ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            e.severity.to_owned(),
            e.explanation.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"doorwatch-scans.csv\"",
            ),
        ],
        out,
    )
        .into_response())
}

async fn agents_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
) -> Result<Response, PageError> {
    caller.require(Role::Admin)?;
    let view = data::agents(&app.store).await?;
    Ok(html(views::agents(&caller.page(), &view)))
}

async fn revoke_form(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    check_csrf(&app, &caller, Some(&form.csrf))?;
    caller.require(Role::Admin)?;
    if id.is_empty() || id.len() > 128 {
        return Err(WebError::BadRequest("not an agent id".into()).into());
    }
    audit(&app, &caller, "agent.revoke", &id, "").await?;
    app.store
        .insert_revocation(&doorwatch_store::RevocationRow {
            agent_id: id,
            revoked_at: unix_now(),
            reason: "revoked in the console".into(),
            revoked_by: caller.user.name.clone(),
        })
        .await?;
    Ok(Redirect::to("/agents").into_response())
}

#[derive(Debug, Deserialize)]
struct NewTokenForm {
    #[serde(default)]
    csrf: String,
    group: String,
    days: String,
    max_uses: String,
}

/// Longest a token may be valid, and most PCs one may enroll.
const MAX_TOKEN_DAYS: u32 = 90;
const MAX_TOKEN_USES: u32 = 100_000;

async fn create_token_form(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Form(form): Form<NewTokenForm>,
) -> Result<Response, PageError> {
    check_csrf(&app, &caller, Some(&form.csrf))?;
    caller.require(Role::Admin)?;
    let group = form.group.trim();
    if group.is_empty()
        || group.len() > 128
        || !group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(WebError::BadRequest("group: 1 to 128 of A-Z a-z 0-9 . _ -".into()).into());
    }
    let days: u32 = form
        .days
        .trim()
        .parse()
        .ok()
        .filter(|d| (1..=MAX_TOKEN_DAYS).contains(d))
        .ok_or_else(|| WebError::BadRequest(format!("valid for: 1 to {MAX_TOKEN_DAYS} days")))?;
    let max_uses: u32 = form
        .max_uses
        .trim()
        .parse()
        .ok()
        .filter(|u| (1..=MAX_TOKEN_USES).contains(u))
        .ok_or_else(|| WebError::BadRequest(format!("PCs: 1 to {MAX_TOKEN_USES}")))?;
    let token =
        doorwatch_store::Token::generate().map_err(|e| WebError::Internal(e.to_string()))?;
    let now = unix_now();
    let expires_at = now.saturating_add(days * 86_400);
    audit(
        &app,
        &caller,
        "token.create",
        &token.id,
        &format!("group {group}, {max_uses} PCs, {days} days"),
    )
    .await?;
    app.store
        .insert_token(&doorwatch_store::TokenRow {
            token_id: token.id.clone(),
            secret_sha256: token.secret_sha256(),
            agent_group: group.to_owned(),
            created_at: now,
            expires_at,
            max_uses,
            revoked: 0,
            revoked_at: 0,
            changed_by: caller.user.name.clone(),
            version: 1,
        })
        .await?;
    Ok(html(views::new_token(
        &caller.page(),
        &token.reveal(),
        group,
        max_uses,
        expires_at,
    )))
}

async fn revoke_token_form(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    check_csrf(&app, &caller, Some(&form.csrf))?;
    caller.require(Role::Admin)?;
    let found = app.store.token(&id).await?.ok_or(WebError::NotFound)?;
    audit(&app, &caller, "token.revoke", &id, "").await?;
    let mut row = found.token;
    row.revoked = 1;
    row.revoked_at = unix_now();
    row.changed_by = caller.user.name.clone();
    row.version += 1;
    app.store.insert_token(&row).await?;
    Ok(Redirect::to("/agents").into_response())
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: u64,
}

async fn audit_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    caller.require(Role::Admin)?;
    let rows = app
        .store
        .audit_log(q.page.saturating_mul(AUDIT_ROWS), AUDIT_ROWS)
        .await?;
    Ok(html(views::audit(&caller.page(), &rows, q.page)))
}

// ---- /api/v1 ----

fn json<T: serde::Serialize>(value: &T) -> Response {
    Json(value).into_response()
}

async fn api_overview(State(app): State<Shared>, _: ApiCaller) -> Result<Response, ApiError> {
    Ok(json(&data::overview(&app.store, &app.aggregates).await?))
}

async fn api_campaigns(State(app): State<Shared>, _: ApiCaller) -> Result<Response, ApiError> {
    Ok(json(&data::campaigns(&app.store, 30).await?))
}

async fn api_campaign(
    State(app): State<Shared>,
    _: ApiCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let detail = data::campaign(&app.store, campaign_id(&id)?)
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(json(&detail))
}

#[derive(Debug, Deserialize)]
struct TriageBody {
    state: String,
    #[serde(default)]
    note: String,
}

async fn api_triage(
    State(app): State<Shared>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
    Json(body): Json<TriageBody>,
) -> Result<Response, ApiError> {
    check_csrf(&app, &caller, None)?;
    let id = campaign_id(&id)?;
    triage(&app, &caller, id, &body.state, &body.note).await?;
    Ok(json(
        &serde_json::json!({ "campaign_id": id.to_string(), "state": body.state }),
    ))
}

async fn api_host(
    State(app): State<Shared>,
    _: ApiCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(&data::host(&app.store, &id).await?))
}

async fn api_source(
    State(app): State<Shared>,
    _: ApiCaller,
    Path(ip): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(&data::source(&app.store, address(&ip)?).await?))
}

async fn api_events(
    State(app): State<Shared>,
    _: ApiCaller,
    Query(form): Query<SearchForm>,
) -> Result<Response, ApiError> {
    let search = form
        .to_search(PAGE_ROWS)
        .map_err(|bad| WebError::BadRequest(bad.0))?;
    Ok(json(&data::search(&app.store, &search).await?))
}

async fn api_agents(
    State(app): State<Shared>,
    ApiCaller(caller): ApiCaller,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    Ok(json(&data::agents(&app.store).await?))
}

async fn api_audit(
    State(app): State<Shared>,
    ApiCaller(caller): ApiCaller,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let rows = app
        .store
        .audit_log(q.page.saturating_mul(AUDIT_ROWS), AUDIT_ROWS)
        .await?;
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "at": r.at, "actor": r.actor, "role": r.role, "action": r.action,
                "target": r.target, "detail": r.detail, "source_ip": r.source_ip,
            })
        })
        .collect();
    Ok(json(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/campaigns/1"), "/campaigns/1");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
    }

    #[test]
    fn forms_may_go_to_the_idp_and_nowhere_else() {
        let csp = content_security_policy(Some("https://idp.campus.example/realms/campus"));
        assert!(
            csp.contains("form-action 'self' https://idp.campus.example;"),
            "{csp}"
        );
        assert!(content_security_policy(None).contains("form-action 'self';"));
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("a \"b\", c"), "\"a \"\"b\"\", c\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
    }

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

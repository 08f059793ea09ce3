//! Signing in and out: the login page, the OIDC start and callback, the
//! local break-glass admin, logout (also at the IdP), and the rule that
//! only local paths are followed afterwards. It must not serve data pages.

use doorwatch_process::secret::Secret;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use doorwatch_process::clock::unix_now_u32;
use doorwatch_process::text;
use serde::Deserialize;

use super::audit::{audit, audit_as, audit_refused_sign_in};
use super::caller::{BROWSER_COOKIE, PageCaller, SESSION_COOKIE, cookie, set_cookie, user_agent};
use super::csrf::check_csrf;
use super::errors::{PageError, WebError};
use super::params::CsrfForm;
use super::respond::html;
use super::state::Shared;
use crate::auth::{PendingLogin, Role, Session, User, random_token, same_secret};
use crate::views;

#[derive(Debug, Deserialize)]
pub(super) struct NextQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    error: String,
}

/// The longest user name typed at the local sign-in that is logged.
const MAX_TYPED_NAME: usize = 64;

/// The longest `next` path followed after sign-in.
const MAX_NEXT_LEN: usize = 2048;

/// Only paths on this console are followed after sign-in. Browsers drop
/// TAB, CR and LF anywhere in a URL and read `\\` as `/`, so
/// `/<TAB>/evil.example` would become `//evil.example`: any control
/// character or backslash sends the user to `/` instead. That also keeps
/// the `Location` header valid, so a redirect cannot fail after the
/// session was written.
pub(super) fn safe_next(next: &str) -> String {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= MAX_NEXT_LEN
        && !next
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace());
    if local {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

pub(super) async fn login_page(
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

pub(super) async fn auth_start(
    State(app): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Result<Response, PageError> {
    let oidc = app.oidc.as_ref().ok_or(WebError::NotFound)?;
    let start = oidc
        .start()
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let browser = cookie(&headers, BROWSER_COOKIE).unwrap_or_else(random_token);
    app.sessions
        .add_pending(
            start.state.expose().to_owned(),
            peer.ip(),
            PendingLogin::new(
                start.pkce_verifier,
                start.nonce,
                browser.clone().into(),
                safe_next(&q.next),
                u64::from(unix_now_u32()),
            ),
        )
        .map_err(|_| {
            tracing::warn!(ip = %peer.ip(), "sign-in refused: too many sign-ins in progress");
            WebError::TooManyAttempts
        })?;
    let mut response = Redirect::to(&start.url).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(BROWSER_COOKIE, &browser, Some(3600)),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(super) struct CallbackQuery {
    code: Option<Secret>,
    state: Option<Secret>,
    error: Option<String>,
}

pub(super) async fn auth_callback(
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
        let error = text::printable_bounded(error, 200);
        return Ok(refuse(&format!("the identity provider said {error}")));
    }
    let (Some(code), Some(state)) = (&q.code, &q.state) else {
        return Ok(refuse("callback without code or state"));
    };
    let Some(pending) = app.sessions.take_pending(state, u64::from(unix_now_u32())) else {
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
        Err(e) => {
            // Refused campus sign-ins are audited, as local ones are.
            let who = e
                .user()
                .map_or_else(|| "unknown".to_owned(), |u| format!("oidc:{u}"));
            audit_refused_sign_in(&app, &who, ip, &agent, &e.to_string()).await?;
            return Ok(refuse(&e.to_string()));
        }
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
        u64::from(unix_now_u32()),
    );
    let mut response = Redirect::to(&pending.return_to).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &id, None));
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(super) struct LocalLogin {
    username: String,
    password: Secret,
    #[serde(default)]
    browser: String,
    #[serde(default)]
    next: String,
}

pub(super) async fn local_login(
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
    let now = u64::from(unix_now_u32());
    let ip = peer.ip();
    // What was typed, as it may be logged and audited.
    let typed = text::printable_bounded(&form.username, MAX_TYPED_NAME);
    // Counted from here, before the hash is checked.
    let attempt = match app.limiter.begin(ip, &form.username, now) {
        Ok(attempt) => attempt,
        Err(refusal) => {
            tracing::warn!(%ip, username = %typed, ?refusal, "local sign-in rate-limited");
            return Err(WebError::TooManyAttempts.into());
        }
    };
    let user = User {
        name: format!("local:{typed}"),
        role: Role::Admin,
    };
    // Verify the hash even for a wrong name, so timing does not tell
    // which names exist.
    let password_ok = app.limiter.check_password(hash, &form.password).await;
    if form.username != *name || !password_ok {
        drop(attempt);
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
    attempt.succeeded();
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

pub(super) async fn logout(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/campaigns/1"), "/campaigns/1");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
        for sneaky in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "/%0a\n",
        ] {
            assert_eq!(safe_next(sneaky), "/", "{sneaky:?}");
        }
        assert_eq!(safe_next(&format!("/{}", "a".repeat(MAX_NEXT_LEN))), "/");
        // Every path that passes makes a valid Location header.
        for next in ["/campaigns/1?q=a%20b", "/hosts/pc-1#top"] {
            let kept = safe_next(next);
            assert_eq!(kept, next);
            axum::http::HeaderValue::from_str(&kept).expect("a valid Location");
        }
    }
}

//! Admin changes made from the agents page: revoke an agent, create an
//! enrollment token, revoke a token. Each checks CSRF and the admin role
//! and is audited before it happens. It must not render data pages.

use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use doorwatch_process::clock::unix_now_u32;
use serde::Deserialize;

use super::audit::audit;
use super::caller::PageCaller;
use super::csrf::check_csrf;
use super::errors::{PageError, WebError};
use super::params::CsrfForm;
use super::respond::html;
use super::state::Shared;
use crate::auth::Role;
use crate::views;

pub(super) async fn revoke_form(
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
            revoked_at: unix_now_u32(),
            reason: "revoked in the console".into(),
            revoked_by: caller.user.name.clone(),
        })
        .await?;
    Ok(Redirect::to("/agents").into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct NewTokenForm {
    #[serde(default)]
    csrf: String,
    group: String,
    days: String,
    max_uses: String,
}

/// Longest a token may be valid, and most PCs one may enroll.
pub(super) const MAX_TOKEN_DAYS: u32 = 90;
pub(super) const MAX_TOKEN_USES: u32 = 100_000;

pub(super) async fn create_token_form(
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
    let now = unix_now_u32();
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

pub(super) async fn revoke_token_form(
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
    row.revoked_at = unix_now_u32();
    row.changed_by = caller.user.name.clone();
    row.version += 1;
    app.store.insert_token(&row).await?;
    Ok(Redirect::to("/agents").into_response())
}

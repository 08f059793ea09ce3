//! Admin changes made from the agents page: revoke an agent, create an
//! enrollment token, revoke a token. Each checks CSRF and the admin role
//! and is audited before it happens. It must not render data pages.

use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use doorwatch_process::clock::unix_now_u32;
use doorwatch_process::secret::Secret;
use doorwatch_store::rules::{self, RuleError};
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
    let row = rules::new_revocation(
        &id,
        "revoked in the console",
        &caller.user.name,
        unix_now_u32(),
    )
    .map_err(|e| WebError::BadRequest(e.to_string()))?;
    audit(
        &app,
        &caller,
        "agent.revoke",
        &row.agent_id,
        "and the bootstrap token it enrolled with, if still usable",
    )
    .await?;
    // The same rule as `doorwatch-collector agents revoke`.
    if let Some(token) = app.store.revoke_agent(&row, false).await? {
        tracing::info!(agent_id = %row.agent_id, token_id = %token.token.token_id, "the revoked agent's bootstrap token was revoked too");
    }
    Ok(Redirect::to("/agents").into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct NewTokenForm {
    #[serde(default)]
    csrf: Secret,
    group: String,
    days: String,
    max_uses: String,
}

/// The console's form limits, on top of the store's rules: longest a token
/// made here may be valid, and most PCs one may enroll.
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
    let now = unix_now_u32();
    let expires_at = now.saturating_add(days * 86_400);
    let (token, row) = rules::new_token(group, expires_at, max_uses, &caller.user.name, now)
        .map_err(|e| match e {
            RuleError::NoRandomness => WebError::Internal(e.to_string()),
            _ => WebError::BadRequest(e.to_string()),
        })?;
    audit(
        &app,
        &caller,
        "token.create",
        &token.id,
        &format!("group {group}, {max_uses} PCs, {days} days"),
    )
    .await?;
    app.store.insert_token(&row).await?;
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
    let row = rules::revoke_token(found.token, &caller.user.name, unix_now_u32());
    app.store.insert_token(&row).await?;
    Ok(Redirect::to("/agents").into_response())
}

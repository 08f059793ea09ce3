//! The audit log of changes: a change goes ahead only once its audit row
//! is stored. It must not decide whether a change is allowed.

use std::net::IpAddr;

use doorwatch_process::clock::unix_now_u32;
use doorwatch_store::AuditRow;

use super::caller::Caller;
use super::errors::WebError;
use super::state::App;
use crate::auth::User;

/// Longest triage note kept, and longest audit detail.
pub(super) const MAX_NOTE: usize = 2000;

/// Records a change; the change goes ahead only once this succeeded.
pub(super) async fn audit(
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

pub(super) async fn audit_as(
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
        at: unix_now_u32(),
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

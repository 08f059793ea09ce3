//! The audit log of changes: a change goes ahead only once its audit row
//! is stored. It must not decide whether a change is allowed.

use std::net::IpAddr;

use doorwatch_process::clock::unix_now_u32;
use doorwatch_process::text;
use doorwatch_store::AuditRow;

use super::caller::Caller;
use super::errors::WebError;
use super::state::App;
use crate::auth::User;

/// Longest triage note kept, and longest audit detail.
pub(super) const MAX_NOTE: usize = 2000;
/// The longest actor, target or user agent recorded.
const MAX_NAME: usize = 200;

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
    let row = audit_row(
        &user.name,
        user.role.label(),
        ip,
        agent,
        action,
        target,
        detail,
    );
    record(app, row).await
}

/// Records a campus sign-in the console refused (the IdP said who, but the
/// token was bad or mapped to no role): `name` is who the IdP said, or
/// "unknown"; the role column says "none".
pub(super) async fn audit_refused_sign_in(
    app: &App,
    name: &str,
    ip: IpAddr,
    agent: &str,
    why: &str,
) -> Result<(), WebError> {
    record(
        app,
        audit_row(name, "none", ip, agent, "login.refused", "", why),
    )
    .await
}

/// Logs one audit row and stores it.
async fn record(app: &App, row: AuditRow) -> Result<(), WebError> {
    tracing::info!(
        actor = %row.actor,
        action = %row.action,
        target = %row.target,
        ip = %row.source_ip,
        "audit"
    );
    app.store.insert_audit(&row).await.map_err(WebError::from)
}

/// One audit row. Names come from a sign-in form or an IdP, targets and
/// notes from staff, the user agent from the browser: all outside text,
/// so each is bounded and escaped before it is logged or stored.
fn audit_row(
    name: &str,
    role: &str,
    ip: IpAddr,
    agent: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> AuditRow {
    AuditRow {
        audit_id: uuid::Uuid::now_v7(),
        at: unix_now_u32(),
        actor: text::printable_bounded(name, MAX_NAME),
        role: role.to_owned(),
        action: action.to_owned(),
        target: text::printable_bounded(target, MAX_NAME),
        detail: text::printable_bounded(detail, MAX_NOTE),
        source_ip: ip.to_string(),
        user_agent: text::printable_bounded(agent, MAX_NAME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn typed_names_cannot_forge_lines_or_grow_the_audit_log() {
        let user = User {
            name: format!(
                "local:admin\n2026-12-03 INFO audit actor=boss{}",
                "x".repeat(10_000)
            ),
            role: Role::Admin,
        };
        let row = audit_row(
            &user.name,
            user.role.label(),
            IpAddr::from([127, 0, 0, 1]),
            "curl\r\n",
            "login.failed",
            "",
            "",
        );
        assert!(!row.actor.contains('\n'), "{}", row.actor);
        assert!(
            row.actor.starts_with("local:admin\\u{a}2026-12-03"),
            "{}",
            row.actor
        );
        assert!(
            row.actor.ends_with('…') && row.actor.chars().count() < 2 * MAX_NAME,
            "bounded: {}",
            row.actor
        );
        assert_eq!(row.user_agent, "curl\\u{d}\\u{a}");
    }
}

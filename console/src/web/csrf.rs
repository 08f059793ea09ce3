//! The CSRF and origin check on every change made from a session. Bearer
//! tokens carry no ambient credentials and pass. It must not decide roles.

use super::caller::Caller;
use super::errors::WebError;
use super::state::App;
use crate::auth::same_secret;

/// A change from a session must carry its CSRF token and, if the browser
/// says where it comes from, come from this console.
pub(super) fn check_csrf(app: &App, caller: &Caller, sent: Option<&str>) -> Result<(), WebError> {
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

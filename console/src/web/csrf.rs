//! The CSRF and origin check on every change made from a session. Bearer
//! tokens carry no ambient credentials and pass. It must not decide roles.

use super::caller::Caller;
use super::errors::WebError;
use super::state::App;
use crate::auth::same_secret;
use crate::config::origin_of;

/// A change from a session must carry its CSRF token and, if the browser
/// says where it comes from, come from this console.
pub(super) fn check_csrf(app: &App, caller: &Caller, sent: Option<&str>) -> Result<(), WebError> {
    let Some(expected) = &caller.csrf else {
        return Ok(());
    };
    if let Some(origin) = caller.origin.as_deref()
        && origin != "null"
        && !same_origin(origin, &app.config.public_origin)
    {
        tracing::warn!(user = %caller.user.name, origin, "refused: cross-origin change");
        return Err(WebError::Csrf);
    }
    let sent = sent.or(caller.csrf_header.as_deref()).unwrap_or_default();
    if sent.is_empty() || !same_secret(sent, expected) {
        tracing::warn!(user = %caller.user.name, ip = %caller.ip, "refused: missing or wrong CSRF token");
        return Err(WebError::Csrf);
    }
    Ok(())
}

/// Whether the `Origin` a browser sent is this console's: the whole
/// origin, parsed, never a prefix (`https://console.campus.edu.evil.example`
/// starts with `https://console.campus.edu`).
fn same_origin(sent: &str, public_origin: &str) -> bool {
    origin_of(sent).as_deref() == Some(public_origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_origin_is_this_console() {
        let ours = origin_of("https://console.campus.edu").expect("origin");
        assert!(same_origin("https://console.campus.edu", &ours));
        assert!(same_origin("https://CONSOLE.campus.edu:443", &ours));
        for other in [
            "https://console.campus.edu.evil.example",
            "https://console.campus.edu:8443",
            "http://console.campus.edu",
            "https://console.campus.ed",
            "https://console",
            "",
            "not a url",
        ] {
            assert!(!same_origin(other, &ours), "{other} passed as this console");
        }
        let with_port = origin_of("https://console.campus.edu:8443/doorwatch").expect("origin");
        assert!(same_origin("https://console.campus.edu:8443", &with_port));
    }
}

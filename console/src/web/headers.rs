//! Security headers on every response: the content security policy, no
//! framing, no sniffing, no referrer, no caching of campus data, HSTS over
//! HTTPS. It must not look at who is asking.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::state::Shared;

/// Headers on every response: a strict CSP, no framing, no sniffing, no
/// referrer, no caching of pages with campus data, HSTS over HTTPS.
pub(super) async fn security_headers(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_may_go_to_the_idp_and_nowhere_else() {
        let csp = content_security_policy(Some("https://idp.campus.example/realms/campus"));
        assert!(
            csp.contains("form-action 'self' https://idp.campus.example;"),
            "{csp}"
        );
        assert!(content_security_policy(None).contains("form-action 'self';"));
    }
}

//! The console's HTTP side, one file per concern: shared state
//! ([`state`]), security headers, error mapping, who is asking
//! ([`caller`]), CSRF, the audit log, sign-in and sign-out, the pages,
//! admin changes and `/api/v1`. This file only routes: it must not hold
//! handlers, and no file below imports it.
//!
//! Errors shown to users are generic; the details go to the log under a
//! reference the page shows.

mod admin;
mod api;
mod audit;
mod caller;
mod csrf;
mod errors;
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod pages;
mod params;
mod respond;
mod signin;
mod state;
mod triage;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

pub use errors::{ApiError, PageError, WebError};
pub use headers::content_security_policy;
pub use state::{App, Shared};

use admin::{create_token_form, revoke_form, revoke_token_form};
use api::{
    api_agents, api_audit, api_campaign, api_campaigns, api_events, api_host, api_overview,
    api_source, api_triage,
};
use headers::security_headers;
use pages::{
    agents_page, audit_page, campaign_page, campaigns_page, host_page, overview_page, search_csv,
    search_page, source_page, triage_form,
};
use respond::{not_found, stylesheet};
use signin::{auth_callback, auth_start, local_login, login_page, logout};

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

//! What can go wrong while answering a request ([`WebError`]) and how it
//! is shown: a generic page ([`PageError`]) or JSON ([`ApiError`]) with
//! the right HTTP status. Server faults are logged here under a reference
//! the user sees; details never reach the browser.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use doorwatch_store::StoreError;

use crate::auth::random_token;
use crate::views;

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
pub struct PageError(pub(super) WebError);

/// A failure rendered as JSON.
#[derive(Debug)]
pub struct ApiError(pub(super) WebError);

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
                "Too many sign-in attempts. Wait a few minutes.".into(),
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

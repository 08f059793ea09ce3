//! Small response builders the handlers share: HTML, JSON, the
//! stylesheet and the not-found page. They must not read requests.

use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::Markup;

use super::errors::{PageError, WebError};
use crate::views;

pub(super) fn html(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        views::CSS,
    )
        .into_response()
}

pub(super) async fn not_found() -> PageError {
    PageError(WebError::NotFound)
}

pub(super) fn json<T: serde::Serialize>(value: &T) -> Response {
    Json(value).into_response()
}

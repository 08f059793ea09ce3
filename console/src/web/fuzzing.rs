//! The entry point of the fuzz target `console_query` (`fuzz/`): one input
//! through every query and form parser the console's routes use, the way
//! axum hands them a request. Not an API: nothing in the console calls it.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::extract::{Form, FromRequest, Request};
use serde::de::DeserializeOwned;

use super::admin::NewTokenForm;
use super::pages::TriageForm;
use super::params::{CsrfForm, PageQuery, address, campaign_id};
use super::signin::{CallbackQuery, LocalLogin, NextQuery, safe_next};
use crate::data::{CSV_ROWS, PAGE_ROWS, SearchForm};

/// `bytes` as a form body (the same `application/x-www-form-urlencoded`
/// decoding axum's `Query` applies to a query string) into `T`.
fn form<T: DeserializeOwned + Send + 'static>(bytes: &[u8]) -> Option<T> {
    let request = Request::builder()
        .method("POST")
        .uri("/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(bytes.to_vec()))
        .ok()?;
    let future = pin!(Form::<T>::from_request(request, &()));
    // The whole body is in memory: the extractor never waits.
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(Form(value))) => Some(value),
        Poll::Ready(Err(_)) => None,
        Poll::Pending => panic!("a form body in memory made the extractor wait"),
    }
}

/// Parses and checks `bytes` as every form and query the console takes,
/// and as the path parameters and `next` targets; panics if a result breaks
/// a rule the console relies on.
#[doc(hidden)]
pub fn parse_forms(bytes: &[u8]) {
    if let Some(search) = form::<SearchForm>(bytes) {
        for limit in [PAGE_ROWS, CSV_ROWS] {
            if let Ok(search) = search.to_search(limit) {
                assert!(
                    search.since <= search.until,
                    "a search ends before it starts"
                );
                assert_eq!(search.limit, limit);
                assert!(search.port != Some(0), "port 0 passed the form");
            }
        }
    }
    let _ = form::<PageQuery>(bytes);
    let _ = form::<CsrfForm>(bytes);
    let _ = form::<TriageForm>(bytes);
    let _ = form::<NewTokenForm>(bytes);
    let _ = form::<NextQuery>(bytes);
    let _ = form::<LocalLogin>(bytes);
    let _ = form::<CallbackQuery>(bytes);
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let _ = campaign_id(text);
    let _ = address(text);
    let _ = doorwatch_store::TriageState::parse(text);
    let next = safe_next(text);
    assert!(
        next.starts_with('/') && !next.starts_with("//") && !next.contains('\\'),
        "safe_next let {next:?} through"
    );
}

//! `/api/v1`: the same data as the pages, as JSON, for scripts with a
//! bearer token (or a session). Changes check CSRF for sessions and the
//! role like the pages do. It must not render HTML.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::caller::ApiCaller;
use super::csrf::check_csrf;
use super::errors::{ApiError, WebError};
use super::params::{PageQuery, address, campaign_id};
use super::respond::json;
use super::state::Shared;
use super::triage::triage;
use crate::auth::Role;
use crate::data::{self, AUDIT_ROWS, PAGE_ROWS, SearchForm};

pub(super) async fn api_overview(
    State(app): State<Shared>,
    _: ApiCaller,
) -> Result<Response, ApiError> {
    Ok(json(&data::overview(&app.store, &app.aggregates).await?))
}

pub(super) async fn api_campaigns(
    State(app): State<Shared>,
    _: ApiCaller,
) -> Result<Response, ApiError> {
    Ok(json(&data::campaigns(&app.store, 30).await?))
}

pub(super) async fn api_campaign(
    State(app): State<Shared>,
    _: ApiCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let detail = data::campaign(&app.store, campaign_id(&id)?)
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(json(&detail))
}

#[derive(Debug, Deserialize)]
pub(super) struct TriageBody {
    state: String,
    #[serde(default)]
    note: String,
}

pub(super) async fn api_triage(
    State(app): State<Shared>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
    Json(body): Json<TriageBody>,
) -> Result<Response, ApiError> {
    check_csrf(&app, &caller, None)?;
    let id = campaign_id(&id)?;
    triage(&app, &caller, id, &body.state, &body.note).await?;
    Ok(json(
        &serde_json::json!({ "campaign_id": id.to_string(), "state": body.state }),
    ))
}

pub(super) async fn api_host(
    State(app): State<Shared>,
    _: ApiCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(&data::host(&app.store, &id).await?))
}

pub(super) async fn api_source(
    State(app): State<Shared>,
    _: ApiCaller,
    Path(ip): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(&data::source(&app.store, address(&ip)?).await?))
}

pub(super) async fn api_events(
    State(app): State<Shared>,
    _: ApiCaller,
    Query(form): Query<SearchForm>,
) -> Result<Response, ApiError> {
    let search = form
        .to_search(PAGE_ROWS)
        .map_err(|bad| WebError::BadRequest(bad.0))?;
    Ok(json(&data::search(&app.store, &search).await?))
}

pub(super) async fn api_agents(
    State(app): State<Shared>,
    ApiCaller(caller): ApiCaller,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    Ok(json(&data::agents(&app.store).await?))
}

pub(super) async fn api_audit(
    State(app): State<Shared>,
    ApiCaller(caller): ApiCaller,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let offset = crate::data::page_offset(q.page, AUDIT_ROWS).map_err(WebError::BadRequest)?;
    let rows = app.store.audit_log(offset, AUDIT_ROWS).await?;
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "at": r.at, "actor": r.actor, "role": r.role, "action": r.action,
                "target": r.target, "detail": r.detail, "source_ip": r.source_ip,
            })
        })
        .collect();
    Ok(json(&rows))
}

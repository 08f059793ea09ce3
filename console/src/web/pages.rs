//! The HTML pages staff read: overview, campaigns, hosts, sources,
//! search (and its CSV export), agents and the audit log, plus the triage
//! form. Each checks the caller's role, loads from `data` and renders with
//! `views`. Sign-in lives in `signin`, admin changes in `admin`.

use axum::extract::{Form, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use doorwatch_process::secret::Secret;
use serde::Deserialize;

use super::caller::PageCaller;
use super::csrf::check_csrf;
use super::errors::{PageError, WebError};
use super::params::{PageQuery, address, campaign_id};
use super::respond::html;
use super::state::Shared;
use super::triage::triage;
use crate::auth::Role;
use crate::data::{self, AUDIT_ROWS, CSV_ROWS, PAGE_ROWS, SearchForm};
use crate::views;

pub(super) async fn overview_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
) -> Result<Response, PageError> {
    let o = data::overview(&app.store, &app.aggregates).await?;
    Ok(html(views::overview(&caller.page(), &o)))
}

pub(super) async fn campaigns_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
) -> Result<Response, PageError> {
    let list = data::campaigns(&app.store, 30).await?;
    Ok(html(views::campaigns(&caller.page(), &list)))
}

pub(super) async fn campaign_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = campaign_id(&id)?;
    let detail = data::campaign(&app.store, id)
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(html(views::campaign(&caller.page(), &detail)))
}

#[derive(Debug, Deserialize)]
pub(super) struct TriageForm {
    #[serde(default)]
    csrf: Secret,
    state: String,
    #[serde(default)]
    note: String,
}

pub(super) async fn triage_form(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
    Form(form): Form<TriageForm>,
) -> Result<Response, PageError> {
    check_csrf(&app, &caller, Some(&form.csrf))?;
    let id = campaign_id(&id)?;
    triage(&app, &caller, id, &form.state, &form.note).await?;
    Ok(Redirect::to(&format!("/campaigns/{id}")).into_response())
}

pub(super) async fn host_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let view = data::host(&app.store, &id).await?;
    Ok(html(views::host(&caller.page(), &view)))
}

pub(super) async fn source_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Path(ip): Path<String>,
) -> Result<Response, PageError> {
    let view = data::source(&app.store, address(&ip)?).await?;
    Ok(html(views::source(&caller.page(), &view)))
}

pub(super) async fn search_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Query(form): Query<SearchForm>,
) -> Result<Response, PageError> {
    let page = match form.to_search(PAGE_ROWS) {
        Ok(search) => {
            let result = data::search(&app.store, &search).await?;
            views::search(&caller.page(), &form, Some(&result), None)
        }
        Err(bad) => views::search(&caller.page(), &form, None, Some(&bad.0)),
    };
    Ok(html(page))
}

/// A CSV field, quoted, with formula-looking values defused for
/// spreadsheets: a leading `= + - @`, and TAB or CR, which spreadsheets
/// skip before they look for a formula (OWASP's CSV injection list).
pub(super) fn csv_field(text: &str) -> String {
    let defused = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

pub(super) async fn search_csv(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Query(form): Query<SearchForm>,
) -> Result<Response, PageError> {
    let mut search = form
        .to_search(CSV_ROWS)
        .map_err(|bad| WebError::BadRequest(bad.0))?;
    search.offset = 0;
    let result = data::search(&app.store, &search).await?;
    tracing::info!(user = %caller.user.name, rows = result.episodes.len(), "csv export");
    let mut out = String::from(
        "last_seen,first_seen,source,pc,target,scan_types,ports_probed,open_ports,severity,explanation\n",
    );
    for e in &result.episodes {
        let fields = [
            views::when(e.last_seen),
            views::when(e.first_seen),
            e.scanner.clone(),
            e.agent_id.clone(),
            e.target.clone(),
            e.scan_types.join(" "),
            e.ports_probed.to_string(),
            e.open_ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            e.severity.to_owned(),
            e.explanation.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"doorwatch-scans.csv\"",
            ),
        ],
        out,
    )
        .into_response())
}

pub(super) async fn agents_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
) -> Result<Response, PageError> {
    caller.require(Role::Admin)?;
    let view = data::agents(&app.store).await?;
    Ok(html(views::agents(&caller.page(), &view)))
}

pub(super) async fn audit_page(
    State(app): State<Shared>,
    PageCaller(caller): PageCaller,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    caller.require(Role::Admin)?;
    let offset = crate::data::page_offset(q.page, AUDIT_ROWS).map_err(WebError::BadRequest)?;
    let rows = app.store.audit_log(offset, AUDIT_ROWS).await?;
    Ok(html(views::audit(&caller.page(), &rows, q.page)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("a \"b\", c"), "\"a \"\"b\"\", c\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
        assert_eq!(csv_field("\t=1+1"), "\"'\t=1+1\"");
        assert_eq!(csv_field("\r=1+1"), "\"'\r=1+1\"");
    }
}

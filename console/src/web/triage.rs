//! The triage change, one rule for the page form and the API: the role,
//! the state, the note's length, the campaign's existence, audit first.
//! It must not render anything.

use doorwatch_process::clock::unix_now_u32;
use doorwatch_store::{TriageRow, TriageState};

use super::audit::{MAX_NOTE, audit};
use super::caller::Caller;
use super::errors::WebError;
use super::state::App;
use crate::auth::Role;

/// Validates and records a triage change (audit first).
pub(super) async fn triage(
    app: &App,
    caller: &Caller,
    id: uuid::Uuid,
    state: &str,
    note: &str,
) -> Result<(), WebError> {
    caller.require(Role::Analyst)?;
    let state = TriageState::parse(state).ok_or_else(|| {
        WebError::BadRequest("state must be new, acknowledged, resolved or false_positive".into())
    })?;
    if note.len() > MAX_NOTE {
        return Err(WebError::BadRequest(format!(
            "the note is over {MAX_NOTE} bytes"
        )));
    }
    if app.store.campaigns_by_id(&[id]).await?.is_empty() {
        return Err(WebError::NotFound);
    }
    audit(
        app,
        caller,
        "campaign.triage",
        &id.to_string(),
        &format!("{}: {note}", state.label()),
    )
    .await?;
    app.store
        .insert_triage(&TriageRow {
            campaign_id: id,
            state,
            note: note.to_owned(),
            actor: caller.user.name.clone(),
            at: unix_now_u32(),
        })
        .await?;
    Ok(())
}

//! Request parameters that pages, forms and the API share: campaign ids
//! and addresses in paths, the page number, and the CSRF-only form. Parsing
//! only; no state.

use doorwatch_process::secret::Secret;
use std::net::IpAddr;

use serde::Deserialize;

use super::errors::WebError;

pub(super) fn campaign_id(text: &str) -> Result<uuid::Uuid, WebError> {
    uuid::Uuid::parse_str(text).map_err(|_| WebError::NotFound)
}

pub(super) fn address(text: &str) -> Result<IpAddr, WebError> {
    text.parse()
        .map_err(|_| WebError::BadRequest("not an IP address".into()))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PageQuery {
    #[serde(default)]
    pub(super) page: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub(super) csrf: Secret,
}

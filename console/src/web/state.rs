//! The state every request handler shares: the validated config, the
//! store, sessions, the sign-in limiter, the OIDC client and the
//! overview's cache. It holds data only; it must not handle requests.

use std::sync::Arc;

use doorwatch_store::Store;

use crate::auth::{LoginLimiter, Sessions};
use crate::config::ValidConfig;
use crate::data;
use crate::oidc::Oidc;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    pub config: ValidConfig,
    pub store: Store,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
    pub oidc: Option<Oidc>,
    /// The overview's 24-hour aggregates, refreshed in the background.
    pub aggregates: data::AggregatesCache,
}

/// The state as handlers receive it.
pub type Shared = Arc<App>;

//! The admin console for campus security staff: campaigns, PCs, source
//! addresses, search, triage and the audit log, behind campus OIDC sign-in
//! with roles, and the same data as JSON under `/api/v1`.
//!
//! It reads and writes ClickHouse only through `doorwatch-store` and never
//! depends on capture or gRPC code. `main.rs` only parses the command line;
//! everything else is here, layered bottom-up (no module uses one above
//! it):
//!
//! - [`auth`]: roles, sessions, pending sign-ins, passwords, tokens.
//! - [`https`]: the TLS server config and the HTTPS accept loop.
//! - [`config`]: the TOML file, validated (pure), then its files read.
//! - [`oidc`]: the sign-in flow with the campus IdP.
//! - [`data`]: what each page shows, loaded from the store.
//! - [`views`]: the HTML.
//! - [`web`]: routes, checks, headers and handlers.
//! - [`app`]: builds and runs it all from a ready config; owns the tasks.

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod config;
pub mod data;
pub mod https;
pub mod oidc;
pub mod views;
pub mod web;

//! The admin console for campus security staff: campaigns, PCs, source
//! addresses, search, triage and the audit log, behind campus OIDC sign-in
//! with roles, and the same data as JSON under `/api/v1`.
//!
//! It reads and writes ClickHouse only through `doorwatch-store` and never
//! depends on capture or gRPC code.
//!
//! - [`config`]: the TOML file, validated at start.
//! - [`auth`]: roles, sessions, pending sign-ins, CSRF, passwords, tokens.
//! - [`oidc`]: the sign-in flow with the campus IdP.
//! - [`data`]: what each page shows, loaded from the store.
//! - [`views`]: the HTML.
//! - [`web`]: routes, checks and headers.

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod data;
pub mod oidc;
pub mod views;
pub mod web;

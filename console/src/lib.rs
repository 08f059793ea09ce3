//! The admin console for campus security staff: campaigns, hosts, sources,
//! search, triage and the audit log, behind campus OIDC sign-in.
//!
//! Not built yet. It will read ClickHouse only through `doorwatch-store` and
//! must never depend on capture or gRPC code.

#![forbid(unsafe_code)]

/// The store crate the console reads through, re-exported so the dependency
/// edge is explicit from the start.
pub use doorwatch_store as store;

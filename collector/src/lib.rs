//! The doorwatch collector: the server side of the agent stream, as a
//! library of subsystems; `main.rs` only parses the command line.
//!
//! - [`ingest`]: agent sessions, validation, rows and the shared batched
//!   INSERTs; a batch is acknowledged only once ClickHouse stored it.
//! - [`trust`]: mutual TLS, the agent identity taken from its certificate,
//!   revocation, and the campus PKI.
//! - [`enroll`]: bootstrap tokens to certificates, and renewal.
//! - [`campaigns`]: the correlator, alerts and the blocklist feed.
//! - [`policy`], [`retention`], [`lease`]: central settings, data
//!   lifetime, and jobs only one collector does at a time.
//! - [`cli`]: the admin commands; [`app`]: `serve`, which builds every
//!   subsystem from a validated [`config`] and owns the tasks it starts.

#![forbid(unsafe_code)]

pub mod app;
pub mod campaigns;
pub mod cli;
pub mod config;
pub mod enroll;
pub mod error;
pub mod ingest;
pub mod lease;
pub mod policy;
pub mod rate;
pub mod retention;
pub mod trust;

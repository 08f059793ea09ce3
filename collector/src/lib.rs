//! The doorwatch collector: the server side of the agent stream.
//!
//! It terminates mutual TLS (the agent's identity comes from its client
//! certificate, see [`identity`]), validates event batches, writes them to
//! ClickHouse through `doorwatch-store`, and acknowledges a batch only once
//! ClickHouse has accepted it. It enrolls agents and renews their
//! certificates ([`enroll`], signing with the issuing CA of [`pki`]), and
//! cuts off revoked agents ([`revocation`]).
//!
//! The binary in `main.rs` is a thin CLI over these modules.

#![forbid(unsafe_code)]

pub mod alert;
pub mod config;
pub mod correlate;
pub mod enroll;
pub mod error;
pub mod feed;
pub mod identity;
pub mod ingest;
pub mod lease;
mod outbound_rows;
pub mod pki;
pub mod policy;
pub mod report;
pub mod retention;
pub mod revocation;
pub mod tls;
pub mod writer;

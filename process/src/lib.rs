//! Process plumbing that every doorwatch binary needs, and nothing else:
//! the logging flags and their subscriber ([`logging`]), the error type of
//! configuration files ([`config`]), shutdown on SIGTERM or Ctrl-C
//! ([`shutdown`]), the wall clock ([`clock`]), retry backoff
//! ([`backoff`]), outside text made safe to log, print or store
//! ([`text`]), and secrets that never reach a log ([`secret`]).
//!
//! It must not know about packets, gRPC, ClickHouse or HTTP: a rule of the
//! product lives with the subsystem that owns it, not here.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod clock;
pub mod config;
pub mod logging;
pub mod secret;
pub mod shutdown;
pub mod text;

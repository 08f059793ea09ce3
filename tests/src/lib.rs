//! The simulated campus for end-to-end tests and the demo.
//!
//! It builds throwaway network namespaces (PCs, a scanner, an uplink to
//! the collector), starts a real ClickHouse server with its data in a
//! temporary folder, and runs the real `doorwatch-collector` and
//! `doorwatch-agent` binaries. Every piece is a guard that tears itself
//! down on drop, so a failing test still removes its namespaces and stops
//! its processes.
//!
//! Network rule: namespaces use 198.18.0.0/15 and fd00:d00::/64 only, and
//! get no default route, so nothing a scanner sends can leave them.
//!
//! [`mix`] makes realistic agent events for the load generator
//! (`doorwatch-loadgen`) and benchmarks; [`bulk`] fills a store with a
//! month of scanning for the large-store benchmarks.
//!
//! This crate never skips: a missing tool or privilege fails with a message
//! that says what to install (see [`require`]).

#![forbid(unsafe_code)]

pub mod bulk;
pub mod clickhouse;
pub mod cluster;
pub mod console;
pub mod dot_idp;
pub mod http;
pub mod loadgen;
pub mod mix;
pub mod netns;
pub mod oidc;
pub mod process;
pub mod receivers;
pub mod require;
pub mod stack;

//! The doorwatch wire contract (`doorwatch.v1`), generated from
//! `proto/doorwatch/v1/*.proto`.
//!
//! This crate owns only the generated types, their codec and a few
//! constants about the contract. It must not grow transport, TLS or storage code: both the agent
//! and the collector depend on it, and it depends on nothing of ours.

#![forbid(unsafe_code)]

pub mod codec;

/// Generated messages and services of package `doorwatch.v1`.
#[allow(clippy::all, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("doorwatch.v1");
}

/// The contract version this crate implements, sent in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest encoded message either side accepts (an `EventBatch` is the
/// largest message). Larger messages are refused with `RESOURCE_EXHAUSTED`.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Most events a single `EventBatch` may carry.
pub const MAX_EVENTS_PER_BATCH: usize = 1_000;

/// Most ports listed in `ScanDetected.port_sample`.
pub const MAX_PORT_SAMPLE: usize = 64;

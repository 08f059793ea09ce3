//! A source in probation: one first contact so far. Shared by the detector
//! (which keeps the table) and knock reporting (which reads entries); it
//! must not know about either.

use super::pair::{Answer, Contact};

/// A source in probation: one first contact so far.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probation {
    pub(super) first_seen_ms: u64,
    pub(super) last_seen_ms: u64,
    pub(super) probes: u32,
    pub(super) contact: Contact,
    /// This PC's answer to the contact, if one was seen.
    pub(super) answer: Option<Answer>,
    pub(super) seq: u64,
    /// Already reported as a knock.
    pub(super) knocked: bool,
    /// It completed a TCP handshake with this PC (see `handshake.rs`).
    pub(super) handshake_verified: bool,
}

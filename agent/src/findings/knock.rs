//! The report of knocks: single tries at closed ports by sources not
//! reported as scanners. Plain data; detection fills it.

use std::net::IpAddr;

/// Most knocks listed in one report.
pub const MAX_KNOCKS: usize = 256;
/// One source's try at one closed port of this PC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knock {
    pub source: IpAddr,
    pub target: IpAddr,
    pub port: u16,
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    /// This PC refused it; `false`: it went unanswered.
    pub refused: bool,
    pub probes: u32,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

/// The knocks of one reporting interval.
#[derive(Debug, Clone, PartialEq)]
pub struct KnockReport {
    /// Oldest first, at most [`MAX_KNOCKS`].
    pub knocks: Vec<Knock>,
    /// Knocks of the interval beyond [`MAX_KNOCKS`].
    pub unlisted: u64,
    pub explanation: String,
}

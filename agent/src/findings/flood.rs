//! The report of a flood: many new sources per second towards one
//! address of this PC. Plain data; detection fills it.

use std::net::IpAddr;

use super::scan::EpisodeState;

/// One report of a flood against one address of this PC.
#[derive(Debug, Clone, PartialEq)]
pub struct FloodReport {
    pub episode: u64,
    pub state: EpisodeState,
    pub target: IpAddr,
    /// Up to 16 targeted ports, ascending.
    pub ports: Vec<u16>,
    /// New source addresses seen while the flood lasted.
    pub sources: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub explanation: String,
}

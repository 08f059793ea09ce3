//! What a batch costs in memory once it is rows, known before any row is
//! built: the in-flight budget is taken in these bytes, not in the bytes
//! on the wire, which are many times fewer (a knock is ~30 bytes on the
//! wire and a row of ~150 bytes in memory).
//!
//! The estimate is an upper bound for the rows `rows_from_batch` builds:
//! each row's struct, plus every string as stored (control characters
//! escaped take up to [`ESCAPED_BYTES`] each) and every list's elements.

use std::mem::size_of;

use doorwatch_proto::v1::{self, EventBatch};
use doorwatch_store::{
    FloodEventRow, FlowMinuteRow, KnockEventRow, ListeningPortRow, OutboundAnomalyRow, ScanEventRow,
};

/// The most one batch may cost once decoded; more is refused. A real
/// agent's batch (at most 4 MiB on the wire, no control characters)
/// stays well under it: a full batch of knocks, the densest, is ~24 MiB.
pub const MAX_BATCH_DECODED_BYTES: usize = 64 << 20;

/// The most one unsafe character takes once escaped (`\u{10ffff}`).
const ESCAPED_BYTES: usize = 10;

/// A string's bytes once stored (escaped where it must be).
fn stored(text: &str) -> usize {
    let unsafe_chars = text
        .chars()
        .filter(|&c| doorwatch_process::text::is_unsafe(c))
        .count();
    text.len() + unsafe_chars * ESCAPED_BYTES
}

fn process(p: Option<&v1::ProcessInfo>) -> usize {
    p.map_or(0, |p| stored(&p.name) + stored(&p.exe) + stored(&p.user))
}

/// The memory the rows of `batch` take, with `agent_id` copied into each.
pub fn decoded_cost(batch: &EventBatch, agent_id: &str) -> usize {
    let id = agent_id.len();
    let mut bytes = 0usize;
    for event in &batch.events {
        let cost = match &event.detail {
            Some(v1::event::Detail::Scan(scan)) => {
                size_of::<ScanEventRow>()
                    + id
                    + stored(&scan.explanation)
                    + scan.scan_types.len() * (size_of::<String>() + 16)
                    + (scan.port_sample.len() + scan.open_ports.len() + scan.exposed.len()) * 2
                    + scan.companions.len() * 16
            }
            Some(v1::event::Detail::Flood(flood)) => {
                size_of::<FloodEventRow>() + id + stored(&flood.explanation) + flood.ports.len() * 2
            }
            // The explanation is shared by the event's knock rows.
            Some(v1::event::Detail::Knocks(knocks)) => {
                knocks.knocks.len() * (size_of::<KnockEventRow>() + id)
                    + stored(&knocks.explanation)
            }
            Some(v1::event::Detail::Flows(flows)) => flows
                .flows
                .iter()
                .map(|f| size_of::<FlowMinuteRow>() + id + process(f.process.as_ref()))
                .sum(),
            Some(v1::event::Detail::Outbound(anomaly)) => {
                size_of::<OutboundAnomalyRow>()
                    + id
                    + stored(&anomaly.explanation)
                    + process(anomaly.process.as_ref())
                    + anomaly.host_sample.len() * 16
                    + anomaly.port_sample.len() * 2
            }
            Some(v1::event::Detail::Listening(listening)) => {
                // An empty report is one row too.
                size_of::<ListeningPortRow>()
                    + id
                    + listening
                        .listeners
                        .iter()
                        .map(|l| {
                            size_of::<ListeningPortRow>()
                                + id
                                + stored(&l.risk)
                                + process(l.process.as_ref())
                        })
                        .sum::<usize>()
            }
            None => 0,
        };
        bytes = bytes.saturating_add(cost);
    }
    bytes
}

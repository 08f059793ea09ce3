//! Writes the seed corpora of `corpus/decode`, `corpus/pcap`,
//! `corpus/spool` and `corpus/batch` from the agent's real captures
//! (agent/tests/fixtures/*.pcap): frames as captured, the captures cut to
//! a few records, and the events the detector reports on them, as batches
//! and as spool segments. Run from fuzz/: `cargo run --example seed`.
//! The other corpora (config, console_query) are text files kept by hand.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use doorwatch_agent::detect::{Detector, DetectorConfig};
use doorwatch_agent::events::EventBuilder;
use doorwatch_agent::pipeline::TICK_MS;
use doorwatch_agent::{decode, pcap, spool};
use doorwatch_proto::v1::{self, EventBatch};
use prost::Message;

const CAPTURES: &[(&str, &[&str])] = &[
    ("nmap-mixed", &["198.18.0.10", "fd00:d00::10"]),
    ("tools-mixed", &["198.18.0.10"]),
];
/// Distinct frames kept per capture, and records per cut capture.
const FRAMES: usize = 60;
const RECORDS: usize = 24;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

/// Every report the detector makes on `bytes`, as `replay` drives it.
fn events(bytes: &[u8], local: &[&str]) -> Vec<v1::Event> {
    let local: Vec<IpAddr> = local.iter().map(|a| a.parse().expect("address")).collect();
    let mut detector = Detector::new(DetectorConfig::default(), local);
    let mut builder = EventBuilder::default();
    let mut out = Vec::new();
    let mut last_tick = 0;
    let mut now = 0;
    for record in pcap::Reader::new(bytes).expect("fixture").flatten() {
        now = record.unix_ms;
        if let Ok(Some(packet)) = decode::ethernet(record.data) {
            detector.observe(&packet, now);
        }
        if now.saturating_sub(last_tick) >= TICK_MS {
            last_tick = now;
            detector.tick(now);
            out.extend(detector.drain_reports().map(|r| builder.event(&r, now)));
        }
    }
    detector.finish();
    out.extend(detector.drain_reports().map(|r| builder.event(&r, now)));
    out
}

fn kind(event: &v1::Event) -> &'static str {
    match &event.detail {
        Some(v1::event::Detail::Scan(_)) => "scan",
        Some(v1::event::Detail::Flood(_)) => "flood",
        Some(v1::event::Detail::Knocks(_)) => "knocks",
        Some(v1::event::Detail::Flows(_)) => "flows",
        Some(v1::event::Detail::Outbound(_)) => "outbound",
        Some(v1::event::Detail::Listening(_)) => "listening",
        None => "none",
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus");
    let mut seq = 1;
    for (name, local) in CAPTURES {
        let path = root.join(format!("../agent/tests/fixtures/{name}.pcap"));
        let bytes = std::fs::read(&path).expect("read fixture");

        // decode: distinct frames (by length and first header bytes).
        let mut seen = BTreeSet::new();
        let mut records = Vec::new();
        for record in pcap::Reader::new(&bytes).expect("fixture").flatten() {
            let key = (
                record.data.len(),
                record.data[..record.data.len().min(48)].to_vec(),
            );
            if seen.len() < FRAMES && seen.insert(key) {
                write(
                    &corpus.join("decode"),
                    &format!("{name}-{:03}", seen.len()),
                    record.data,
                );
            }
            records.push(record);
        }

        // pcap: the file header and the first records, in the capture's own
        // byte order, and the small capture whole.
        let mut cut = bytes[..24].to_vec();
        let mut at = 24;
        for record in records.iter().take(RECORDS) {
            cut.extend_from_slice(&bytes[at..at + 16 + record.data.len()]);
            at += 16 + record.data.len();
        }
        write(&corpus.join("pcap"), &format!("{name}-head"), &cut);
        if bytes.len() <= 16 << 10 {
            write(&corpus.join("pcap"), name, &bytes);
        }

        // batch and spool: the detector's events, one batch per kind and
        // one with all of them; a segment of those batches.
        let events = events(&bytes, local);
        let mut segment = Vec::new();
        let mut kinds: Vec<&str> = events.iter().map(kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let mut batches: Vec<(String, EventBatch)> = kinds
            .iter()
            .map(|k| {
                let of_kind = events.iter().filter(|e| kind(e) == *k).take(8).cloned();
                (
                    format!("{name}-{k}"),
                    EventBatch {
                        seq: 0,
                        events: of_kind.collect(),
                    },
                )
            })
            .collect();
        batches.push((
            format!("{name}-all"),
            EventBatch {
                seq: 0,
                events: events.iter().take(32).cloned().collect(),
            },
        ));
        for (label, mut batch) in batches {
            batch.seq = seq;
            seq += 1;
            let encoded = batch.encode_to_vec();
            write(&corpus.join("batch"), &label, &encoded);
            let record = spool::segment_record(batch.seq, &encoded);
            write(&corpus.join("spool"), &format!("{label}-record"), &record);
            segment.extend_from_slice(&record);
        }
        write(&corpus.join("spool"), &format!("{name}-segment"), &segment);
        println!("{name}: {} frames, {} events", records.len(), events.len());
    }
}

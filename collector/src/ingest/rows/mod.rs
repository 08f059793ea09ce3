//! Validation of an agent's batch and the rows it becomes: pure (no I/O,
//! no clock), so every bound on what a PC may send is a unit test. A bad
//! field names itself and refuses the whole batch. [`outbound`] does the
//! same for flow minutes, anomalies and listening ports.

pub mod cost;
mod outbound;

use std::net::IpAddr;

use doorwatch_proto::v1::{self, EventBatch};
use doorwatch_proto::{MAX_EVENTS_PER_BATCH, MAX_PORT_SAMPLE};
use doorwatch_store::{EpisodeState, FloodEventRow, KnockEventRow, ScanEventRow, ip};

use crate::error::IngestError;
use crate::trust::identity::AgentIdentity;
use doorwatch_store::EventRows;

/// Most scan types one scan may name (there are fewer kinds than this).
const MAX_SCAN_TYPES: usize = 16;
/// Longest explanation text stored.
const MAX_EXPLANATION_BYTES: usize = 4096;
/// Most open ports listed for one episode.
const MAX_OPEN_PORTS: usize = 1024;
/// Most decoy companions listed for one episode.
const MAX_COMPANIONS: usize = 64;
/// Most risky exposures one scan report names.
const MAX_EXPOSED: usize = 64;

/// Validates a batch and turns it into rows attributed to `identity`.
/// Pure: the whole batch is accepted or the first bad event is named. Takes
/// the batch by value so texts move into the rows instead of being copied.
pub fn rows_from_batch(
    identity: &AgentIdentity,
    received_at: u32,
    batch: EventBatch,
) -> Result<EventRows, IngestError> {
    if batch.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(IngestError::BatchTooLarge {
            got: batch.events.len(),
            max: MAX_EVENTS_PER_BATCH,
        });
    }
    let mut rows = EventRows::default();
    let seq = batch.seq;
    for (index, event) in batch.events.into_iter().enumerate() {
        let bad = |problem| IngestError::BadEvent {
            seq,
            index,
            problem,
        };
        let event_id = uuid_v7(&event.id, "id").map_err(bad)?;
        let created_at = unix_seconds(event.created_unix_ms, "created_unix_ms").map_err(bad)?;
        let common = Common {
            identity,
            event_id,
            received_at,
            created_at,
        };
        match event.detail {
            Some(v1::event::Detail::Scan(scan)) => {
                rows.scans.push(scan_row(&common, scan).map_err(bad)?);
            }
            Some(v1::event::Detail::Flood(flood)) => {
                rows.floods.push(flood_row(&common, flood).map_err(bad)?);
            }
            Some(v1::event::Detail::Knocks(knocks)) => {
                knock_rows(&common, knocks, &mut rows.knocks).map_err(bad)?;
            }
            Some(v1::event::Detail::Flows(flows)) => {
                outbound::flow_rows(&common, flows, &mut rows.flows).map_err(bad)?;
            }
            Some(v1::event::Detail::Outbound(anomaly)) => {
                rows.anomalies
                    .push(outbound::anomaly_row(&common, anomaly).map_err(bad)?);
            }
            Some(v1::event::Detail::Listening(listening)) => {
                outbound::listening_rows(&common, listening, &mut rows.listening).map_err(bad)?;
            }
            None => return Err(bad("event has no detail".into())),
        }
    }
    Ok(rows)
}

/// What every row of an event shares.
pub(crate) struct Common<'a> {
    pub identity: &'a AgentIdentity,
    pub event_id: uuid::Uuid,
    pub received_at: u32,
    pub created_at: u32,
}

pub(crate) fn episode_state(value: i32) -> Result<EpisodeState, String> {
    match v1::EpisodeState::try_from(value) {
        Ok(v1::EpisodeState::Detected) => Ok(EpisodeState::Detected),
        Ok(v1::EpisodeState::Active) => Ok(EpisodeState::Active),
        Ok(v1::EpisodeState::Closed) => Ok(EpisodeState::Closed),
        _ => Err(format!("unknown episode state {value}")),
    }
}

fn flood_row(common: &Common<'_>, flood: v1::FloodDetected) -> Result<FloodEventRow, String> {
    if flood.ports.len() > 64 {
        return Err(format!(
            "ports has {} entries; at most 64",
            flood.ports.len()
        ));
    }
    let explanation = explanation(flood.explanation)?;
    let first_seen = unix_seconds(flood.first_seen_unix_ms, "first_seen_unix_ms")?;
    let last_seen = unix_seconds(flood.last_seen_unix_ms, "last_seen_unix_ms")?;
    if last_seen < first_seen {
        return Err("last_seen is before first_seen".into());
    }
    Ok(FloodEventRow {
        event_id: common.event_id,
        episode_id: uuid_v7(&flood.episode_id, "episode_id")?,
        agent_id: common.identity.agent_id.clone(),
        received_at: common.received_at,
        created_at: common.created_at,
        state: episode_state(flood.state)?,
        target: ip::to_fixed16(ip_from_bytes(&flood.target_ip, "target_ip")?),
        ports: ports(&flood.ports, "ports")?,
        sources: flood.sources,
        first_seen,
        last_seen,
        explanation,
    })
}

/// Most knocks one event may list (the agent lists at most 256).
const MAX_KNOCKS_PER_EVENT: usize = 256;

/// Appends one row per knock of `knocks` to `out`; nothing on error.
fn knock_rows(
    common: &Common<'_>,
    knocks: v1::KnocksSeen,
    out: &mut Vec<KnockEventRow>,
) -> Result<(), String> {
    if knocks.knocks.len() > MAX_KNOCKS_PER_EVENT {
        return Err(format!(
            "knocks has {} entries; at most {MAX_KNOCKS_PER_EVENT}",
            knocks.knocks.len()
        ));
    }
    let explanation: std::sync::Arc<str> = explanation(knocks.explanation)?.into();
    let start = out.len();
    for (i, knock) in knocks.knocks.into_iter().enumerate() {
        let row = knock_row(common, knock, &explanation).map_err(|e| format!("knock {i}: {e}"));
        match row {
            Ok(row) => out.push(row),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn knock_row(
    common: &Common<'_>,
    knock: v1::Knock,
    explanation: &std::sync::Arc<str>,
) -> Result<KnockEventRow, String> {
    let port =
        u16::try_from(knock.port).map_err(|_| format!("port {} is over 65535", knock.port))?;
    let protocol = transport_protocol(knock.protocol)?;
    let first_seen = unix_seconds(knock.first_seen_unix_ms, "first_seen_unix_ms")?;
    let last_seen = unix_seconds(knock.last_seen_unix_ms, "last_seen_unix_ms")?;
    if last_seen < first_seen {
        return Err("last_seen is before first_seen".into());
    }
    Ok(KnockEventRow {
        event_id: common.event_id,
        agent_id: common.identity.agent_id.clone(),
        received_at: common.received_at,
        source: ip::to_fixed16(ip_from_bytes(&knock.source_ip, "source_ip")?),
        target: ip::to_fixed16(ip_from_bytes(&knock.target_ip, "target_ip")?),
        port,
        protocol,
        refused: u8::from(knock.refused),
        probes: knock.probes,
        first_seen,
        last_seen,
        explanation: explanation.clone(),
    })
}

fn scan_row(common: &Common<'_>, scan: v1::ScanDetected) -> Result<ScanEventRow, String> {
    let episode_id = uuid_v7(&scan.episode_id, "episode_id")?;
    let state = episode_state(scan.state)?;
    let scanner = ip_from_bytes(&scan.scanner_ip, "scanner_ip")?;
    let target = ip_from_bytes(&scan.target_ip, "target_ip")?;
    if scan.scan_types.is_empty() {
        return Err("scan_types is empty".into());
    }
    if scan.scan_types.len() > MAX_SCAN_TYPES {
        return Err(format!(
            "scan_types has {} entries; at most {MAX_SCAN_TYPES}",
            scan.scan_types.len()
        ));
    }
    let scan_types = scan
        .scan_types
        .iter()
        .map(|&t| scan_type_label(t).map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()?;
    if scan.port_sample.len() > MAX_PORT_SAMPLE {
        return Err(format!(
            "port_sample has {} ports; at most {MAX_PORT_SAMPLE}",
            scan.port_sample.len()
        ));
    }
    if scan.open_ports.len() > MAX_OPEN_PORTS {
        return Err(format!(
            "open_ports has {} ports; at most {MAX_OPEN_PORTS}",
            scan.open_ports.len()
        ));
    }
    if scan.ports_probed > 65_536 {
        return Err(format!("ports_probed {} exceeds 65536", scan.ports_probed));
    }
    let explanation = explanation(scan.explanation)?;
    let first_seen = unix_seconds(scan.first_seen_unix_ms, "first_seen_unix_ms")?;
    let last_seen = unix_seconds(scan.last_seen_unix_ms, "last_seen_unix_ms")?;
    if last_seen < first_seen {
        return Err("last_seen is before first_seen".into());
    }
    if scan.companions.len() > MAX_COMPANIONS {
        return Err(format!(
            "companions has {} entries; at most {MAX_COMPANIONS}",
            scan.companions.len()
        ));
    }
    let companions = scan
        .companions
        .iter()
        .map(|c| ip_from_bytes(c, "companions").map(ip::to_fixed16))
        .collect::<Result<Vec<_>, _>>()?;
    if scan.exposed.len() > MAX_EXPOSED {
        return Err(format!(
            "exposed has {} entries; at most {MAX_EXPOSED}",
            scan.exposed.len()
        ));
    }
    let mut exposed_ports = scan
        .exposed
        .iter()
        .map(|e| {
            u16::try_from(e.port)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("exposed port {} is not a port", e.port))
        })
        .collect::<Result<Vec<_>, _>>()?;
    exposed_ports.sort_unstable();
    exposed_ports.dedup();
    // Agents older than the field send 0: judge from what they report.
    let severity = match v1::Severity::try_from(scan.severity) {
        Ok(v1::Severity::Unspecified) if scan.open_ports.is_empty() => 1,
        Ok(v1::Severity::Unspecified) => 2,
        Ok(s) => s as u8,
        Err(_) => return Err(format!("unknown severity {}", scan.severity)),
    };
    Ok(ScanEventRow {
        event_id: common.event_id,
        episode_id,
        agent_id: common.identity.agent_id.clone(),
        received_at: common.received_at,
        created_at: common.created_at,
        state,
        scanner: ip::to_fixed16(scanner),
        target: ip::to_fixed16(target),
        scan_types,
        ports_probed: scan.ports_probed,
        port_sample: ports(&scan.port_sample, "port_sample")?,
        open_ports: ports(&scan.open_ports, "open_ports")?,
        probes: scan.probes,
        first_seen,
        last_seen,
        confidence: u8::try_from(scan.confidence.min(100)).unwrap_or(100),
        explanation,
        companions,
        fragmented: u8::from(scan.fragmented),
        exposed_ports,
        severity,
        handshake_verified: u8::from(scan.handshake_verified),
    })
}

pub(crate) fn uuid_v7(bytes: &[u8], field: &str) -> Result<uuid::Uuid, String> {
    let id = uuid::Uuid::from_slice(bytes)
        .map_err(|_| format!("{field} must be 16 bytes, got {}", bytes.len()))?;
    if id.get_version_num() != 7 {
        return Err(format!("{field} is not a UUIDv7"));
    }
    Ok(id)
}

pub(crate) fn ip_from_bytes(bytes: &[u8], field: &str) -> Result<IpAddr, String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::from(v4));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::from(v6));
    }
    Err(format!(
        "{field} must be 4 or 16 bytes, got {}",
        bytes.len()
    ))
}

pub(crate) fn port(value: u32, field: &str) -> Result<u16, String> {
    u16::try_from(value).map_err(|_| format!("{field} {value} is over 65535"))
}

/// 6 (TCP) or 17 (UDP), the only transports knocks, flows and listeners
/// name.
pub(crate) fn transport_protocol(value: u32) -> Result<u8, String> {
    match value {
        6 | 17 => Ok(value as u8),
        other => Err(format!("protocol {other} is neither 6 (TCP) nor 17 (UDP)")),
    }
}

/// An explanation (or other sentence) as it is stored: refused over the
/// size limit, with control characters escaped so that it cannot forge
/// lines or drive a terminal wherever it is shown later.
pub(crate) fn explanation(text: String) -> Result<String, String> {
    if text.len() > MAX_EXPLANATION_BYTES {
        return Err(format!("explanation exceeds {MAX_EXPLANATION_BYTES} bytes"));
    }
    Ok(stored_text(text))
}

/// Text a PC sent, as it is stored: unchanged when it is printable (no
/// copy), with control characters escaped otherwise.
pub(crate) fn stored_text(text: String) -> String {
    match doorwatch_process::text::printable(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

pub(crate) fn ports(values: &[u32], field: &str) -> Result<Vec<u16>, String> {
    // Checked first so the conversion below allocates once (collecting
    // `Result`s grows the vector step by step; this runs for every row).
    if let Some(p) = values.iter().find(|&&p| p > u32::from(u16::MAX)) {
        return Err(format!("{field} holds {p}, not a port"));
    }
    Ok(values.iter().map(|&p| p as u16).collect())
}

/// Unix milliseconds to the `DateTime` column's seconds, refusing values
/// outside 2001..2106 that a broken agent clock or a lie would produce.
pub(crate) fn unix_seconds(ms: i64, field: &str) -> Result<u32, String> {
    let secs = ms.div_euclid(1000);
    match u32::try_from(secs) {
        Ok(s) if s >= 1_000_000_000 => Ok(s),
        _ => Err(format!("{field} {ms} is not a plausible time")),
    }
}

/// The stored name of a scan type.
pub fn scan_type_label(value: i32) -> Result<&'static str, String> {
    use v1::ScanType::*;
    Ok(match v1::ScanType::try_from(value) {
        Ok(Syn) => "syn",
        Ok(Connect) => "connect",
        Ok(Fin) => "fin",
        Ok(Null) => "null",
        Ok(Xmas) => "xmas",
        Ok(Maimon) => "maimon",
        Ok(Ack) => "ack",
        Ok(Udp) => "udp",
        Ok(IpProto) => "ip_proto",
        Ok(Icmp) => "icmp",
        _ => return Err(format!("unknown scan type {value}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> AgentIdentity {
        AgentIdentity {
            agent_id: "pc-1".into(),
        }
    }

    fn good_event() -> v1::Event {
        v1::Event {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            created_unix_ms: 1_764_000_000_000,
            detail: Some(v1::event::Detail::Scan(v1::ScanDetected {
                episode_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
                state: v1::EpisodeState::Detected as i32,
                scanner_ip: vec![198, 18, 0, 2],
                target_ip: vec![198, 18, 0, 10],
                scan_types: vec![v1::ScanType::Syn as i32],
                ports_probed: 1000,
                port_sample: vec![1, 2, 3],
                open_ports: vec![22],
                probes: 1001,
                first_seen_unix_ms: 1_764_000_000_000,
                last_seen_unix_ms: 1_764_000_002_000,
                confidence: 99,
                explanation: "a scan".into(),
                companions: vec![vec![198, 18, 0, 3]],
                fragmented: false,
                handshake_verified: true,
                exposed: vec![],
                severity: v1::Severity::Medium as i32,
            })),
        }
    }

    fn batch(events: Vec<v1::Event>) -> EventBatch {
        EventBatch { seq: 7, events }
    }

    fn with_scan(f: impl FnOnce(&mut v1::ScanDetected)) -> v1::Event {
        let mut event = good_event();
        if let Some(v1::event::Detail::Scan(scan)) = &mut event.detail {
            f(scan);
        }
        event
    }

    #[test]
    fn good_batch_becomes_rows_attributed_to_the_certificate() {
        let rows = rows_from_batch(&identity(), 5, batch(vec![good_event()]))
            .expect("valid")
            .scans;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].agent_id, "pc-1");
        assert_eq!(rows[0].scan_types, vec!["syn"]);
        assert_eq!(ip::from_fixed16(rows[0].scanner).to_string(), "198.18.0.2");
        assert_eq!(rows[0].first_seen, 1_764_000_000);
        assert_eq!(
            ip::from_fixed16(rows[0].companions[0]).to_string(),
            "198.18.0.3"
        );
    }

    #[test]
    fn explanations_are_stored_with_control_characters_escaped() {
        let event = with_scan(|scan| {
            scan.explanation = "scan\n2026-12-03 INFO forged line \u{1b}[2J".into();
        });
        let rows = rows_from_batch(&identity(), 5, batch(vec![event]))
            .expect("valid")
            .scans;
        assert_eq!(
            rows[0].explanation,
            "scan\\u{a}2026-12-03 INFO forged line \\u{1b}[2J"
        );
    }

    #[test]
    fn scan_types_are_bounded() {
        let event = with_scan(|scan| scan.scan_types = vec![v1::ScanType::Syn as i32; 17]);
        let err = rows_from_batch(&identity(), 5, batch(vec![event])).expect_err("17 types");
        assert!(
            err.to_string().contains("scan_types has 17 entries"),
            "{err}"
        );
    }

    /// The review's load: 306 knocks with a 4 KiB explanation (two
    /// events). Each event's rows share one explanation, and the cost
    /// taken from the budget before they were built is at least what they
    /// take.
    #[test]
    fn knock_rows_share_their_explanation_and_cost_what_they_take() {
        let knocks = |n: usize| {
            let mut event = knocks_event(vec![good_knock(); n]);
            if let Some(v1::event::Detail::Knocks(knocks)) = &mut event.detail {
                knocks.explanation = "x".repeat(4096);
            }
            event
        };
        let events = vec![
            knocks(256),
            knocks(50),
            good_event(),
            with_scan(|scan| scan.explanation = "\u{1b}".repeat(4000)),
        ];
        let batch = batch(events);
        let cost = cost::decoded_cost(&batch, "pc-1");
        let rows = rows_from_batch(&identity(), 5, batch).expect("valid");
        assert_eq!(rows.knocks.len(), 306);
        let copies: std::collections::HashSet<*const u8> =
            rows.knocks.iter().map(|k| k.explanation.as_ptr()).collect();
        assert_eq!(copies.len(), 2, "one copy of the explanation per event");
        let taken = rows.knocks.len() * (std::mem::size_of::<KnockEventRow>() + 4)
            + 2 * 4096
            + rows
                .scans
                .iter()
                .map(|s| std::mem::size_of::<ScanEventRow>() + s.explanation.len())
                .sum::<usize>();
        assert!(
            cost >= taken,
            "estimate {cost} under the rows' {taken} bytes"
        );
        assert!(
            cost < 200_000,
            "306 knocks cost {cost} bytes, not hundreds of MB"
        );
    }

    #[test]
    fn a_batch_too_costly_once_decoded_is_measured_before_any_row_is_built() {
        let mut event = knocks_event(vec![good_knock(); 256]);
        if let Some(v1::event::Detail::Knocks(knocks)) = &mut event.detail {
            knocks.explanation = "\u{7}".repeat(4096);
        }
        // Knocks cost per row; 1,000 such events are over the cap.
        let hostile = batch(vec![event; MAX_EVENTS_PER_BATCH]);
        assert!(cost::decoded_cost(&hostile, "pc-1") > cost::MAX_BATCH_DECODED_BYTES / 2);
        let small = batch(vec![good_event()]);
        assert!(cost::decoded_cost(&small, "pc-1") < 4096);
    }

    fn knocks_event(knocks: Vec<v1::Knock>) -> v1::Event {
        v1::Event {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            created_unix_ms: 1_764_000_000_000,
            detail: Some(v1::event::Detail::Knocks(v1::KnocksSeen {
                knocks,
                unlisted: 0,
                explanation: "single tries".into(),
            })),
        }
    }

    fn good_knock() -> v1::Knock {
        v1::Knock {
            source_ip: vec![192, 0, 2, 7],
            target_ip: vec![198, 18, 0, 10],
            port: 3389,
            protocol: 6,
            refused: true,
            probes: 1,
            first_seen_unix_ms: 1_764_000_000_000,
            last_seen_unix_ms: 1_764_000_000_000,
        }
    }

    #[test]
    fn each_knock_becomes_a_row_and_a_bad_one_refuses_the_batch() {
        let event = knocks_event(vec![good_knock(), good_knock()]);
        let rows = rows_from_batch(&identity(), 5, batch(vec![event])).expect("valid");
        assert_eq!(rows.knocks.len(), 2);
        assert_eq!(rows.knocks[0].agent_id, "pc-1");
        assert_eq!(rows.knocks[0].port, 3389);
        assert_eq!(rows.knocks[0].event_id, rows.knocks[1].event_id);
        for (change, problem) in [
            (
                (|k: &mut v1::Knock| k.port = 70_000) as fn(&mut v1::Knock),
                "over 65535",
            ),
            (|k| k.protocol = 1, "neither 6"),
            (|k| k.source_ip = vec![1, 2, 3], "source_ip"),
            (|k| k.last_seen_unix_ms -= 5_000, "before first_seen"),
        ] {
            let mut bad = good_knock();
            change(&mut bad);
            let err = rows_from_batch(
                &identity(),
                5,
                batch(vec![knocks_event(vec![good_knock(), bad])]),
            )
            .expect_err("invalid knock");
            assert!(err.to_string().contains(problem), "{err}");
            assert!(err.to_string().contains("knock 1"), "{err}");
        }
        let too_many = knocks_event(vec![good_knock(); 257]);
        let err = rows_from_batch(&identity(), 5, batch(vec![too_many])).expect_err("too many");
        assert!(err.to_string().contains("at most 256"), "{err}");
    }

    #[test]
    fn flood_events_become_flood_rows() {
        let flood = v1::Event {
            detail: Some(v1::event::Detail::Flood(v1::FloodDetected {
                episode_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
                state: v1::EpisodeState::Closed as i32,
                target_ip: vec![198, 18, 0, 10],
                ports: vec![80],
                sources: 50_000,
                first_seen_unix_ms: 1_764_000_000_000,
                last_seen_unix_ms: 1_764_000_010_000,
                explanation: "a flood".into(),
            })),
            ..good_event()
        };
        let rows =
            rows_from_batch(&identity(), 5, batch(vec![good_event(), flood])).expect("valid");
        assert_eq!(rows.scans.len(), 1);
        assert_eq!(rows.floods.len(), 1);
        assert_eq!(rows.floods[0].sources, 50_000);
        assert_eq!(rows.floods[0].agent_id, "pc-1");
    }

    #[test]
    fn bad_events_are_named() {
        let cases: Vec<(v1::Event, &str)> = vec![
            (
                v1::Event {
                    id: vec![1, 2, 3],
                    ..good_event()
                },
                "id must be 16 bytes",
            ),
            (
                v1::Event {
                    id: uuid::Uuid::new_v4().as_bytes().to_vec(),
                    ..good_event()
                },
                "not a UUIDv7",
            ),
            (
                v1::Event {
                    detail: None,
                    ..good_event()
                },
                "no detail",
            ),
            (
                with_scan(|s| s.scanner_ip = vec![1; 5]),
                "scanner_ip must be 4 or 16",
            ),
            (with_scan(|s| s.port_sample = vec![70_000]), "not a port"),
            (with_scan(|s| s.port_sample = vec![1; 65]), "at most 64"),
            (with_scan(|s| s.scan_types = vec![99]), "unknown scan type"),
            (with_scan(|s| s.scan_types = vec![]), "scan_types is empty"),
            (with_scan(|s| s.state = 42), "unknown episode state"),
            (
                with_scan(|s| s.first_seen_unix_ms = -5),
                "not a plausible time",
            ),
            (
                with_scan(|s| s.last_seen_unix_ms = 1_000_000_000_000),
                "before first_seen",
            ),
            (
                with_scan(|s| s.explanation = "x".repeat(5000)),
                "explanation exceeds",
            ),
        ];
        for (event, expected) in cases {
            let err = rows_from_batch(&identity(), 5, batch(vec![good_event(), event]))
                .expect_err(expected)
                .to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
            assert!(err.contains("event 1 of batch 7"), "{err}");
        }
    }

    #[test]
    fn oversized_batch_is_refused() {
        let events = vec![good_event(); MAX_EVENTS_PER_BATCH + 1];
        let err = rows_from_batch(&identity(), 5, batch(events)).expect_err("too large");
        assert!(matches!(err, IngestError::BatchTooLarge { .. }));
    }
}

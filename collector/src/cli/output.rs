//! Formats stored events for people (`table`) and for scripts (`json`, one
//! object per line).

use doorwatch_process::{clock, text};
use doorwatch_store::{
    FloodEventRow, ListeningPortRow, OutboundAnomalyRow, ScanEventRow, TalkerRow, ip,
};
use serde::Serialize;

/// Output format of the `events` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// One event as printed in JSON.
#[derive(Debug, Serialize)]
pub struct EventJson<'a> {
    pub kind: &'static str,
    pub event_id: String,
    pub episode_id: String,
    pub agent_id: &'a str,
    pub state: &'static str,
    pub scanner: String,
    pub target: String,
    pub scan_types: &'a [String],
    pub ports_probed: u32,
    pub port_sample: &'a [u16],
    pub open_ports: &'a [u16],
    pub probes: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub received_at: String,
    pub confidence: u8,
    pub companions: Vec<String>,
    pub fragmented: bool,
    pub exposed_ports: &'a [u16],
    pub severity: &'static str,
    pub explanation: &'a str,
}

/// One flood as printed in JSON.
#[derive(Debug, Serialize)]
pub struct FloodJson<'a> {
    pub kind: &'static str,
    pub event_id: String,
    pub episode_id: String,
    pub agent_id: &'a str,
    pub state: &'static str,
    pub target: String,
    pub ports: &'a [u16],
    pub sources: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub received_at: String,
    pub explanation: &'a str,
}

impl<'a> From<&'a FloodEventRow> for FloodJson<'a> {
    fn from(row: &'a FloodEventRow) -> Self {
        Self {
            kind: "flood",
            event_id: row.event_id.to_string(),
            episode_id: row.episode_id.to_string(),
            agent_id: &row.agent_id,
            state: row.state.label(),
            target: ip::from_fixed16(row.target).to_string(),
            ports: &row.ports,
            sources: row.sources,
            first_seen: clock::rfc3339(row.first_seen),
            last_seen: clock::rfc3339(row.last_seen),
            received_at: clock::rfc3339(row.received_at),
            explanation: &row.explanation,
        }
    }
}

impl<'a> From<&'a ScanEventRow> for EventJson<'a> {
    fn from(row: &'a ScanEventRow) -> Self {
        Self {
            kind: "scan",
            event_id: row.event_id.to_string(),
            episode_id: row.episode_id.to_string(),
            agent_id: &row.agent_id,
            state: row.state.label(),
            scanner: ip::from_fixed16(row.scanner).to_string(),
            target: ip::from_fixed16(row.target).to_string(),
            scan_types: &row.scan_types,
            ports_probed: row.ports_probed,
            port_sample: &row.port_sample,
            open_ports: &row.open_ports,
            probes: row.probes,
            first_seen: clock::rfc3339(row.first_seen),
            last_seen: clock::rfc3339(row.last_seen),
            received_at: clock::rfc3339(row.received_at),
            confidence: row.confidence,
            companions: row
                .companions
                .iter()
                .map(|c| ip::from_fixed16(*c).to_string())
                .collect(),
            fragmented: row.fragmented != 0,
            exposed_ports: &row.exposed_ports,
            severity: crate::campaigns::correlate::severity_label(row.severity),
            explanation: &row.explanation,
        }
    }
}

/// Renders rows in the chosen format: scans, then floods.
pub fn render(rows: &[ScanEventRow], floods: &[FloodEventRow], format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Json => {
            // Serializing plain strings and numbers cannot fail.
            let lines = rows
                .iter()
                .filter_map(|r| serde_json::to_string(&EventJson::from(r)).ok())
                .chain(
                    floods
                        .iter()
                        .filter_map(|f| serde_json::to_string(&FloodJson::from(f)).ok()),
                );
            for line in lines {
                out.push_str(&line);
                out.push('\n');
            }
        }
        Format::Table => {
            out.push_str(&format!(
                "{:<20}  {:<9}  {:<39}  {:<39}  {:<12}  {:>6}  {:>7}  {}\n",
                "LAST SEEN (UTC)",
                "STATE",
                "SCANNER",
                "TARGET",
                "TYPES",
                "PORTS",
                "PROBES",
                "AGENT"
            ));
            for row in rows {
                out.push_str(&format!(
                    "{:<20}  {:<9}  {:<39}  {:<39}  {:<12}  {:>6}  {:>7}  {}\n",
                    clock::rfc3339(row.last_seen),
                    row.state.label(),
                    ip::from_fixed16(row.scanner),
                    ip::from_fixed16(row.target),
                    row.scan_types.join(","),
                    row.ports_probed,
                    row.probes,
                    row.agent_id,
                ));
                out.push_str(&format!("    {}\n", text::printable(&row.explanation)));
            }
            if !floods.is_empty() {
                out.push_str(&format!(
                    "\n{:<20}  {:<9}  {:<39}  {:>9}  {}\n",
                    "FLOOD LAST SEEN", "STATE", "TARGET", "SOURCES", "AGENT"
                ));
            }
            for flood in floods {
                out.push_str(&format!(
                    "{:<20}  {:<9}  {:<39}  {:>9}  {}\n    {}\n",
                    clock::rfc3339(flood.last_seen),
                    flood.state.label(),
                    ip::from_fixed16(flood.target),
                    flood.sources,
                    flood.agent_id,
                    text::printable(&flood.explanation),
                ));
            }
        }
    }
    out
}

/// Prints one line for a person at a terminal, with any control
/// character from stored text (a PC's hostname, an explanation written
/// before ingest escaped them) shown escaped, so that nothing in the
/// database can drive the admin's terminal.
pub fn say(line: impl AsRef<str>) {
    println!("{}", text::printable(line.as_ref()));
}

/// Prints `objects` one JSON object per line, or as indented `key: value`
/// blocks for people.
pub fn print_lines(objects: impl Iterator<Item = serde_json::Value>, json: bool) {
    for object in objects {
        if json {
            println!("{object}");
            continue;
        }
        if let Some(map) = object.as_object() {
            let mut first = true;
            for (key, value) in map {
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                if first {
                    say(format!("{key}: {text}"));
                    first = false;
                } else {
                    say(format!("    {key}: {text}"));
                }
            }
        }
    }
}

/// An address stored as 16 bytes, printed; empty if all zeros.
fn address(bytes: [u8; 16]) -> String {
    if bytes == [0; 16] {
        String::new()
    } else {
        ip::from_fixed16(bytes).to_string()
    }
}

/// One outbound anomaly as JSON.
pub fn anomaly_json(row: &OutboundAnomalyRow) -> serde_json::Value {
    serde_json::json!({
        "kind": row.kind.label(),
        "agent_id": row.agent_id,
        "state": row.state.label(),
        "explanation": row.explanation,
        "process": row.process,
        "pid": row.pid,
        "user": row.user_name,
        "exe": row.exe,
        "remote": address(row.remote),
        "remote_port": row.remote_port,
        "hosts": row.hosts,
        "ports": row.ports,
        "bytes_out": row.bytes_out,
        "baseline_bytes_per_hour": row.baseline_bytes_per_hour,
        "attempts": row.attempts,
        "failed": row.failed,
        "first_seen": clock::rfc3339(row.first_seen),
        "last_seen": clock::rfc3339(row.last_seen),
        "episode_id": row.episode_id.to_string(),
        "event_id": row.event_id.to_string(),
    })
}

/// A top talker (a process) or destination ("hex:port" made readable).
pub fn talker_json(row: &TalkerRow, destination: bool) -> serde_json::Value {
    let name = if destination {
        row.name
            .split_once(':')
            .and_then(|(hex, port)| {
                let bytes: Vec<u8> = (0..hex.len() / 2)
                    .filter_map(|i| u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok())
                    .collect();
                let fixed = <[u8; 16]>::try_from(bytes.as_slice()).ok()?;
                Some(format!("{}:{port}", ip::from_fixed16(fixed)))
            })
            .unwrap_or_else(|| row.name.clone())
    } else {
        row.name.clone()
    };
    serde_json::json!({
        if destination { "destination" } else { "process" }: name,
        "bytes_out": row.bytes_out,
        "bytes_in": row.bytes_in,
        "pcs": row.pcs,
    })
}

/// One listening port as JSON.
pub fn listening_json(row: &ListeningPortRow) -> serde_json::Value {
    serde_json::json!({
        "agent_id": row.agent_id,
        "protocol": if row.protocol == 17 { "udp" } else { "tcp" },
        "port": row.port,
        "local_ip": ip::from_fixed16(row.local_ip).to_string(),
        "process": row.process,
        "pid": row.pid,
        "user": row.user_name,
        "risk": row.risk,
        "reported_at": clock::rfc3339(row.created_at),
    })
}

/// What retention keeps and drops: the windows, then each partition with
/// when it goes, then the campaigns out of the window.
pub fn retention(
    settings: &crate::retention::Settings,
    review: &crate::retention::Review,
    now: u64,
    format: Format,
) -> String {
    use crate::retention::Family;
    use std::fmt::Write as _;
    let goes = |at: Option<u64>| match at {
        Some(at) if at <= now => "due".to_owned(),
        Some(at) => clock::rfc3339(clock::seconds(at)),
        None => "kept".to_owned(),
    };
    let mut out = String::new();
    match format {
        Format::Json => {
            for family in Family::ALL {
                let line = serde_json::json!({
                    "family": family,
                    "tables": family.tables(),
                    "keep_days": settings.keep_days(family),
                });
                let _ = writeln!(out, "{line}");
            }
            for p in &review.partitions {
                let line = serde_json::json!({
                    "table": p.table,
                    "family": p.family,
                    "partition": p.partition,
                    "rows": p.rows,
                    "bytes": p.bytes,
                    "goes_at": p.goes_at.map(|at| clock::rfc3339(clock::seconds(at))),
                    "due": p.due(now),
                });
                let _ = writeln!(out, "{line}");
            }
            let line = serde_json::json!({
                "expired_campaigns": review.expired_campaigns.len(),
            });
            let _ = writeln!(out, "{line}");
        }
        Format::Table => {
            let _ = writeln!(out, "{:<12}  {:>10}  TABLES", "FAMILY", "KEEP");
            for family in Family::ALL {
                let keep = settings
                    .keep_days(family)
                    .map_or_else(|| "forever".to_owned(), |d| format!("{d} days"));
                let _ = writeln!(
                    out,
                    "{:<12}  {:>10}  {}",
                    family.label(),
                    keep,
                    family.tables().join(", ")
                );
            }
            let _ = writeln!(
                out,
                "\n{:<20}  {:<9}  {:>10}  {:>10}  GOES",
                "TABLE", "PARTITION", "ROWS", "BYTES"
            );
            for p in &review.partitions {
                let _ = writeln!(
                    out,
                    "{:<20}  {:<9}  {:>10}  {:>10}  {}",
                    p.table,
                    p.partition,
                    p.rows,
                    p.bytes,
                    goes(p.goes_at)
                );
            }
            let _ = writeln!(
                out,
                "\ncampaigns whose last activity left the window (due): {}",
                review.expired_campaigns.len()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorwatch_store::EpisodeState;

    #[test]
    fn tables_show_stored_control_characters_escaped() {
        // A row written before ingest escaped explanations.
        let flood = FloodEventRow {
            event_id: uuid::Uuid::nil(),
            episode_id: uuid::Uuid::nil(),
            agent_id: "pc-1".into(),
            received_at: 0,
            created_at: 0,
            state: EpisodeState::Active,
            target: [0; 16],
            ports: vec![80],
            sources: 3,
            first_seen: 0,
            last_seen: 0,
            explanation: "flood \u{1b}]0;pwned\u{7}".into(),
        };
        let table = render(&[], &[flood], Format::Table);
        assert!(!table.contains('\u{1b}'), "{table:?}");
        assert!(table.contains("flood \\u{1b}]0;pwned\\u{7}"), "{table}");
    }
}

//! Validates the agents' outbound events (flow minutes, anomalies,
//! listening ports) and turns them into rows. Pure, like the rest of
//! ingest: a bad field names itself and refuses the batch.

use doorwatch_proto::v1;
use doorwatch_store::AnomalyKind;
use doorwatch_store::{FlowMinuteRow, ListeningPortRow, OutboundAnomalyRow, ip};

use super::{
    Common, episode_state, explanation, ip_from_bytes, port, ports, stored_text,
    transport_protocol, unix_seconds, uuid_v7,
};

/// Most flows, listeners and samples one event may list (the agent's
/// limits).
const MAX_FLOWS: usize = 512;
const MAX_LISTENERS: usize = 1024;
const MAX_SAMPLE: usize = 64;
/// Longest process name, path or user name kept.
const MAX_NAME_BYTES: usize = 1024;

/// (pid, name, exe, user) of an optional process; an unknown process is
/// pid 0 with empty names.
fn process(p: Option<v1::ProcessInfo>) -> Result<(u32, String, String, String), String> {
    let Some(p) = p else {
        return Ok((0, String::new(), String::new(), String::new()));
    };
    for (field, value) in [("name", &p.name), ("exe", &p.exe), ("user", &p.user)] {
        if value.len() > MAX_NAME_BYTES {
            return Err(format!("process {field} exceeds {MAX_NAME_BYTES} bytes"));
        }
    }
    Ok((
        p.pid,
        stored_text(p.name),
        stored_text(p.exe),
        stored_text(p.user),
    ))
}

pub(crate) fn flow_rows(
    common: &Common<'_>,
    summary: v1::FlowSummary,
    out: &mut Vec<FlowMinuteRow>,
) -> Result<(), String> {
    if summary.flows.len() > MAX_FLOWS {
        return Err(format!(
            "flows has {} entries; at most {MAX_FLOWS}",
            summary.flows.len()
        ));
    }
    let minute = unix_seconds(summary.minute_start_unix_ms, "minute_start_unix_ms")?;
    let mut rows = Vec::with_capacity(summary.flows.len() + 1);
    for (i, flow) in summary.flows.into_iter().enumerate() {
        let at = |e: String| format!("flow {i}: {e}");
        let (pid, process, exe, user_name) = process(flow.process).map_err(at)?;
        rows.push(FlowMinuteRow {
            event_id: common.event_id,
            agent_id: common.identity.agent_id.clone(),
            received_at: common.received_at,
            minute,
            pid,
            process,
            exe,
            user_name,
            local_ip: ip::to_fixed16(ip_from_bytes(&flow.local_ip, "local_ip").map_err(at)?),
            remote: ip::to_fixed16(ip_from_bytes(&flow.remote_ip, "remote_ip").map_err(at)?),
            remote_port: port(flow.remote_port, "remote_port").map_err(at)?,
            protocol: transport_protocol(flow.protocol).map_err(at)?,
            bytes_out: flow.bytes_out,
            bytes_in: flow.bytes_in,
            packets_out: flow.packets_out,
            packets_in: flow.packets_in,
            connections: flow.connections,
        });
    }
    if summary.unlisted_flows > 0 {
        // The flows the agent did not list, summed into one row.
        rows.push(FlowMinuteRow {
            event_id: common.event_id,
            agent_id: common.identity.agent_id.clone(),
            received_at: common.received_at,
            minute,
            pid: 0,
            process: "(unlisted flows)".into(),
            exe: String::new(),
            user_name: String::new(),
            local_ip: [0; 16],
            remote: [0; 16],
            remote_port: 0,
            protocol: 0,
            bytes_out: summary.unlisted_bytes_out,
            bytes_in: summary.unlisted_bytes_in,
            packets_out: 0,
            packets_in: 0,
            connections: 0,
        });
    }
    out.extend(rows);
    Ok(())
}

pub(crate) fn anomaly_row(
    common: &Common<'_>,
    anomaly: v1::OutboundAnomaly,
) -> Result<OutboundAnomalyRow, String> {
    let kind = match v1::OutboundKind::try_from(anomaly.kind) {
        Ok(v1::OutboundKind::UploadVolume) => AnomalyKind::UploadVolume,
        Ok(v1::OutboundKind::Scan) => AnomalyKind::Scan,
        Ok(v1::OutboundKind::SmtpFanout) => AnomalyKind::SmtpFanout,
        Ok(v1::OutboundKind::FailedConnections) => AnomalyKind::FailedConnections,
        _ => return Err(format!("unknown outbound kind {}", anomaly.kind)),
    };
    let state = episode_state(anomaly.state)?;
    if anomaly.host_sample.len() > MAX_SAMPLE || anomaly.port_sample.len() > MAX_SAMPLE {
        return Err(format!(
            "host_sample and port_sample hold at most {MAX_SAMPLE} each"
        ));
    }
    let explanation = explanation(anomaly.explanation)?;
    let first_seen = unix_seconds(anomaly.first_seen_unix_ms, "first_seen_unix_ms")?;
    let last_seen = unix_seconds(anomaly.last_seen_unix_ms, "last_seen_unix_ms")?;
    if last_seen < first_seen {
        return Err("last_seen is before first_seen".into());
    }
    let remote = if anomaly.remote_ip.is_empty() {
        [0; 16]
    } else {
        ip::to_fixed16(ip_from_bytes(&anomaly.remote_ip, "remote_ip")?)
    };
    let host_sample = anomaly
        .host_sample
        .iter()
        .map(|h| ip_from_bytes(h, "host_sample").map(ip::to_fixed16))
        .collect::<Result<Vec<_>, _>>()?;
    let (pid, process, exe, user_name) = process(anomaly.process)?;
    Ok(OutboundAnomalyRow {
        event_id: common.event_id,
        episode_id: uuid_v7(&anomaly.episode_id, "episode_id")?,
        agent_id: common.identity.agent_id.clone(),
        received_at: common.received_at,
        created_at: common.created_at,
        state,
        kind,
        pid,
        process,
        exe,
        user_name,
        remote,
        remote_port: port(anomaly.remote_port, "remote_port")?,
        hosts: anomaly.hosts,
        ports: anomaly.ports,
        bytes_out: anomaly.bytes_out,
        baseline_bytes_per_hour: anomaly.baseline_bytes_per_hour,
        attempts: anomaly.attempts,
        failed: anomaly.failed,
        first_seen,
        last_seen,
        host_sample,
        port_sample: ports(&anomaly.port_sample, "port_sample")?,
        explanation,
    })
}

pub(crate) fn listening_rows(
    common: &Common<'_>,
    listening: v1::ListeningPorts,
    out: &mut Vec<ListeningPortRow>,
) -> Result<(), String> {
    if listening.listeners.len() > MAX_LISTENERS {
        return Err(format!(
            "listeners has {} entries; at most {MAX_LISTENERS}",
            listening.listeners.len()
        ));
    }
    let row = |protocol, local_ip, port, (pid, process, exe, user_name), risk| ListeningPortRow {
        event_id: common.event_id,
        agent_id: common.identity.agent_id.clone(),
        received_at: common.received_at,
        created_at: common.created_at,
        protocol,
        local_ip,
        port,
        pid,
        process,
        exe,
        user_name,
        risk,
    };
    if listening.listeners.is_empty() {
        // Nothing listens: one row says so, so the newest report is known.
        out.push(row(0, [0; 16], 0, process(None)?, String::new()));
        return Ok(());
    }
    let mut rows = Vec::with_capacity(listening.listeners.len());
    for (i, l) in listening.listeners.into_iter().enumerate() {
        let at = |e: String| format!("listener {i}: {e}");
        let risk = explanation(l.risk).map_err(at)?;
        rows.push(row(
            transport_protocol(l.protocol).map_err(at)?,
            ip::to_fixed16(ip_from_bytes(&l.local_ip, "local_ip").map_err(at)?),
            port(l.port, "port").map_err(at)?,
            process(l.process).map_err(at)?,
            risk,
        ));
    }
    out.extend(rows);
    Ok(())
}

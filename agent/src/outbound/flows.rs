//! Traffic accounting: bytes and packets each way per flow (this PC's
//! address and port, the remote address and port, the protocol), with the
//! flow's owning process once procfs has named it. Summed per minute into
//! rows per process × remote × port × protocol.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::owners::{Owners, SharedProcess};
use crate::decode::{Packet, Transport, tcp_flags};
use crate::procfs::Process;

/// Flows remembered at once; beyond it new flows are counted only in the
/// minute's unlisted totals.
const MAX_FLOWS: usize = 65_536;
/// Rows listed per minute summary (the wire contract's limit).
pub const MAX_ROWS: usize = 512;
/// A flow without packets for this long is forgotten.
const FLOW_IDLE_MS: u64 = 120_000;
/// Seconds of history kept for live rates.
const RATE_SECONDS: usize = 5;

/// (protocol, local address, local port, remote address, remote port).
type FlowKey = (u8, IpAddr, u16, IpAddr, u16);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    pub connections: u32,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.bytes_out += other.bytes_out;
        self.bytes_in += other.bytes_in;
        self.packets_out += other.packets_out;
        self.packets_in += other.packets_in;
        self.connections += other.connections;
    }
}

#[derive(Debug)]
struct Flow {
    owner: Option<SharedProcess>,
    /// procfs was asked about this flow at least once.
    looked_up: bool,
    minute: Counts,
    /// Bytes sent since the last upload check.
    unchecked_out: u64,
    last_ms: u64,
    /// (second, bytes out, bytes in) of the last seconds, by second modulo
    /// the ring's length: for live rates.
    seconds: [(u64, u64, u64); RATE_SECONDS + 1],
}

/// One row of a minute summary.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRow {
    pub process: Option<Process>,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub protocol: u8,
    pub counts: Counts,
}

/// One minute of this PC's traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMinute {
    pub minute_start_ms: u64,
    /// Largest first, at most [`MAX_ROWS`].
    pub rows: Vec<FlowRow>,
    /// Rows beyond [`MAX_ROWS`] and flows not tracked, summed.
    pub unlisted_rows: u64,
    pub unlisted: Counts,
}

/// Bytes one process sent to one destination since the last check.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub process: Option<Process>,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub bytes: u64,
}

/// Live rates of one process, bytes per second.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcessRate {
    pub process: String,
    pub pid: u32,
    pub user: String,
    pub sent_per_sec: u64,
    pub received_per_sec: u64,
    pub connections: usize,
    /// The destination that got most of what it sent.
    pub top_destination: String,
}

/// All flows of this PC.
#[derive(Debug, Default)]
pub struct Flows {
    flows: HashMap<FlowKey, Flow>,
    minute_start_ms: u64,
    /// Traffic of flows that could not be tracked (table full).
    overflow: Counts,
}

impl Flows {
    pub fn observe(&mut self, packet: &Packet, outgoing: bool, now: u64) {
        // Which packets may start tracking a flow: only what a remote
        // host cannot forge into existence. This PC's own SYN or UDP
        // datagram, or the remote's ACK (a completed handshake). A flood of
        // forged SYNs or datagrams, and this PC's RSTs and SYN-ACKs to them,
        // are counted in the minute's unlisted totals instead.
        let (protocol, local_port, remote_port, syn, may_start) = match packet.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
                ..
            } => {
                let syn = flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
                if outgoing {
                    (6, src_port, dst_port, syn, syn)
                } else {
                    let ack_only = flags & (tcp_flags::ACK | tcp_flags::SYN | tcp_flags::RST)
                        == tcp_flags::ACK;
                    (6, dst_port, src_port, false, ack_only)
                }
            }
            Transport::Udp { src_port, dst_port } => {
                if outgoing {
                    (17, src_port, dst_port, false, true)
                } else {
                    (17, dst_port, src_port, false, false)
                }
            }
            _ => return,
        };
        let (local, remote) = if outgoing {
            (packet.src, packet.dst)
        } else {
            (packet.dst, packet.src)
        };
        let bytes = u64::from(packet.ip_len);
        let key = (protocol, local, local_port, remote, remote_port);
        if self.minute_start_ms == 0 {
            self.minute_start_ms = now - now % 60_000;
        }
        let tracked = self.flows.contains_key(&key) || (may_start && self.flows.len() < MAX_FLOWS);
        let counts = if tracked {
            let flow = self.flows.entry(key).or_insert(Flow {
                owner: None,
                looked_up: false,
                minute: Counts::default(),
                unchecked_out: 0,
                last_ms: now,
                seconds: [(0, 0, 0); RATE_SECONDS + 1],
            });
            flow.last_ms = now;
            let second = now / 1000;
            let slot = &mut flow.seconds[(second % (RATE_SECONDS as u64 + 1)) as usize];
            if slot.0 != second {
                *slot = (second, 0, 0);
            }
            if outgoing {
                flow.unchecked_out += bytes;
                slot.1 += bytes;
            } else {
                slot.2 += bytes;
            }
            &mut flow.minute
        } else {
            &mut self.overflow
        };
        if outgoing {
            counts.bytes_out += bytes;
            counts.packets_out += 1;
            if syn {
                counts.connections += 1;
            }
        } else {
            counts.bytes_in += bytes;
            counts.packets_in += 1;
        }
    }

    pub fn has_unowned(&self) -> bool {
        self.flows.values().any(|f| !f.looked_up)
    }

    /// Asks `owners` about every flow not looked up yet. A flow whose socket
    /// is gone, sent by raw packets, is given to the raw sender if there is
    /// exactly one.
    /// Returns how many flows were looked up and how many of them got an
    /// owner.
    pub fn attribute(&mut self, owners: &dyn Owners) -> (usize, usize) {
        let raw = owners.raw_sender().map(Arc::new);
        let mut shared: HashMap<u32, SharedProcess> = HashMap::new();
        let (mut looked, mut found) = (0, 0);
        for (&(protocol, local, local_port, remote, remote_port), flow) in &mut self.flows {
            if flow.looked_up {
                continue;
            }
            flow.looked_up = true;
            flow.owner = match owners.owner(protocol, local, local_port, remote, remote_port) {
                Some(p) => Some(shared.entry(p.pid).or_insert_with(|| Arc::new(p)).clone()),
                None => raw.clone(),
            };
            looked += 1;
            found += usize::from(flow.owner.is_some());
        }
        (looked, found)
    }

    /// Fills in owners found since the minute closed.
    pub fn name_rows(&self, minute: &mut FlowMinute) {
        for row in &mut minute.rows {
            if row.process.is_some() {
                continue;
            }
            row.process = self
                .flows
                .iter()
                .find(|(k, f)| {
                    k.0 == row.protocol
                        && k.1 == row.local
                        && k.3 == row.remote
                        && k.4 == row.remote_port
                        && f.owner.is_some()
                })
                .and_then(|(_, f)| f.owner.as_deref().cloned());
        }
    }

    /// The process that sent most to `remote` (and `port`, if not 0), or
    /// to anywhere if `remote` is `None`.
    pub fn main_sender(&self, remote: Option<IpAddr>, port: u16) -> Option<Process> {
        let mut by_pid: HashMap<u32, (u64, &SharedProcess)> = HashMap::new();
        for (key, flow) in &self.flows {
            if remote.is_some_and(|r| r != key.3) || (port != 0 && key.4 != port) {
                continue;
            }
            if let Some(owner) = &flow.owner {
                let entry = by_pid.entry(owner.pid).or_insert((0, owner));
                entry.0 += flow.minute.packets_out + 1;
            }
        }
        by_pid
            .into_values()
            .max_by_key(|(n, _)| *n)
            .map(|(_, p)| p.as_ref().clone())
    }

    /// Bytes sent per process and destination since the last call. Flows
    /// procfs has not been asked about yet keep their bytes for the next
    /// call, so an upload is not split between "unknown" and its process.
    pub fn uploads(&mut self) -> Vec<Upload> {
        let mut merged: HashMap<(Option<u32>, IpAddr, u16), Upload> = HashMap::new();
        for (key, flow) in &mut self.flows {
            if flow.unchecked_out == 0 || !flow.looked_up {
                continue;
            }
            let bytes = std::mem::take(&mut flow.unchecked_out);
            let pid = flow.owner.as_ref().map(|p| p.pid);
            merged
                .entry((pid, key.3, key.4))
                .or_insert_with(|| Upload {
                    process: flow.owner.as_deref().cloned(),
                    remote: key.3,
                    remote_port: key.4,
                    bytes: 0,
                })
                .bytes += bytes;
        }
        merged.into_values().collect()
    }

    /// Closes the minute if `now` is past it.
    pub fn tick(&mut self, now: u64) -> Option<FlowMinute> {
        let start = now - now % 60_000;
        if self.minute_start_ms == 0 || start <= self.minute_start_ms {
            return None;
        }
        let minute = self.summary();
        self.minute_start_ms = start;
        self.flows
            .retain(|_, f| now.saturating_sub(f.last_ms) < FLOW_IDLE_MS);
        minute
    }

    pub fn finish(&mut self, _now: u64) -> Option<FlowMinute> {
        let minute = self.summary();
        self.flows.clear();
        minute
    }

    /// The current minute's rows, and its counters reset.
    fn summary(&mut self) -> Option<FlowMinute> {
        let mut rows: HashMap<(Option<u32>, u8, IpAddr, IpAddr, u16), FlowRow> = HashMap::new();
        for (key, flow) in &mut self.flows {
            let counts = std::mem::take(&mut flow.minute);
            if counts == Counts::default() {
                continue;
            }
            let pid = flow.owner.as_ref().map(|p| p.pid);
            rows.entry((pid, key.0, key.1, key.3, key.4))
                .or_insert_with(|| FlowRow {
                    process: flow.owner.as_deref().cloned(),
                    local: key.1,
                    remote: key.3,
                    remote_port: key.4,
                    protocol: key.0,
                    counts: Counts::default(),
                })
                .counts
                .add(&counts);
        }
        let overflow = std::mem::take(&mut self.overflow);
        if rows.is_empty() && overflow == Counts::default() {
            return None;
        }
        let mut rows: Vec<FlowRow> = rows.into_values().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.counts.bytes_out + r.counts.bytes_in));
        let mut unlisted = overflow;
        let mut unlisted_rows = u64::from(overflow != Counts::default());
        for row in rows.iter().skip(MAX_ROWS) {
            unlisted.add(&row.counts);
            unlisted_rows += 1;
        }
        rows.truncate(MAX_ROWS);
        Some(FlowMinute {
            minute_start_ms: self.minute_start_ms,
            rows,
            unlisted_rows,
            unlisted,
        })
    }

    /// Rates per process over the last [`RATE_SECONDS`] whole seconds.
    pub fn rates(&self, now: u64) -> Vec<ProcessRate> {
        let second = now / 1000;
        let from = second.saturating_sub(RATE_SECONDS as u64);
        struct Acc {
            process: Option<SharedProcess>,
            out: u64,
            inb: u64,
            flows: std::collections::HashSet<FlowKey>,
            to: HashMap<(IpAddr, u16), u64>,
        }
        let mut by_pid: HashMap<Option<u32>, Acc> = HashMap::new();
        for (&key, flow) in &self.flows {
            let (out, inb) = flow
                .seconds
                .iter()
                .filter(|s| s.0 >= from && s.0 < second)
                .fold((0, 0), |acc, s| (acc.0 + s.1, acc.1 + s.2));
            if out + inb == 0 {
                continue;
            }
            let owner = flow.owner.clone();
            let acc = by_pid
                .entry(owner.as_ref().map(|p| p.pid))
                .or_insert_with(|| Acc {
                    process: owner.clone(),
                    out: 0,
                    inb: 0,
                    flows: Default::default(),
                    to: HashMap::new(),
                });
            acc.out += out;
            acc.inb += inb;
            acc.flows.insert(key);
            *acc.to.entry((key.3, key.4)).or_default() += out + inb;
        }
        let seconds = RATE_SECONDS as u64;
        let mut rates: Vec<ProcessRate> = by_pid
            .into_values()
            .map(|a| ProcessRate {
                process: a
                    .process
                    .as_ref()
                    .map_or_else(|| "(unknown)".to_owned(), |p| p.name.clone()),
                pid: a.process.as_ref().map_or(0, |p| p.pid),
                user: a
                    .process
                    .as_ref()
                    .map_or_else(String::new, |p| p.user.clone()),
                sent_per_sec: a.out / seconds,
                received_per_sec: a.inb / seconds,
                connections: a.flows.len(),
                top_destination: a
                    .to
                    .into_iter()
                    .max_by_key(|(_, b)| *b)
                    .map(|((ip, port), _)| std::net::SocketAddr::new(ip, port).to_string())
                    .unwrap_or_default(),
            })
            .collect();
        rates.sort_by_key(|r| std::cmp::Reverse(r.sent_per_sec + r.received_per_sec));
        rates
    }
}

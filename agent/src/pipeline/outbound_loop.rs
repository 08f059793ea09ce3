//! The outbound loop: the pure outbound [`Monitor`] with the I/O it needs
//! around it. It reads socket owners (at most twice a second, only when
//! the monitor needs them), takes the listening-port inventory, and keeps
//! the learned upload baseline in a state file across restarts.
//!
//! It runs on the capture thread, called by the capture loop; it must not
//! spawn threads or tasks, and must not send events itself (it returns
//! them).

use std::path::PathBuf;
use std::time::Duration;

use doorwatch_proto::v1;

use crate::events;
use crate::outbound::{Baseline, Monitor, inventory};
use crate::{procfs, sockets, state_file};

/// The outbound monitor with its procfs reads: owners when it needs them
/// (at most twice a second), the listening ports every `inventory_every`.
#[derive(Debug)]
pub struct OutboundLoop {
    pub(super) monitor: Monitor,
    inventory_every: Duration,
    last_read_ms: u64,
    last_inventory_ms: u64,
    pub(super) listeners: Option<Vec<inventory::Listener>>,
    last_error_ms: u64,
    /// Plain words about risky ports newly open, for the status file.
    pub(super) new_risks: Vec<String>,
    /// Where the learned upload baseline is kept across restarts.
    baseline_path: PathBuf,
    baseline_saved: (u64, Baseline),
}

/// Least milliseconds between two procfs reads for owners.
const OWNER_READ_MS: u64 = 500;

impl OutboundLoop {
    /// Starts from the baseline saved at `baseline_path` by an earlier
    /// run, if there is a readable one.
    pub fn new(mut monitor: Monitor, inventory_every: Duration, baseline_path: PathBuf) -> Self {
        match state_file::read::<Baseline>(&baseline_path) {
            Ok(learned) => {
                let hours = learned.per_hour_of_day.iter().flatten().count();
                tracing::info!(path = %baseline_path.display(), hours_of_day = hours, "restored the upload baseline");
                monitor.restore_baseline(learned);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %baseline_path.display(), error = %e, "cannot read the saved upload baseline; learning it anew");
            }
        }
        Self {
            baseline_saved: (0, monitor.baseline()),
            monitor,
            inventory_every,
            last_read_ms: 0,
            last_inventory_ms: 0,
            listeners: None,
            last_error_ms: 0,
            new_risks: Vec::new(),
            baseline_path,
        }
    }

    /// Saves the baseline once a minute when it changed (or now, if
    /// `force`): a crash loses at most a minute of learning.
    pub fn save_baseline(&mut self, now: u64, force: bool) {
        if !force && now.saturating_sub(self.baseline_saved.0) < 60_000 {
            return;
        }
        let learned = self.monitor.baseline();
        if learned == self.baseline_saved.1 {
            return;
        }
        if let Err(e) = state_file::write(&self.baseline_path, &learned) {
            tracing::warn!(path = %self.baseline_path.display(), error = %e, "cannot save the upload baseline");
        }
        self.baseline_saved = (now, learned);
    }

    /// Advances the monitor; returns a listening-ports event if they changed.
    pub fn tick(&mut self, now: u64) -> Vec<v1::Event> {
        self.monitor.tick(now);
        let inventory_due =
            now.saturating_sub(self.last_inventory_ms) >= self.inventory_every.as_millis() as u64;
        let owners_due =
            self.monitor.needs_owners() && now.saturating_sub(self.last_read_ms) >= OWNER_READ_MS;
        if !inventory_due && !owners_due {
            return Vec::new();
        }
        self.last_read_ms = now;
        let snapshot = match sockets::read() {
            Ok(s) => s,
            Err(e) => {
                if now.saturating_sub(self.last_error_ms) >= 60_000 {
                    self.last_error_ms = now;
                    tracing::warn!(error = %e, "cannot read the socket owners; traffic is reported without its processes");
                }
                procfs::Snapshot::default()
            }
        };
        let (flows, owned) = self.monitor.attribute(&snapshot);
        tracing::debug!(
            sockets = snapshot.sockets.len(),
            processes = snapshot.owners.len(),
            new_flows = flows,
            owned,
            "read socket owners"
        );
        let mut events = Vec::new();
        if inventory_due {
            self.last_inventory_ms = now;
            let listeners = inventory::listeners(&snapshot);
            if self.listeners.as_ref() != Some(&listeners) {
                for l in listeners.iter().filter(|l| !l.risk.is_empty()) {
                    let was = self.listeners.as_ref().is_some_and(|old| {
                        old.iter()
                            .any(|o| o.port == l.port && o.protocol == l.protocol)
                    });
                    if !was {
                        let process = l
                            .process
                            .as_ref()
                            .map_or("an unknown program", |p| p.name.as_str());
                        tracing::warn!(port = l.port, process, risk = %l.risk, "risky listening port");
                        self.new_risks.push(format!(
                            "{process} opened port {} to the network: {}.",
                            l.port, l.risk
                        ));
                    }
                }
                events.push(events::listening_event(&listeners, now));
                self.listeners = Some(listeners);
            }
        }
        events
    }
}

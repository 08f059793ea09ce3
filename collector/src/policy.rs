//! Central detection policy: stored per agent group in ClickHouse, changed
//! with `doorwatch-collector policy set`, and pushed to every connected
//! agent of the group without a restart.
//!
//! Every collector polls the table, so a change made through any of them
//! reaches all agents within [`REFRESH`]. Until agent groups come with
//! enrollment, every agent belongs to [`DEFAULT_GROUP`].

use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use doorwatch_proto::v1;
use doorwatch_store::{PolicyRow, Store, ip};
use tokio::sync::watch;

/// The group of agents that have no other.
pub use doorwatch_store::rules::DEFAULT_GROUP;

/// How often collectors look for a new policy version.
pub const REFRESH: Duration = Duration::from_secs(2);

/// The policy collector.toml gives when none was ever stored.
pub fn from_config(config: &PolicyConfig) -> PolicyRow {
    PolicyRow {
        policy_group: DEFAULT_GROUP.to_owned(),
        version: config.version,
        scan_min_ports: config.scan_min_ports,
        episode_idle_seconds: config.episode_idle_seconds,
        allowlisted_sources: config
            .allowlisted_sources
            .iter()
            .map(|&ip| ip::to_fixed16(ip))
            .collect(),
        updated_at: 0,
        updated_by: "collector.toml".to_owned(),
    }
}

/// The wire form agents receive.
pub fn to_wire(row: &PolicyRow) -> v1::Policy {
    v1::Policy {
        version: row.version,
        scan_min_ports: row.scan_min_ports,
        episode_idle_seconds: row.episode_idle_seconds,
        allowlisted_sources: row
            .allowlisted_sources
            .iter()
            .map(|&b| match ip::from_fixed16(b) {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            })
            .collect(),
    }
}

/// A change asked for on the command line.
#[derive(Debug, Default, Clone)]
pub struct PolicyChange {
    pub scan_min_ports: Option<u32>,
    pub episode_idle_seconds: Option<u32>,
    pub allow: Vec<IpAddr>,
    pub disallow: Vec<IpAddr>,
    pub clear_allowlist: bool,
}

/// The next version of `current` with `change` applied. Pure.
pub fn apply_change(current: &PolicyRow, change: &PolicyChange, now: u32, who: &str) -> PolicyRow {
    let mut next = current.clone();
    next.version = current.version + 1;
    next.updated_at = now;
    next.updated_by = who.to_owned();
    if let Some(n) = change.scan_min_ports {
        next.scan_min_ports = n;
    }
    if let Some(n) = change.episode_idle_seconds {
        next.episode_idle_seconds = n;
    }
    if change.clear_allowlist {
        next.allowlisted_sources.clear();
    }
    for &ip in &change.allow {
        let bytes = ip::to_fixed16(ip);
        if !next.allowlisted_sources.contains(&bytes) {
            next.allowlisted_sources.push(bytes);
        }
    }
    for &ip in &change.disallow {
        let bytes = ip::to_fixed16(ip);
        next.allowlisted_sources.retain(|b| *b != bytes);
    }
    next
}

/// Keeps `tx` at the newest stored policy of the default group until
/// `stop`; storage errors are logged and retried at the next refresh.
pub async fn follow(
    store: Store,
    tx: watch::Sender<Arc<v1::Policy>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match store.latest_policy(DEFAULT_GROUP).await {
            Ok(Some(row)) if row.version != tx.borrow().version => {
                tracing::info!(
                    group = DEFAULT_GROUP,
                    version = row.version,
                    "pushing new policy to agents"
                );
                let _ = tx.send(Arc::new(to_wire(&row)));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read policies"),
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Detection settings sent to agents in `Policy`. Zero keeps the agent's
/// own value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Policy version reported back by agents in heartbeats.
    #[serde(default)]
    pub version: u64,
    /// Distinct closed ports a source must probe before a scan is reported.
    #[serde(default)]
    pub scan_min_ports: u32,
    /// Seconds of silence after which an episode is closed.
    #[serde(default)]
    pub episode_idle_seconds: u32,
    /// Sources never reported, such as the campus vulnerability scanners.
    #[serde(default)]
    pub allowlisted_sources: Vec<std::net::IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_bumps_version_and_edits_the_allowlist() {
        let base = from_config(&PolicyConfig {
            version: 3,
            scan_min_ports: 0,
            episode_idle_seconds: 0,
            allowlisted_sources: vec!["198.18.0.5".parse().expect("literal")],
        });
        let change = PolicyChange {
            scan_min_ports: Some(6),
            allow: vec!["198.18.0.6".parse().expect("literal")],
            disallow: vec!["198.18.0.5".parse().expect("literal")],
            ..PolicyChange::default()
        };
        let next = apply_change(&base, &change, 100, "alice");
        assert_eq!(next.version, 4);
        assert_eq!(next.scan_min_ports, 6);
        assert_eq!(next.updated_by, "alice");
        let wire = to_wire(&next);
        assert_eq!(wire.allowlisted_sources, vec![vec![198, 18, 0, 6]]);
    }
}

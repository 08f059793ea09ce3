//! The correlator: a periodic job that reads the recent scan events of all
//! agents from ClickHouse and keeps campus-wide campaigns up to date.
//!
//! Three kinds (thresholds in `[correlation]`):
//! - **sweep**: one outside source, or one /24 (IPv6 /64), scans several
//!   PCs;
//! - **distributed**: several outside sources probe the same port on
//!   several PCs, each probing only a few ports (botnets on 22, 445, 3389);
//! - **internal**: a campus address scans other campus PCs.
//!
//! A campaign opens when its activity first crosses a threshold, grows as
//! new sources, PCs and ports join, goes quiet after `quiet_minutes`
//! without activity, and closes after `close_minutes`. Activity after that
//! opens a new campaign.
//!
//! Several collectors may correlate at once: a campaign's id is derived
//! from its kind, its key and when its activity began, every write is a
//! full new version, and the newest version wins (ReplacingMergeTree), so
//! they converge on the same rows. [`plan`] is pure; [`run`] does the I/O.

pub mod config;

use doorwatch_process::{clock, shutdown};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use doorwatch_store::ip::{self, Cidr};
use doorwatch_store::{
    ActivityFilter, ActivityRow, CampaignKind, CampaignMemberRow, CampaignRow, CampaignState,
    MemberCounts, MemberKind, Store, StoreError,
};
use tokio::sync::watch;

/// Correlation settings (see `[correlation]` in collector.toml).
#[derive(Debug, Clone)]
pub struct Settings {
    pub interval: Duration,
    /// How far back activity is looked for.
    pub window: Duration,
    pub quiet_after: Duration,
    pub close_after: Duration,
    pub sweep_min_pcs: u32,
    pub distributed_min_sources: u32,
    pub distributed_min_pcs: u32,
    pub distributed_max_ports: u32,
    pub internal_min_pcs: u32,
    /// PCs that must report the same outbound anomaly (kind and
    /// destination) for an outbound campaign.
    pub outbound_min_pcs: u32,
    pub campus: Vec<Cidr>,
    pub allowlist: Vec<Cidr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            window: Duration::from_secs(15 * 60),
            quiet_after: Duration::from_secs(5 * 60),
            close_after: Duration::from_secs(30 * 60),
            sweep_min_pcs: 3,
            distributed_min_sources: 3,
            distributed_min_pcs: 3,
            distributed_max_ports: 16,
            internal_min_pcs: 2,
            outbound_min_pcs: 2,
            campus: Vec::new(),
            allowlist: Vec::new(),
        }
    }
}

/// Recent activity of one kind and key.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub kind: CampaignKind,
    pub key: String,
    pub row: ActivityRow,
}

/// What one correlation pass writes.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Members seen now, to add (repeats collapse in the table).
    pub members: Vec<CampaignMemberRow>,
    /// Campaigns with new activity; counts, severity and text are filled
    /// in by [`finish`] once the members are stored.
    pub touched: Vec<CampaignRow>,
    /// Campaigns that went quiet or closed, ready to store.
    pub aged: Vec<CampaignRow>,
}

/// Matches activity to the campaigns in `active` (not closed), opens new
/// ones, and ages the rest. Pure.
pub fn plan(active: &[CampaignRow], activity: &[Activity], now: u32, settings: &Settings) -> Plan {
    let mut by_key: HashMap<(CampaignKind, &str), &CampaignRow> = HashMap::new();
    for campaign in active {
        by_key.insert((campaign.kind, campaign.campaign_key.as_str()), campaign);
    }
    let mut plan = Plan::default();
    let mut seen = std::collections::HashSet::new();
    for a in activity {
        let existing = by_key.get(&(a.kind, a.key.as_str())).copied();
        let mut row = match existing {
            Some(c) => c.clone(),
            None => CampaignRow {
                campaign_id: campaign_id(a.kind, &a.key, a.row.activity_start),
                kind: a.kind,
                campaign_key: a.key.clone(),
                state: CampaignState::Open,
                severity: 0,
                first_seen: a.row.activity_start,
                last_seen: a.row.activity_end,
                pcs: 0,
                sources: 0,
                ports: 0,
                open_ports: 0,
                explanation: String::new(),
                updated_at: now,
                version: 0,
                exposed_ports: 0,
            },
        };
        seen.insert(row.campaign_id);
        row.first_seen = row.first_seen.min(a.row.activity_start);
        row.last_seen = row.last_seen.max(a.row.activity_end);
        row.open_ports = row.open_ports.max(a.row.open_ports_hit.len() as u32);
        row.exposed_ports = row.exposed_ports.max(a.row.exposed_ports_hit.len() as u32);
        row.state = age(row.last_seen, now, settings);
        let member = |kind: MemberKind, value: String| CampaignMemberRow {
            campaign_id: row.campaign_id,
            member: kind,
            value,
            first_seen: a.row.activity_start,
            last_seen: a.row.activity_end,
        };
        plan.members.extend(
            a.row
                .sources
                .iter()
                .map(|s| member(MemberKind::Source, ip::from_fixed16(*s).to_string())),
        );
        plan.members.extend(
            a.row
                .pcs
                .iter()
                .map(|pc| member(MemberKind::Pc, pc.clone())),
        );
        plan.members.extend(
            a.row
                .ports
                .iter()
                .map(|p| member(MemberKind::Port, p.to_string())),
        );
        plan.touched.push(row);
    }
    for campaign in active {
        if seen.contains(&campaign.campaign_id) {
            continue;
        }
        let aged = age(campaign.last_seen, now, settings);
        if aged != campaign.state {
            let mut row = campaign.clone();
            row.state = aged;
            row.updated_at = now;
            row.version = version(&row);
            plan.aged.push(row);
        }
    }
    plan
}

/// Fills in counts, severity, text and version of touched campaigns from
/// their stored members, and keeps only those that changed.
pub fn finish(
    touched: Vec<CampaignRow>,
    counts: &[MemberCounts],
    before: &[CampaignRow],
    now: u32,
) -> Vec<CampaignRow> {
    let counts: HashMap<uuid::Uuid, &MemberCounts> =
        counts.iter().map(|c| (c.campaign_id, c)).collect();
    let before: HashMap<uuid::Uuid, &CampaignRow> =
        before.iter().map(|c| (c.campaign_id, c)).collect();
    touched
        .into_iter()
        .filter_map(|mut row| {
            if let Some(c) = counts.get(&row.campaign_id) {
                row.pcs = row.pcs.max(c.pcs);
                row.sources = row.sources.max(c.sources);
                row.ports = row.ports.max(c.ports);
            }
            row.severity = severity(&row);
            row.explanation = explain(&row);
            row.version = version(&row);
            let changed = before.get(&row.campaign_id).is_none_or(|old| {
                (
                    old.state,
                    old.severity,
                    old.last_seen,
                    old.pcs,
                    old.sources,
                    old.ports,
                ) != (
                    row.state,
                    row.severity,
                    row.last_seen,
                    row.pcs,
                    row.sources,
                    row.ports,
                )
            });
            row.updated_at = now;
            changed.then_some(row)
        })
        .collect()
}

/// The state a campaign last active at `last_seen` is in at `now`.
fn age(last_seen: u32, now: u32, settings: &Settings) -> CampaignState {
    let idle = u64::from(now.saturating_sub(last_seen));
    if idle >= settings.close_after.as_secs() {
        CampaignState::Closed
    } else if idle >= settings.quiet_after.as_secs() {
        CampaignState::Quiet
    } else {
        CampaignState::Open
    }
}

/// The same for every collector: kind, key and the start of the activity.
pub fn campaign_id(kind: CampaignKind, key: &str, first_seen: u32) -> uuid::Uuid {
    // The kind's number, not its label: ids must not change across versions.
    let kind = kind as i8;
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("doorwatch-campaign\0{kind}\0{key}\0{first_seen}").as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Later activity, broader membership and a later state all make a higher
/// version, so the most advanced write wins whoever made it.
fn version(row: &CampaignRow) -> u64 {
    let breadth = u64::from(row.pcs)
        .saturating_add(u64::from(row.sources))
        .saturating_add(u64::from(row.ports))
        .min((1 << 20) - 1);
    (u64::from(row.last_seen) << 24) | (breadth << 3) | (row.state as u64 & 0x7)
}

/// 1 low, 2 medium, 3 high, 4 critical: rises with breadth, with open
/// ports hit, again with risky exposures hit, and with internal
/// involvement.
pub fn severity(row: &CampaignRow) -> u8 {
    // Campus PCs doing it themselves start higher than outsiders.
    let mut level: u8 = if matches!(row.kind, CampaignKind::Internal | CampaignKind::Outbound) {
        2
    } else {
        1
    };
    if row.pcs >= 10 || row.sources >= 10 {
        level += 1;
    }
    if row.pcs >= 50 || row.sources >= 100 {
        level += 1;
    }
    if row.open_ports > 0 {
        level += 1;
    }
    // It reached an open proxy, file sharing, remote desktop, telnet or an
    // exposed database: the doors attackers want most.
    if row.exposed_ports > 0 {
        level += 1;
    }
    level.min(4)
}

pub use doorwatch_store::severity_label;

/// The campaign in plain words.
pub fn explain(row: &CampaignRow) -> String {
    let pcs = plural(row.pcs, "campus PC", "campus PCs");
    let ports = plural(row.ports, "port", "ports");
    let open = match (row.open_ports, row.exposed_ports) {
        (0, _) => "No open port was hit.".to_owned(),
        (n, 0) => format!(
            "{} open on some PC {} hit: check those services.",
            plural(n, "port", "ports"),
            if n == 1 { "was" } else { "were" }
        ),
        (n, risky) => format!(
            "{} open on some PC {} hit, {} of them a risky exposure (an open proxy, file \
             sharing, remote desktop, telnet or a database open to the network): close or \
             protect those first.",
            plural(n, "port", "ports"),
            if n == 1 { "was" } else { "were" },
            risky.min(n),
        ),
    };
    match row.kind {
        CampaignKind::Sweep => format!(
            "{key} ({sources}) swept {pcs} ({ports} named in their reports). {open}",
            key = row.campaign_key,
            sources = plural(row.sources, "address", "addresses"),
        ),
        CampaignKind::Distributed => format!(
            "{sources} probed port {key} on {pcs}, each trying only a few ports: a coordinated \
             campaign such as a botnet. {open}",
            key = row.campaign_key,
            sources = plural(row.sources, "outside address", "outside addresses"),
        ),
        CampaignKind::Internal => format!(
            "Campus address {key} scanned {pcs} ({ports} named in their reports). A campus PC \
             scanning others is often \
             infected (a worm) or misused: check it. {open}",
            key = row.campaign_key,
        ),
        CampaignKind::Outbound => format!(
            "{pcs} show the same suspicious traffic: {key}. Several PCs doing the same points to \
             malware spreading on campus, or to one infected installer: check these PCs.",
            key = row.campaign_key,
        ),
    }
}

/// An outbound activity key ("KIND:HEX:PORT", see the store) in words.
fn outbound_key(group_key: &str) -> String {
    let mut parts = group_key.splitn(3, ':');
    let (kind, hex, port) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let destination = if hex.chars().all(|c| c == '0') {
        None
    } else {
        Some(network_key(hex, false))
    };
    let to = match (&destination, port) {
        (Some(ip), "0") => ip.clone(),
        (Some(ip), port) => format!("{ip}:{port}"),
        (None, port) => format!("port {port}"),
    };
    match kind {
        "upload_volume" => format!("large uploads to {to}"),
        "scan" => match destination {
            Some(ip) => format!("scanning {ip}"),
            None => format!("scanning {to} on many hosts"),
        },
        "smtp_fanout" => "mail sent straight to many mail servers (spam)".to_owned(),
        "failed_connections" => "mostly failing connections".to_owned(),
        other => format!("{other} towards {to}"),
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The activity of all three kinds in the window ending `now`.
async fn read_activity(
    store: &Store,
    settings: &Settings,
    now: u32,
) -> Result<Vec<Activity>, StoreError> {
    let filter = ActivityFilter {
        since: now.saturating_sub(settings.window.as_secs() as u32),
        campus: settings.campus.clone(),
        allowlist: settings.allowlist.clone(),
    };
    let mut activity = Vec::new();
    for row in store
        .sweep_activity(&filter, settings.sweep_min_pcs)
        .await?
    {
        let key = network_key(&row.group_key, true);
        activity.push(Activity {
            kind: CampaignKind::Sweep,
            key,
            row,
        });
    }
    for row in store
        .distributed_activity(
            &filter,
            settings.distributed_min_sources,
            settings.distributed_min_pcs,
            settings.distributed_max_ports,
        )
        .await?
    {
        activity.push(Activity {
            kind: CampaignKind::Distributed,
            key: row.group_key.clone(),
            row,
        });
    }
    for row in store
        .internal_activity(&filter, settings.internal_min_pcs)
        .await?
    {
        let key = network_key(&row.group_key, false);
        activity.push(Activity {
            kind: CampaignKind::Internal,
            key,
            row,
        });
    }
    for mut row in store
        .outbound_activity(filter.since, settings.outbound_min_pcs)
        .await?
    {
        // The destination is kept as the member; none when all zeros.
        row.sources.retain(|s| *s != [0; 16]);
        activity.push(Activity {
            kind: CampaignKind::Outbound,
            key: outbound_key(&row.group_key),
            row,
        });
    }
    Ok(activity)
}

/// `hex` of a stored address as text: a /24 or /64 network, or the
/// address itself.
fn network_key(hex: &str, network: bool) -> String {
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = hex
            .get(i * 2..i * 2 + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    let ip: IpAddr = ip::from_fixed16(bytes);
    if !network {
        return ip.to_string();
    }
    let prefix = if ip.is_ipv4() { 24 } else { 64 };
    Cidr::of(ip, prefix).to_string()
}

/// One pass: read, plan, write. Returns the campaigns it stored.
pub async fn pass(
    store: &Store,
    settings: &Settings,
    now: u32,
) -> Result<Vec<CampaignRow>, StoreError> {
    let activity = read_activity(store, settings, now).await?;
    let active = store.active_campaigns().await?;
    let plan = plan(&active, &activity, now, settings);
    store.insert_campaign_members(&plan.members).await?;
    let ids: Vec<uuid::Uuid> = plan.touched.iter().map(|c| c.campaign_id).collect();
    let counts = store.campaign_member_counts(&ids).await?;
    let mut changed = finish(plan.touched, &counts, &active, now);
    changed.extend(plan.aged);
    store.insert_campaigns(&changed).await?;
    let before: HashMap<uuid::Uuid, &CampaignRow> =
        active.iter().map(|c| (c.campaign_id, c)).collect();
    for row in &changed {
        let what = match before.get(&row.campaign_id) {
            None => "campaign opened",
            Some(_) if row.state == CampaignState::Closed => "campaign closed",
            Some(old) if row.severity > old.severity => "campaign escalated",
            Some(old) if row.state != old.state => "campaign state changed",
            Some(_) => "campaign grew",
        };
        tracing::info!(
            campaign_id = %row.campaign_id,
            kind = row.kind.label(),
            key = %row.campaign_key,
            state = row.state.label(),
            severity = severity_label(row.severity),
            pcs = row.pcs,
            sources = row.sources,
            ports = row.ports,
            "{what}"
        );
    }
    Ok(changed)
}

/// Runs a pass every `settings.interval` until shutdown. A failed pass is
/// logged (once until it works again) and retried at the next interval.
pub async fn run(store: Store, settings: Settings, mut shutdown: watch::Receiver<bool>) {
    let recorded = doorwatch_store::AllowlistRow {
        networks: settings.allowlist.iter().map(ToString::to_string).collect(),
        updated_at: clock::unix_now_u32(),
    };
    if let Err(e) = store.insert_allowlist(&recorded).await {
        tracing::warn!(error = %e, "cannot record the allowlist for the console");
    }
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            _ = shutdown::stop_requested(&mut shutdown) => return,
        }
        let now = clock::unix_now_u32();
        match pass(&store, &settings, now).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("correlation works again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "correlation pass failed; retrying");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(kind: CampaignKind, key: &str, first: u32, last: u32, pcs: &[&str]) -> Activity {
        Activity {
            kind,
            key: key.to_owned(),
            row: ActivityRow {
                group_key: String::new(),
                sources: vec![ip::to_fixed16("203.0.113.7".parse().expect("ip"))],
                pcs: pcs.iter().map(|p| (*p).to_owned()).collect(),
                ports: vec![22, 80],
                open_ports_hit: vec![],
                exposed_ports_hit: vec![],
                activity_start: first,
                activity_end: last,
            },
        }
    }

    #[test]
    fn new_activity_opens_a_campaign_with_a_deterministic_id() {
        let settings = Settings::default();
        let a = activity(
            CampaignKind::Sweep,
            "203.0.113.0/24",
            1000,
            1010,
            &["a", "b", "c"],
        );
        let plan1 = plan(&[], std::slice::from_ref(&a), 1012, &settings);
        let plan2 = plan(&[], &[a], 1013, &settings);
        assert_eq!(plan1.touched.len(), 1);
        assert_eq!(
            plan1.touched[0].campaign_id, plan2.touched[0].campaign_id,
            "same id on every collector"
        );
        assert_eq!(plan1.touched[0].state, CampaignState::Open);
        assert_eq!(
            plan1.members.len(),
            1 + 3 + 2,
            "a source, three PCs, two ports"
        );
        let counts = [MemberCounts {
            campaign_id: plan1.touched[0].campaign_id,
            sources: 1,
            pcs: 3,
            ports: 2,
        }];
        let rows = finish(plan1.touched, &counts, &[], 1012);
        assert_eq!(rows[0].pcs, 3);
        assert_eq!(rows[0].severity, 1);
        assert!(
            rows[0].explanation.contains("swept 3 campus PCs"),
            "{}",
            rows[0].explanation
        );
    }

    #[test]
    fn more_activity_grows_the_same_campaign_and_silence_ages_it() {
        let settings = Settings::default();
        let first = activity(
            CampaignKind::Sweep,
            "203.0.113.0/24",
            1000,
            1010,
            &["a", "b", "c"],
        );
        let opened = plan(&[], &[first], 1010, &settings);
        let counts = |pcs| {
            [MemberCounts {
                campaign_id: opened.touched[0].campaign_id,
                sources: 1,
                pcs,
                ports: 2,
            }]
        };
        let stored = finish(opened.touched.clone(), &counts(3), &[], 1010);
        // Later activity in a window that no longer holds the first events.
        let later = activity(CampaignKind::Sweep, "203.0.113.0/24", 1500, 1600, &["d"]);
        let grown = plan(&stored, &[later], 1600, &settings);
        assert_eq!(
            grown.touched[0].campaign_id, stored[0].campaign_id,
            "grows, not a new one"
        );
        assert_eq!(grown.touched[0].first_seen, 1000);
        let grown = finish(grown.touched, &counts(14), &stored, 1600);
        assert_eq!(grown[0].pcs, 14);
        assert_eq!(grown[0].severity, 2, "breadth raises severity");
        assert!(grown[0].version > stored[0].version);
        // Nothing new: no write.
        let same = plan(&grown, &[], 1601, &settings);
        assert!(same.touched.is_empty() && same.aged.is_empty());
        // Quiet after 5 minutes, closed after 30.
        let quiet = plan(&grown, &[], 1600 + 301, &settings);
        assert_eq!(quiet.aged[0].state, CampaignState::Quiet);
        let closed = plan(&quiet.aged, &[], 1600 + 1801, &settings);
        assert_eq!(closed.aged[0].state, CampaignState::Closed);
        assert!(closed.aged[0].version > quiet.aged[0].version);
    }

    #[test]
    fn internal_campaigns_start_higher_and_open_ports_raise_severity() {
        let mut row = plan(
            &[],
            &[activity(
                CampaignKind::Internal,
                "198.18.0.12",
                1,
                2,
                &["a", "b"],
            )],
            2,
            &Settings::default(),
        )
        .touched
        .remove(0);
        row.pcs = 2;
        assert_eq!(severity(&row), 2);
        row.open_ports = 1;
        assert_eq!(severity(&row), 3);
        assert!(explain(&row).contains("Campus address 198.18.0.12 scanned 2 campus PCs"));
        row.exposed_ports = 1;
        assert_eq!(
            severity(&row),
            4,
            "a risky exposure reached is critical inside campus"
        );
        assert!(
            explain(&row).contains("1 of them a risky exposure"),
            "{}",
            explain(&row)
        );
    }

    #[test]
    fn outbound_keys_read_as_words() {
        assert_eq!(
            outbound_key("upload_volume:00000000000000000000FFFFC6336409:443"),
            "large uploads to 198.51.100.9:443"
        );
        assert_eq!(
            outbound_key("scan:00000000000000000000000000000000:445"),
            "scanning port 445 on many hosts"
        );
        assert!(outbound_key("smtp_fanout:00000000000000000000000000000000:25").contains("spam"));
    }

    #[test]
    fn network_keys_read_back_as_networks() {
        let hex = |ip: &str| {
            ip::to_fixed16(ip.parse().expect("ip"))
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        };
        assert_eq!(network_key(&hex("203.0.113.0"), true), "203.0.113.0/24");
        assert_eq!(network_key(&hex("fd00:d00::"), true), "fd00:d00::/64");
        assert_eq!(network_key(&hex("198.18.0.12"), false), "198.18.0.12");
    }
}

//! Retention: how long each family of tables keeps its rows, the plan of
//! what goes and when (pure), and the task that carries it out.
//!
//! Time-series tables go by whole partitions (`ALTER TABLE … DROP
//! PARTITION`): daily ones (`toYYYYMMDD`) for events, outbound and
//! heartbeats, monthly ones (`toYYYYMM`) for the audit log. A partition goes
//! once all of it, plus one day for the server's time zone, is older than
//! its family's window, so nothing inside the window is ever touched.
//! Campaigns are keyed by id (their versions must share a partition to
//! collapse), so a campaign goes whole, with its members, alerts and
//! triage, once its last activity left the window. Lease claims, the
//! collectors' own bookkeeping, go after two days.
//!
//! One collector at a time does it: the holder of the `retention` lease.
//! Why not TTL: 18.16 has none, and one mechanism on every server keeps
//! `retention show` exact and a changed window effective without an
//! `ALTER … MODIFY TTL` of every table (see docs/clickhouse.md).

use doorwatch_process::config::ConfigError;
use doorwatch_process::{clock, shutdown};
use serde::Deserialize;
use std::time::Duration;

use doorwatch_store::{PartitionRow, Store, StoreError};
use tokio::sync::watch;

/// A group of tables that shares one retention window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Scan, knock and flood events.
    Events,
    /// Flow minutes and outbound anomalies.
    Outbound,
    /// Agent heartbeats.
    Heartbeats,
    /// Campaigns, their members, alerts and triage.
    Campaigns,
    /// The console's audit log.
    Audit,
}

impl Family {
    pub const ALL: [Self; 5] = [
        Self::Events,
        Self::Outbound,
        Self::Heartbeats,
        Self::Campaigns,
        Self::Audit,
    ];

    /// The family's name, as in `[retention]` (`events_days`, …).
    pub fn label(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Outbound => "outbound",
            Self::Heartbeats => "heartbeats",
            Self::Campaigns => "campaigns",
            Self::Audit => "audit",
        }
    }

    /// Every table of the family.
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Self::Events => &["scan_events", "knock_events", "flood_events"],
            Self::Outbound => &["flow_minutes", "outbound_anomalies"],
            Self::Heartbeats => &["agent_heartbeats"],
            Self::Campaigns => &["campaigns", "campaign_members", "alerts", "campaign_triage"],
            Self::Audit => &["audit_log"],
        }
    }

    /// Whether the family's tables go by time partitions (the campaign
    /// tables go by campaign instead).
    fn partitioned(self) -> bool {
        self != Self::Campaigns
    }
}

/// The tables that go by partition, with their family.
fn partitioned_tables() -> impl Iterator<Item = (&'static str, Family)> {
    Family::ALL
        .into_iter()
        .filter(|f| f.partitioned())
        .flat_map(|f| f.tables().iter().map(move |t| (*t, f)))
}

/// How long lease claims are kept: they matter for one term only.
pub const LEASE_CLAIMS_KEPT: Duration = Duration::from_secs(2 * 86_400);
/// Slack after a partition's last UTC day, for servers whose time zone
/// puts a partition's day up to 14 hours later than UTC's.
const TIME_ZONE_SLACK: u64 = 86_400;

/// The validated `[retention]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Whether this collector applies retention (as lease holder).
    pub enabled: bool,
    /// Between two passes of the lease holder.
    pub interval: Duration,
    pub events_days: u32,
    pub outbound_days: u32,
    pub heartbeats_days: u32,
    pub campaigns_days: u32,
    pub audit_days: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(3600),
            events_days: 90,
            outbound_days: 30,
            heartbeats_days: 30,
            campaigns_days: 365,
            audit_days: 730,
        }
    }
}

impl Settings {
    /// Days `family` keeps; `None` keeps forever (configured as 0).
    pub fn keep_days(&self, family: Family) -> Option<u32> {
        let days = match family {
            Family::Events => self.events_days,
            Family::Outbound => self.outbound_days,
            Family::Heartbeats => self.heartbeats_days,
            Family::Campaigns => self.campaigns_days,
            Family::Audit => self.audit_days,
        };
        (days > 0).then_some(days)
    }

    /// Unix time before which `family`'s rows are out of the window, if it
    /// has one.
    pub fn cutoff(&self, family: Family, now: u64) -> Option<u64> {
        self.keep_days(family)
            .map(|days| now.saturating_sub(u64::from(days) * 86_400))
    }
}

/// What becomes of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFate {
    pub table: &'static str,
    pub family: Family,
    pub partition: String,
    pub rows: u64,
    pub bytes: u64,
    /// When it may be dropped (Unix seconds); `None`: kept forever, or a
    /// partition value that is no date (left alone).
    pub goes_at: Option<u64>,
}

impl PartitionFate {
    /// Whether it is due at `now`.
    pub fn due(&self, now: u64) -> bool {
        self.goes_at.is_some_and(|at| at <= now)
    }
}

/// Pure: the first Unix second after partition `value` (`YYYYMMDD` or
/// `YYYYMM`, in UTC), or `None` if it is no such date.
pub fn partition_end(value: &str) -> Option<u64> {
    let digits = |range: std::ops::Range<usize>| value.get(range)?.parse::<u32>().ok();
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year = i32::try_from(digits(0..4)?).ok()?;
    let month = time::Month::try_from(u8::try_from(digits(4..6)?).ok()?).ok()?;
    let end = match value.len() {
        8 => {
            let day = u8::try_from(digits(6..8)?).ok()?;
            time::Date::from_calendar_date(year, month, day)
                .ok()?
                .next_day()?
        }
        6 => {
            let (next_year, next_month) = if month == time::Month::December {
                (year + 1, time::Month::January)
            } else {
                (year, month.next())
            };
            time::Date::from_calendar_date(next_year, next_month, 1).ok()?
        }
        _ => return None,
    };
    u64::try_from(end.midnight().assume_utc().unix_timestamp()).ok()
}

/// Pure: the fate of each partition of a table retention knows, in the
/// order given. Partitions of other tables are left out.
pub fn plan(settings: &Settings, partitions: &[PartitionRow]) -> Vec<PartitionFate> {
    partitions
        .iter()
        .filter_map(|p| {
            let (table, family) = partitioned_tables().find(|(table, _)| *table == p.table_name)?;
            let goes_at = settings.keep_days(family).and_then(|days| {
                Some(
                    partition_end(&p.partition_value)? + TIME_ZONE_SLACK + u64::from(days) * 86_400,
                )
            });
            Some(PartitionFate {
                table,
                family,
                partition: p.partition_value.clone(),
                rows: p.rows,
                bytes: p.bytes_on_disk,
                goes_at,
            })
        })
        .collect()
}

/// Everything retention would do now, and what it keeps.
#[derive(Debug, Clone)]
pub struct Review {
    pub partitions: Vec<PartitionFate>,
    /// Campaigns whose last activity left the window.
    pub expired_campaigns: Vec<uuid::Uuid>,
}

/// Reads what retention would do at `now`, without changing anything.
pub async fn review(store: &Store, settings: &Settings, now: u64) -> Result<Review, StoreError> {
    let tables: Vec<&str> = partitioned_tables().map(|(t, _)| t).collect();
    let partitions = plan(settings, &store.partitions(&tables).await?);
    let expired_campaigns = match settings.cutoff(Family::Campaigns, now) {
        Some(cutoff) => {
            store
                .campaigns_last_seen_before(clock::seconds(cutoff))
                .await?
        }
        None => Vec::new(),
    };
    Ok(Review {
        partitions,
        expired_campaigns,
    })
}

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub partitions_dropped: usize,
    pub rows_dropped: u64,
    pub campaigns_deleted: usize,
    pub lease_claims_deleted: u64,
}

/// One pass: drops every due partition, deletes expired campaigns and old
/// lease claims. Idempotent: a second pass at once finds nothing to do.
pub async fn apply(store: &Store, settings: &Settings, now: u64) -> Result<PassReport, StoreError> {
    let review = review(store, settings, now).await?;
    let mut report = PassReport::default();
    for fate in review.partitions.iter().filter(|f| f.due(now)) {
        store.drop_partition(fate.table, &fate.partition).await?;
        tracing::info!(
            table = fate.table,
            partition = %fate.partition,
            rows = fate.rows,
            family = fate.family.label(),
            "retention dropped a partition"
        );
        report.partitions_dropped += 1;
        report.rows_dropped += fate.rows;
    }
    if !review.expired_campaigns.is_empty() {
        store.delete_campaigns(&review.expired_campaigns).await?;
        tracing::info!(
            campaigns = review.expired_campaigns.len(),
            "retention deleted campaigns whose last activity left the window"
        );
        report.campaigns_deleted = review.expired_campaigns.len();
    }
    let lease_cutoff = now.saturating_sub(LEASE_CLAIMS_KEPT.as_secs());
    report.lease_claims_deleted = store
        .delete_leases_before(clock::seconds(lease_cutoff))
        .await?;
    Ok(report)
}

/// How often the task asks whether it holds the lease.
const LEASE_CHECK: Duration = Duration::from_secs(5);

/// Applies retention every `settings.interval` while this collector holds
/// the `retention` lease, until shutdown.
pub async fn run(store: Store, settings: Settings, mut shutdown: watch::Receiver<bool>) {
    let mut lease = crate::lease::Lease::new("retention");
    let mut last_pass: Option<tokio::time::Instant> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LEASE_CHECK) => {}
            _ = shutdown::stop_requested(&mut shutdown) => return,
        }
        match lease.held(&store).await {
            Ok(Some(true)) => {}
            Ok(_) => continue,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot claim the retention lease; retrying");
                }
                failing = true;
                continue;
            }
        }
        if last_pass.is_some_and(|at| at.elapsed() < settings.interval) {
            continue;
        }
        match apply(&store, &settings, clock::unix_now()).await {
            Ok(report) => {
                failing = false;
                last_pass = Some(tokio::time::Instant::now());
                tracing::info!(
                    partitions = report.partitions_dropped,
                    rows = report.rows_dropped,
                    campaigns = report.campaigns_deleted,
                    lease_claims = report.lease_claims_deleted,
                    "retention pass done"
                );
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "retention pass failed; retrying");
                }
                failing = true;
            }
        }
    }
}

/// How long each family of tables keeps its rows. Old data goes by whole
/// days (whole months for the audit log), dropped by one collector at a
/// time. 0 keeps a family forever.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Take part in applying retention (one collector at a time does it).
    pub enabled: bool,
    /// Minutes between two retention passes.
    pub check_minutes: u64,
    /// Days of scan, knock and flood events.
    pub events_days: u32,
    /// Days of flow minutes and outbound anomalies.
    pub outbound_days: u32,
    /// Days of agent heartbeats.
    pub heartbeats_days: u32,
    /// Days after its last activity that a campaign is kept, with its
    /// members, alerts and triage.
    pub campaigns_days: u32,
    /// Days of the console's audit log (kept longest by default).
    pub audit_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let d = crate::retention::Settings::default();
        Self {
            enabled: d.enabled,
            check_minutes: d.interval.as_secs() / 60,
            events_days: d.events_days,
            outbound_days: d.outbound_days,
            heartbeats_days: d.heartbeats_days,
            campaigns_days: d.campaigns_days,
            audit_days: d.audit_days,
        }
    }
}

impl RetentionConfig {
    pub(crate) fn validate(self) -> Result<crate::retention::Settings, ConfigError> {
        let range = |field: &'static str, value: u64, min: u64, max: u64| {
            if (value == 0 && field.ends_with("_days")) || (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    field,
                    format!("{value} is outside {min}..={max} (0 keeps forever)"),
                ))
            }
        };
        range("retention.check_minutes", self.check_minutes, 1, 1440)?;
        // A day at least: partitions are whole days. 100 years at most.
        range("retention.events_days", self.events_days.into(), 1, 36_500)?;
        range(
            "retention.outbound_days",
            self.outbound_days.into(),
            1,
            36_500,
        )?;
        range(
            "retention.heartbeats_days",
            self.heartbeats_days.into(),
            1,
            36_500,
        )?;
        range(
            "retention.campaigns_days",
            self.campaigns_days.into(),
            1,
            36_500,
        )?;
        range("retention.audit_days", self.audit_days.into(), 1, 36_500)?;
        Ok(crate::retention::Settings {
            enabled: self.enabled,
            interval: std::time::Duration::from_secs(self.check_minutes * 60),
            events_days: self.events_days,
            outbound_days: self.outbound_days,
            heartbeats_days: self.heartbeats_days,
            campaigns_days: self.campaigns_days,
            audit_days: self.audit_days,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(table: &str, value: &str) -> PartitionRow {
        PartitionRow {
            table_name: table.into(),
            partition_value: value.into(),
            rows: 10,
            bytes_on_disk: 100,
        }
    }

    /// 2026-12-03T00:00:00Z
    const DEC_3: u64 = 1_796_256_000;

    #[test]
    fn partitions_end_at_the_next_utc_midnight_or_month() {
        assert_eq!(partition_end("20261202"), Some(DEC_3));
        assert_eq!(partition_end("20261231"), Some(DEC_3 + 29 * 86_400));
        assert_eq!(partition_end("202611"), Some(DEC_3 - 2 * 86_400));
        assert_eq!(partition_end("202612"), Some(DEC_3 + 29 * 86_400));
        for bad in [
            "", "2026", "20261301", "20260230", "2026120", "tuple()", "-2026120",
        ] {
            assert_eq!(partition_end(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_day_goes_once_all_of_it_and_a_day_of_slack_left_the_window() {
        let settings = Settings {
            events_days: 7,
            ..Settings::default()
        };
        let fates = plan(&settings, &[partition("scan_events", "20261125")]);
        // The day ends Nov 26 00:00; +1 day slack, +7 days: Dec 4 00:00.
        let at = fates[0].goes_at.expect("has a window");
        assert_eq!(at, DEC_3 + 86_400);
        assert!(!fates[0].due(at - 1), "a second before, it stays");
        assert!(fates[0].due(at));
    }

    #[test]
    fn every_row_of_a_dropped_partition_is_older_than_the_window() {
        let settings = Settings::default();
        for family in Family::ALL.into_iter().filter(|f| f.partitioned()) {
            let table = family.tables()[0];
            for value in ["20260101", "20260228", "202602", "202612"] {
                let fate = &plan(&settings, &[partition(table, value)])[0];
                let at = fate.goes_at.expect("default windows keep finite");
                let newest_row = partition_end(value).expect("date") - 1;
                let cutoff = settings.cutoff(family, at).expect("window");
                assert!(newest_row < cutoff, "{table} {value}");
            }
        }
    }

    #[test]
    fn zero_keeps_forever_and_unknown_tables_are_left_out() {
        let settings = Settings {
            audit_days: 0,
            ..Settings::default()
        };
        let fates = plan(
            &settings,
            &[
                partition("audit_log", "202001"),
                partition("agents", "tuple()"),
                partition("scan_events", "not-a-date"),
            ],
        );
        assert_eq!(fates.len(), 2);
        assert_eq!(fates[0].goes_at, None);
        assert!(!fates[0].due(u64::MAX));
        assert_eq!(fates[1].goes_at, None, "a partition that is no date stays");
    }

    #[test]
    fn families_cover_every_time_series_table_once() {
        let mut all: Vec<&str> = Family::ALL
            .iter()
            .flat_map(|f| f.tables())
            .copied()
            .collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
    }
}

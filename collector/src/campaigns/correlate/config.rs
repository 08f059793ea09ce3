//! The `[correlation]` table: when scans seen by many PCs become a
//! campaign, validated into [`super::Settings`].

use doorwatch_process::config::ConfigError;
use serde::Deserialize;

/// How scans seen by many PCs are grouped into campaigns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    /// Run the correlator in this collector. Several may run at once.
    pub enabled: bool,
    /// Seconds between correlation passes.
    pub interval_seconds: u64,
    /// Minutes of recent events each pass looks at.
    pub window_minutes: u64,
    /// Minutes without activity after which a campaign is quiet.
    pub quiet_minutes: u64,
    /// Minutes without activity after which a campaign is closed.
    pub close_minutes: u64,
    /// PCs one outside source (or /24, /64) must scan to be a sweep.
    pub sweep_min_pcs: u32,
    /// Outside sources that must probe one port for a distributed campaign.
    pub distributed_min_sources: u32,
    /// PCs they must probe it on.
    pub distributed_min_pcs: u32,
    /// A source counts towards a distributed campaign only if it probed at
    /// most this many ports of a PC.
    pub distributed_max_ports: u32,
    /// Campus PCs one campus address must scan for an internal campaign.
    pub internal_min_pcs: u32,
    /// PCs that must report the same outbound anomaly (kind and
    /// destination) for an outbound campaign.
    pub outbound_min_pcs: u32,
    /// The campus's own networks (CIDR): scans from them are internal.
    pub campus_networks: Vec<String>,
    /// Sources never made into campaigns (the campus's vulnerability
    /// scanners, monitoring), as CIDRs; their events are still stored.
    pub allowlist: Vec<String>,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        let d = crate::campaigns::correlate::Settings::default();
        Self {
            enabled: true,
            interval_seconds: d.interval.as_secs(),
            window_minutes: d.window.as_secs() / 60,
            quiet_minutes: d.quiet_after.as_secs() / 60,
            close_minutes: d.close_after.as_secs() / 60,
            sweep_min_pcs: d.sweep_min_pcs,
            distributed_min_sources: d.distributed_min_sources,
            distributed_min_pcs: d.distributed_min_pcs,
            distributed_max_ports: d.distributed_max_ports,
            internal_min_pcs: d.internal_min_pcs,
            outbound_min_pcs: d.outbound_min_pcs,
            campus_networks: Vec::new(),
            allowlist: Vec::new(),
        }
    }
}

impl CorrelationConfig {
    /// The correlator's settings (`None` when off), and the campus
    /// networks and allowlist, which the feed applies too.
    #[allow(clippy::type_complexity)]
    pub(crate) fn validate(
        self,
    ) -> Result<
        (
            Option<crate::campaigns::correlate::Settings>,
            Vec<doorwatch_store::ip::Cidr>,
            Vec<doorwatch_store::ip::Cidr>,
        ),
        ConfigError,
    > {
        let invalid = |field: &'static str, problem: String| ConfigError::invalid(field, problem);
        let range = doorwatch_process::config::in_range;
        range(
            "correlation.interval_seconds",
            self.interval_seconds,
            1,
            3600,
        )?;
        range("correlation.window_minutes", self.window_minutes, 1, 1440)?;
        range("correlation.quiet_minutes", self.quiet_minutes, 1, 1440)?;
        range(
            "correlation.close_minutes",
            self.close_minutes,
            self.quiet_minutes,
            10_080,
        )?;
        range(
            "correlation.sweep_min_pcs",
            self.sweep_min_pcs.into(),
            2,
            100_000,
        )?;
        range(
            "correlation.distributed_min_sources",
            self.distributed_min_sources.into(),
            2,
            100_000,
        )?;
        range(
            "correlation.distributed_min_pcs",
            self.distributed_min_pcs.into(),
            1,
            100_000,
        )?;
        range(
            "correlation.distributed_max_ports",
            self.distributed_max_ports.into(),
            1,
            65_535,
        )?;
        range(
            "correlation.internal_min_pcs",
            self.internal_min_pcs.into(),
            1,
            100_000,
        )?;
        range(
            "correlation.outbound_min_pcs",
            self.outbound_min_pcs.into(),
            1,
            100_000,
        )?;
        let cidrs = |field: &'static str, list: &[String]| {
            list.iter()
                .map(|text| {
                    text.parse()
                        .map_err(|e: doorwatch_store::ip::BadCidr| invalid(field, e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let campus = cidrs("correlation.campus_networks", &self.campus_networks)?;
        let allowlist = cidrs("correlation.allowlist", &self.allowlist)?;
        if !self.enabled {
            return Ok((None, campus, allowlist));
        }
        let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
        Ok((
            Some(crate::campaigns::correlate::Settings {
                interval: std::time::Duration::from_secs(self.interval_seconds),
                window: minutes(self.window_minutes),
                quiet_after: minutes(self.quiet_minutes),
                close_after: minutes(self.close_minutes),
                sweep_min_pcs: self.sweep_min_pcs,
                distributed_min_sources: self.distributed_min_sources,
                distributed_min_pcs: self.distributed_min_pcs,
                distributed_max_ports: self.distributed_max_ports,
                internal_min_pcs: self.internal_min_pcs,
                outbound_min_pcs: self.outbound_min_pcs,
                campus: campus.clone(),
                allowlist: allowlist.clone(),
            }),
            campus,
            allowlist,
        ))
    }
}

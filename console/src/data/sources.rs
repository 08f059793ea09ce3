//! One source address in detail: what it scanned and the campaigns it is
//! part of.

use std::net::IpAddr;

use super::summary::{CampaignView, EpisodeView, campaign_views};
use doorwatch_process::clock::unix_now_u32;
use doorwatch_store::ip::{self, Cidr};
use doorwatch_store::{EventSearch, Store, StoreError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SourceView {
    pub source: String,
    /// In the blocklist feed (a sweep or distributed campaign in the last
    /// 30 days), with when it was last active.
    pub blocklisted_until_quiet_since: Option<u32>,
    /// The correlation allowlist network holding it, if any: it is never
    /// made into campaigns, alerted or published.
    pub allowlisted_by: Option<String>,
    pub campaigns: Vec<CampaignView>,
    pub scans: Vec<EpisodeView>,
    pub pcs: Vec<String>,
}

pub async fn source(store: &Store, address: IpAddr) -> Result<SourceView, StoreError> {
    let now = unix_now_u32();
    let text = address.to_string();
    let scans: Vec<EpisodeView> = store
        .search_episodes(&EventSearch {
            since: now.saturating_sub(30 * 86_400),
            until: now.saturating_add(3600),
            source_range: Some((ip::to_fixed16(address), ip::to_fixed16(address))),
            limit: 200,
            ..EventSearch::default()
        })
        .await?
        .0
        .into_iter()
        .map(EpisodeView::from)
        .collect();
    let mut pcs: Vec<String> = scans.iter().map(|s| s.agent_id.clone()).collect();
    pcs.sort();
    pcs.dedup();
    let ids = store.campaigns_of_source(&text).await?;
    let rows = store.campaigns_by_id(&ids).await?;
    let feed = store
        .feed_sources(now.saturating_sub(30 * 86_400))
        .await?
        .into_iter()
        .find(|f| f.source == text)
        .map(|f| f.last_active);
    let allowlisted_by = store.allowlist().await?.and_then(|list| {
        list.networks
            .into_iter()
            .find(|n| n.parse::<Cidr>().is_ok_and(|c| c.contains(address)))
    });
    Ok(SourceView {
        source: text,
        blocklisted_until_quiet_since: feed,
        allowlisted_by,
        campaigns: campaign_views(store, &rows).await?,
        scans,
        pcs,
    })
}

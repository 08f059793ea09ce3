//! The event search: the form as typed (checked here before any query),
//! the scan types it offers, and the result.

use std::net::IpAddr;

use super::summary::EpisodeView;
use doorwatch_process::clock::unix_now_u32;
use doorwatch_store::ip::Cidr;
use doorwatch_store::{EventSearch, Store, StoreError};
use serde::Serialize;

/// A search as the form and the API take it (all text, validated here).
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
#[serde(default)]
pub struct SearchForm {
    /// How far back: "1h", "24h", "7d" (humantime).
    pub since: String,
    pub pc: String,
    /// An address or a network in CIDR notation.
    pub source: String,
    pub port: String,
    pub scan_type: String,
    pub page: u64,
}

/// A search the user got wrong, in words for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSearch(pub String);

impl SearchForm {
    /// The store's search for this form, or what is wrong with it.
    pub fn to_search(&self, limit: u64) -> Result<EventSearch, BadSearch> {
        let now = unix_now_u32();
        let since = if self.since.trim().is_empty() {
            std::time::Duration::from_secs(86_400)
        } else {
            humantime::parse_duration(self.since.trim())
                .map_err(|_| BadSearch("time range: use e.g. 1h, 24h or 7d".into()))?
        };
        if since.as_secs() > super::MAX_SEARCH_DAYS * 86_400 {
            return Err(BadSearch(format!(
                "time range: at most {} days",
                super::MAX_SEARCH_DAYS
            )));
        }
        let since = now.saturating_sub(u32::try_from(since.as_secs()).unwrap_or(u32::MAX));
        let source_range = match self.source.trim() {
            "" => None,
            text => {
                let cidr: Cidr = if text.contains('/') {
                    text.parse().map_err(|_| {
                        BadSearch("source: an address or a network like 198.51.100.0/24".into())
                    })?
                } else {
                    let address: IpAddr = text.parse().map_err(|_| {
                        BadSearch("source: an address or a network like 198.51.100.0/24".into())
                    })?;
                    Cidr::of(address, if address.is_ipv4() { 32 } else { 128 })
                };
                Some(cidr.range())
            }
        };
        let port = match self.port.trim() {
            "" => None,
            text => Some(
                text.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| BadSearch("port: a number from 1 to 65535".into()))?,
            ),
        };
        let scan_type = match self.scan_type.trim() {
            "" => None,
            t if SCAN_TYPES.contains(&t) => Some(t.to_owned()),
            _ => return Err(BadSearch("scan type: pick one from the list".into())),
        };
        let pc = self.pc.trim();
        if pc.len() > MAX_PC_CHARS {
            return Err(BadSearch("PC: an agent id, at most 128 characters".into()));
        }
        let offset = super::page_offset(self.page, limit).map_err(BadSearch)?;
        Ok(EventSearch {
            since,
            until: now.saturating_add(3600),
            agent_id: (!pc.is_empty()).then(|| pc.to_owned()),
            source_range,
            port,
            scan_type,
            offset,
            limit,
            count: true,
        })
    }
}

/// The longest PC (agent id) a search takes.
const MAX_PC_CHARS: usize = 128;

/// Scan types as stored.
pub const SCAN_TYPES: &[&str] = &[
    "syn", "connect", "fin", "null", "xmas", "maimon", "ack", "udp", "ip_proto", "icmp",
];

#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    pub total: u64,
    pub page: u64,
    pub pages: u64,
    pub episodes: Vec<EpisodeView>,
}

pub async fn search(store: &Store, search: &EventSearch) -> Result<SearchResult, StoreError> {
    let (rows, total) = store.search_episodes(search).await?;
    Ok(SearchResult {
        total,
        page: search.offset / search.limit.max(1),
        pages: total.div_ceil(search.limit.max(1)),
        episodes: rows.into_iter().map(EpisodeView::from).collect(),
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use doorwatch_store::ip;

    #[test]
    fn search_forms_are_checked_before_any_query() {
        let form = SearchForm {
            since: "7d".into(),
            source: "198.51.100.0/24".into(),
            port: "3389".into(),
            scan_type: "syn".into(),
            page: 2,
            ..SearchForm::default()
        };
        let s = form.to_search(50).expect("valid");
        assert_eq!(s.port, Some(3389));
        assert_eq!(s.offset, 100);
        let (low, high) = s.source_range.expect("range");
        assert_eq!(ip::from_fixed16(low).to_string(), "198.51.100.0");
        assert_eq!(ip::from_fixed16(high).to_string(), "198.51.100.255");
        for (field, bad) in [
            ("since", "yesterday"),
            ("source", "198.51.100.0/33"),
            ("source", "x' OR 1=1 --"),
            ("port", "70000"),
            ("scan_type", "evil"),
            ("since", "1000000d"),
            ("page", "18446744073709551615"),
            ("page", "401"),
            ("pc", "x"),
        ] {
            let mut form = SearchForm::default();
            match field {
                "since" => form.since = bad.into(),
                "source" => form.source = bad.into(),
                "port" => form.port = bad.into(),
                "page" => form.page = bad.parse().expect("a number"),
                "pc" => form.pc = bad.repeat(129),
                _ => form.scan_type = bad.into(),
            }
            assert!(form.to_search(50).is_err(), "{field}={bad}");
        }
    }
}

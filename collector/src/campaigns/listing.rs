//! The blocklist's listing policy: which campaign sources the feed may list,
//! on what evidence, and the words that say why each one is listed.
//!
//! Campus firewalls block what the feed lists, and an attacker who forges
//! the source address of SYN probes can make any outside address look like
//! a scanner. So:
//!
//! - **Never listed**, whatever the evidence: the campus's own networks,
//!   the correlation allowlist, the feed's `never_list` (the campus's
//!   resolvers, partners, upstream services), and [`BUILT_IN_NEVER`]:
//!   addresses no attacker scans from (loopback, link-local, multicast,
//!   unspecified) and the big public DNS resolvers, whose blocking would
//!   break the campus and which are a forger's favourite victims.
//! - **Evidence.** A source is [`Evidence::Handshake`] when a PC saw it
//!   complete a TCP handshake, acknowledging the PC's own sequence number
//!   (see the agent's `detect/handshake.rs`): that cannot be done from a
//!   forged address. Anything else is [`Evidence::Unverified`]. A feed
//!   request (or the feed's `evidence` setting) can ask for verified
//!   sources only.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use doorwatch_store::ip::Cidr;
use doorwatch_store::{CampaignKind, CampaignRow, FeedSourceRow};

/// Never listed, whatever the configuration says: addresses that cannot be
/// a scanner's own, and the public resolvers every campus depends on.
pub const BUILT_IN_NEVER: &[&str] = &[
    // Unspecified, loopback, link-local, multicast, reserved, broadcast.
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/3",
    "::/128",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
    // Public DNS resolvers: Google, Cloudflare, Quad9, OpenDNS.
    "8.8.8.8/32",
    "8.8.4.4/32",
    "2001:4860:4860::8888/128",
    "2001:4860:4860::8844/128",
    "1.1.1.1/32",
    "1.0.0.1/32",
    "2606:4700:4700::1111/128",
    "2606:4700:4700::1001/128",
    "9.9.9.9/32",
    "149.112.112.112/32",
    "2620:fe::fe/128",
    "2620:fe::9/128",
    "208.67.222.222/32",
    "208.67.220.220/32",
];

/// Campaigns named in one entry's reason; the count says how many more.
const NAMED_CAMPAIGNS: usize = 3;

/// What proves that a listed source really sent what the PCs saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// Only probes that anyone could have sent with this source address.
    Unverified,
    /// It completed a TCP handshake with a campus PC.
    Handshake,
}

impl Evidence {
    /// `any` or `handshake`, as in the feed's `evidence` setting and query
    /// parameter: the least evidence an entry needs.
    pub fn parse_minimum(text: &str) -> Option<Self> {
        match text {
            "any" => Some(Self::Unverified),
            "handshake" => Some(Self::Handshake),
            _ => None,
        }
    }
}

/// Who may never be listed.
#[derive(Debug, Clone)]
pub struct ListingPolicy {
    campus: Vec<Cidr>,
    allowlist: Vec<Cidr>,
    never: Vec<Cidr>,
}

/// Why a source may not be listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeverListed {
    Campus,
    Allowlisted,
    NeverList,
    NotAnAddress,
}

/// One source the policy lets through, with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub evidence: Evidence,
    pub why: String,
}

impl ListingPolicy {
    /// The policy for a campus; `never_list` is the feed's own, and the
    /// built-in list is always added.
    pub fn new(campus: Vec<Cidr>, allowlist: Vec<Cidr>, never_list: Vec<Cidr>) -> Self {
        let mut never = never_list;
        never.extend(
            BUILT_IN_NEVER
                .iter()
                .filter_map(|text| text.parse::<Cidr>().ok()),
        );
        Self {
            campus,
            allowlist,
            never,
        }
    }

    /// Whether `ip` may be listed at all.
    pub fn refuses(&self, ip: IpAddr) -> Option<NeverListed> {
        let any = |list: &[Cidr]| list.iter().any(|c| c.contains(ip));
        if any(&self.campus) {
            Some(NeverListed::Campus)
        } else if any(&self.allowlist) {
            Some(NeverListed::Allowlisted)
        } else if any(&self.never) {
            Some(NeverListed::NeverList)
        } else {
            None
        }
    }

    /// The listing of one feed source, or why it is never listed.
    /// `campaigns` holds (at least) the campaigns the row names, and
    /// `verified` the sources that completed a handshake.
    pub fn judge(
        &self,
        row: &FeedSourceRow,
        campaigns: &HashMap<uuid::Uuid, CampaignRow>,
        verified: &HashSet<IpAddr>,
    ) -> Result<Listing, NeverListed> {
        let ip: IpAddr = row.source.parse().map_err(|_| NeverListed::NotAnAddress)?;
        if let Some(refusal) = self.refuses(ip) {
            return Err(refusal);
        }
        let evidence = if verified.contains(&ip) {
            Evidence::Handshake
        } else {
            Evidence::Unverified
        };
        Ok(Listing {
            evidence,
            why: why(row, campaigns, evidence),
        })
    }
}

/// "Took part in 2 campaigns: a sweep of 12 campus PCs from
/// 198.51.100.0/24; … It completed a TCP handshake …".
fn why(
    row: &FeedSourceRow,
    campaigns: &HashMap<uuid::Uuid, CampaignRow>,
    evidence: Evidence,
) -> String {
    let mut named: Vec<&CampaignRow> = row
        .campaign_ids
        .iter()
        .filter_map(|id| id.parse::<uuid::Uuid>().ok())
        .filter_map(|id| campaigns.get(&id))
        .collect();
    named.sort_by(|a, b| b.pcs.cmp(&a.pcs).then(a.campaign_key.cmp(&b.campaign_key)));
    let described: Vec<String> = named
        .iter()
        .take(NAMED_CAMPAIGNS)
        .map(|c| describe(c))
        .collect();
    let more = row.campaigns.saturating_sub(described.len() as u64);
    let mut text = format!(
        "Took part in {} campaign{}",
        row.campaigns,
        if row.campaigns == 1 { "" } else { "s" }
    );
    if !described.is_empty() {
        text.push_str(": ");
        text.push_str(&described.join("; "));
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
    }
    text.push_str(". ");
    text.push_str(match evidence {
        Evidence::Handshake => {
            "It completed a TCP handshake with a campus PC, so the address is really the scanner's."
        }
        Evidence::Unverified => {
            "Its probes never completed a TCP handshake, and anyone can send such probes with a forged source address: the address may be an innocent one."
        }
    });
    text
}

fn describe(campaign: &CampaignRow) -> String {
    let pcs = |n: u32| format!("{n} campus PC{}", if n == 1 { "" } else { "s" });
    match campaign.kind {
        CampaignKind::Sweep => format!(
            "a sweep of {} from {}",
            pcs(campaign.pcs),
            campaign.campaign_key
        ),
        CampaignKind::Distributed => format!(
            "one of {} sources trying port {} on {}",
            campaign.sources,
            campaign.campaign_key,
            pcs(campaign.pcs)
        ),
        other => format!(
            "{} campaign {} ({})",
            other.label(),
            campaign.campaign_key,
            pcs(campaign.pcs)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().expect("cidr")).collect()
    }

    fn policy() -> ListingPolicy {
        ListingPolicy::new(
            cidrs(&["198.18.0.0/28"]),
            cidrs(&["198.18.0.99/32"]),
            cidrs(&["203.0.113.53/32"]),
        )
    }

    fn source(address: &str, ids: &[uuid::Uuid]) -> FeedSourceRow {
        FeedSourceRow {
            source: address.to_owned(),
            last_active: 1_764_000_000,
            campaigns: ids.len() as u64,
            campaign_ids: ids.iter().map(ToString::to_string).collect(),
        }
    }

    fn campaign(kind: CampaignKind, key: &str, pcs: u32, sources: u32) -> CampaignRow {
        CampaignRow {
            campaign_id: uuid::Uuid::now_v7(),
            kind,
            campaign_key: key.to_owned(),
            state: doorwatch_store::CampaignState::Open,
            severity: 2,
            first_seen: 1_764_000_000,
            last_seen: 1_764_000_000,
            pcs,
            sources,
            ports: 1,
            open_ports: 0,
            explanation: String::new(),
            updated_at: 1_764_000_000,
            version: 1,
            exposed_ports: 0,
        }
    }

    #[test]
    fn the_campus_allowlist_never_list_and_built_ins_are_never_listed() {
        let policy = policy();
        let none = (HashMap::new(), HashSet::new());
        for (address, refusal) in [
            ("198.18.0.5", NeverListed::Campus),
            ("198.18.0.99", NeverListed::Allowlisted),
            ("203.0.113.53", NeverListed::NeverList),
            ("8.8.8.8", NeverListed::NeverList),
            ("2606:4700:4700::1111", NeverListed::NeverList),
            ("127.0.0.1", NeverListed::NeverList),
            ("239.1.2.3", NeverListed::NeverList),
            ("fe80::1", NeverListed::NeverList),
            ("not an address", NeverListed::NotAnAddress),
        ] {
            assert_eq!(
                policy.judge(&source(address, &[]), &none.0, &none.1),
                Err(refusal),
                "{address}"
            );
        }
        assert!(
            policy
                .judge(&source("198.51.100.7", &[]), &none.0, &none.1)
                .is_ok()
        );
        // Every built-in entry parses: none is silently dropped.
        assert_eq!(
            policy.never.len(),
            1 + BUILT_IN_NEVER.len(),
            "{:?}",
            policy.never
        );
    }

    #[test]
    fn each_entry_says_why_and_whether_its_address_is_proven() {
        let policy = policy();
        let sweep = campaign(CampaignKind::Sweep, "198.51.100.0/24", 12, 1);
        let bots = campaign(CampaignKind::Distributed, "3389", 40, 3);
        let ids = [sweep.campaign_id, bots.campaign_id];
        let campaigns: HashMap<_, _> = [sweep, bots]
            .into_iter()
            .map(|c| (c.campaign_id, c))
            .collect();
        let scanner: IpAddr = "198.51.100.7".parse().expect("ip");

        let unproven = policy
            .judge(&source("198.51.100.7", &ids), &campaigns, &HashSet::new())
            .expect("listed");
        assert_eq!(unproven.evidence, Evidence::Unverified);
        assert_eq!(
            unproven.why,
            "Took part in 2 campaigns: one of 3 sources trying port 3389 on 40 campus PCs; \
             a sweep of 12 campus PCs from 198.51.100.0/24. Its probes never completed a TCP \
             handshake, and anyone can send such probes with a forged source address: the \
             address may be an innocent one."
        );

        let proven = policy
            .judge(
                &source("198.51.100.7", &ids[..1]),
                &campaigns,
                &HashSet::from([scanner]),
            )
            .expect("listed");
        assert_eq!(proven.evidence, Evidence::Handshake);
        assert!(
            proven
                .why
                .starts_with("Took part in 1 campaign: a sweep of 12 campus PCs")
        );
        assert!(
            proven
                .why
                .ends_with("so the address is really the scanner's.")
        );
    }

    #[test]
    fn a_source_of_many_campaigns_names_a_few() {
        let many: Vec<CampaignRow> = (0..5)
            .map(|i| campaign(CampaignKind::Distributed, &format!("{}", 20 + i), 5, 3))
            .collect();
        let ids: Vec<uuid::Uuid> = many.iter().map(|c| c.campaign_id).collect();
        let campaigns: HashMap<_, _> = many.into_iter().map(|c| (c.campaign_id, c)).collect();
        let listing = policy()
            .judge(&source("198.51.100.7", &ids), &campaigns, &HashSet::new())
            .expect("listed");
        assert!(listing.why.contains("; and 2 more."), "{}", listing.why);
    }

    #[test]
    fn the_minimum_evidence_is_any_or_handshake() {
        assert_eq!(Evidence::parse_minimum("any"), Some(Evidence::Unverified));
        assert_eq!(
            Evidence::parse_minimum("handshake"),
            Some(Evidence::Handshake)
        );
        assert_eq!(Evidence::parse_minimum("HANDSHAKE"), None);
        assert!(Evidence::Handshake > Evidence::Unverified);
    }
}

//! What each page shows, loaded from the store into plain serializable
//! structs, one file per page (plus `summary` for the lines several pages
//! share). The HTML pages and `/api/v1` render the same structs, so the
//! API shows exactly what staff see. Nothing here renders or handles
//! requests; this file only re-exports, and no file below imports it.

mod agents;
mod campaigns;
mod hosts;
mod overview;
mod search;
mod sources;
mod summary;

pub use agents::*;
pub use campaigns::*;
pub use hosts::*;
pub use overview::*;
pub use search::*;
pub use sources::*;
pub use summary::{CampaignView, EpisodeView, fill_buckets};

/// Rows per search page, and the most a CSV export holds.
pub const PAGE_ROWS: u64 = 50;
pub const CSV_ROWS: u64 = 100_000;
/// Audit entries per page.
pub const AUDIT_ROWS: u64 = 100;
/// The deepest row a paged list starts at: deeper pages make ClickHouse
/// read and skip that many rows for every request. Narrower searches
/// reach older rows instead.
pub const MAX_OFFSET: u64 = 20_000;
/// The longest time range a search covers (longer than any retention).
pub const MAX_SEARCH_DAYS: u64 = 400;

/// Where page `page` of `rows` per page starts, unless it is too deep.
pub fn page_offset(page: u64, rows: u64) -> Result<u64, String> {
    page.checked_mul(rows)
        .filter(|&offset| offset <= MAX_OFFSET)
        .ok_or_else(|| {
            format!(
                "page: at most {} pages of {rows}; narrow the search to see older rows",
                MAX_OFFSET / rows.max(1) + 1
            )
        })
}

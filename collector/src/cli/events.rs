//! `events`: recent scan and flood events.

use super::connect_store;
use crate::cli::output::{self, Format};
use crate::config::ValidConfig;
use anyhow::Context;
use doorwatch_process::clock;
use std::time::Duration;

pub(crate) async fn print_events(
    config: ValidConfig,
    since: Duration,
    format: Format,
    limit: u64,
) -> anyhow::Result<()> {
    let store = connect_store(&config).await?;
    let back = u32::try_from(since.as_secs()).unwrap_or(u32::MAX);
    let since_unix = clock::unix_now_u32().saturating_sub(back);
    let rows = store
        .recent_scan_events(since_unix, limit)
        .await
        .context("cannot read scan events")?;
    let floods = store
        .recent_flood_events(since_unix, limit)
        .await
        .context("cannot read flood events")?;
    print!("{}", output::render(&rows, &floods, format));
    Ok(())
}

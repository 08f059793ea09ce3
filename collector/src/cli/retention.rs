//! `retention show|apply`: what goes when, and a pass now.

use super::{RetentionCommand, connect_store, load_config};
use crate::cli::output::{self};
use anyhow::Context;
use doorwatch_process::clock;

pub(crate) async fn run_retention(command: RetentionCommand) -> anyhow::Result<()> {
    use crate::retention;
    match command {
        RetentionCommand::Show { config, format } => {
            let config = load_config(&config)?;
            let store = connect_store(&config).await?;
            let now = clock::unix_now();
            let review = retention::review(&store, &config.retention, now)
                .await
                .context("cannot read what retention would drop")?;
            print!(
                "{}",
                output::retention(&config.retention, &review, now, format)
            );
        }
        RetentionCommand::Apply(config) => {
            let config = load_config(&config)?;
            let store = connect_store(&config).await?;
            let done = retention::apply(&store, &config.retention, clock::unix_now())
                .await
                .context("retention pass failed")?;
            println!(
                "dropped {} partitions ({} rows), deleted {} campaigns and {} lease claims",
                done.partitions_dropped,
                done.rows_dropped,
                done.campaigns_deleted,
                done.lease_claims_deleted
            );
        }
    }
    Ok(())
}

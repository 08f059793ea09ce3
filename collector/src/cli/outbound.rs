//! `outbound …`: what the PCs sent, their anomalies and listening ports.

use super::{OutboundCommand, connect_store, load_config, since_unix};
use crate::cli::output::Format;
use anyhow::Context;

pub(crate) async fn run_outbound(command: OutboundCommand) -> anyhow::Result<()> {
    use crate::cli::output::{anomaly_json, listening_json, print_lines, talker_json};
    match command {
        OutboundCommand::Anomalies {
            config,
            since,
            format,
        } => {
            let store = connect_store(&load_config(&config)?).await?;
            let rows = store
                .outbound_anomalies(since_unix(since), 10_000)
                .await
                .context("cannot read outbound anomalies")?;
            print_lines(rows.iter().map(anomaly_json), format == Format::Json);
        }
        OutboundCommand::Talkers {
            config,
            agent,
            since,
            format,
        } => {
            let store = connect_store(&load_config(&config)?).await?;
            let rows = store
                .top_talkers(&agent, since_unix(since), 50)
                .await
                .context("cannot read top talkers")?;
            print_lines(
                rows.iter().map(|r| talker_json(r, false)),
                format == Format::Json,
            );
        }
        OutboundCommand::Destinations {
            config,
            since,
            format,
        } => {
            let store = connect_store(&load_config(&config)?).await?;
            let rows = store
                .top_destinations(since_unix(since), 50)
                .await
                .context("cannot read top destinations")?;
            print_lines(
                rows.iter().map(|r| talker_json(r, true)),
                format == Format::Json,
            );
        }
        OutboundCommand::Listening { config, format } => {
            let store = connect_store(&load_config(&config)?).await?;
            let rows = store
                .listening_ports(None)
                .await
                .context("cannot read listening ports")?;
            print_lines(rows.iter().map(listening_json), format == Format::Json);
        }
    }
    Ok(())
}

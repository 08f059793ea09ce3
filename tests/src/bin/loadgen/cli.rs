//! The command line: the clap `Cli` with its flags and their help, the
//! report `Format`, and `validate`, the checks clap cannot express.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, ValueEnum};
use doorwatch_collector::trust::identity::is_valid_agent_id;
use doorwatch_proto::MAX_EVENTS_PER_BATCH;

use crate::agent_id;

/// Simulates many doorwatch agents (campus PCs) against a running
/// collector and reports how fast their events were stored and
/// acknowledged.
///
/// Every simulated agent gets its own client certificate, issued in memory
/// from the development CA in --pki, opens its own mutual-TLS connection,
/// and sends a realistic mix of scan and flood reports with Hello,
/// heartbeats, acknowledgements, reconnects and resends like a real agent.
/// Agent ids are PREFIX-00000, PREFIX-00001, ...
///
/// After --duration it stops generating, waits until every event is
/// acknowledged (at most --drain-timeout), closes the streams and prints a
/// report. Exit status 0 means every generated event was acknowledged;
/// 1 means some were not (the message says how many).
///
/// Sizing: the collector puts the batches of all agents into shared
/// INSERTs (see `[ingest]` in collector.toml), so the load on ClickHouse
/// follows events per second, not agents. Watch the ack latency and the
/// throttles in the report: they grow when the collector or ClickHouse
/// falls behind.
///
/// Examples:
///   # 10,000 idle PCs connecting over a minute: memory per agent
///   doorwatch-loadgen --collector 127.0.0.1:4443 --pki /etc/doorwatch/pki \
///       --agents 10000 --rate 0 --ramp 60 --duration 180
///   # 1,000 PCs sending 5,000 events/s in total for two minutes
///   doorwatch-loadgen --collector 127.0.0.1:4443 --pki ./pki \
///       --agents 1000 --rate 5000 --duration 120 --format json
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
pub(crate) struct Cli {
    /// Collector address the agents connect to.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) collector: String,
    /// Name the collector's certificate carries (agents check it).
    #[arg(long, value_name = "NAME", default_value = "collector.doorwatch.test")]
    pub(crate) server_name: String,
    /// Development PKI folder holding ca.pem and ca.key (made by
    /// `doorwatch-collector pki init`). Certificates are issued in memory;
    /// nothing is written there.
    #[arg(long, value_name = "DIR")]
    pub(crate) pki: PathBuf,
    /// Simulated agents, one connection each.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) agents: u32,
    /// Agent ids are PREFIX-00000, PREFIX-00001, ...
    #[arg(long, default_value = "loadgen")]
    pub(crate) prefix: String,
    /// Events per second across all agents; 0 keeps them idle (Hello and
    /// heartbeats only).
    #[arg(long, value_name = "EVENTS_PER_SEC", default_value_t = 100.0)]
    pub(crate) rate: f64,
    /// Most events in one batch.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=MAX_EVENTS_PER_BATCH as i64))]
    pub(crate) batch_max: u32,
    /// Each agent sends the events it has at least this often (ms).
    #[arg(long, value_name = "MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) flush_ms: u64,
    /// How long to generate events, counted from the start (includes
    /// --ramp), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub(crate) duration: u64,
    /// Spread the agents' first connects evenly over this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub(crate) ramp: u64,
    /// Seconds after every agent has connected before the steady-state
    /// rate starts counting (`acked_per_s_steady`): connecting 1,000 agents
    /// costs TLS handshakes that a sustained rate should not include.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub(crate) warmup: u64,
    /// After --duration, wait at most this long for outstanding
    /// acknowledgements (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub(crate) drain_timeout: u64,
    /// Seconds between heartbeats of each agent.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) heartbeat: u64,
    /// Write every generated event id (hyphenated UUID, one per line) to
    /// FILE at the end, to check storage against.
    #[arg(long, value_name = "FILE")]
    pub(crate) ids_out: Option<PathBuf>,
    /// Final report: text for people, json (one line) for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// Seed of the event mix (default: a random one, printed at start).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub(crate) progress: u64,
    /// Log filter, e.g. "info" or "doorwatch_loadgen=debug" (debug logs
    /// every agent's reconnects). RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    pub(crate) log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

pub(crate) fn validate(cli: &Cli) -> anyhow::Result<()> {
    if !cli.rate.is_finite() || cli.rate < 0.0 {
        bail!("--rate must be 0 or more events per second");
    }
    if cli.agents == 0 {
        bail!("--agents must be at least 1");
    }
    let last = agent_id(&cli.prefix, cli.agents - 1);
    if !is_valid_agent_id(&last) {
        bail!(
            "--prefix {:?} makes agent ids like {last:?}; use A-Z a-z 0-9 . _ - (ids at most 128 characters)",
            cli.prefix
        );
    }
    if cli.duration == 0 {
        bail!("--duration must be at least 1 second");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

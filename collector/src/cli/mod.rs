//! The `doorwatch-collector` command line: the subcommands, their flags and
//! help (what a campus admin reads), and the dispatch to one handler per
//! subcommand. Handlers are thin: they read the config, call the
//! subsystems, and print with [`output`].

mod agents;
mod campaigns;
mod events;
mod outbound;
pub mod output;
mod pki;
mod policy;
mod retention;
mod tokens;

use crate::config::{CollectorConfig, ValidConfig};
use crate::trust::revocation::Revocations;
use crate::trust::tls;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use doorwatch_process::clock;
use doorwatch_store::Store;
use output::Format;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Receives scan events from doorwatch agents over mutual TLS and stores
/// them in ClickHouse.
///
/// Typical first setup (see deploy/README.md for the whole rollout):
///   doorwatch-collector pki init --dir /etc/doorwatch/pki --name collector.campus.example
///   doorwatch-collector serve --config /etc/doorwatch/collector.toml
///   doorwatch-collector token create --group library --expires 7d --max-uses 500
///   (install the agent on each PC with that token; each PC enrolls itself)
///
/// Cutting off a stolen or retired PC (within seconds, on every collector):
///   doorwatch-collector agents list
///   doorwatch-collector agents revoke AGENT_ID --reason "laptop stolen"
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
pub struct Cli {
    #[command(flatten)]
    pub log: doorwatch_process::logging::LogArgs,
    #[command(subcommand)]
    pub command: Command,
}
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector until SIGTERM or Ctrl-C.
    Serve(ConfigArg),
    /// Print recent events from ClickHouse.
    Events {
        #[command(flatten)]
        config: ConfigArg,
        /// How far back to look, e.g. 10m, 2h, 1d.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        since: Duration,
        /// table for people, json for scripts (one object per line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Most events to print.
        #[arg(long, default_value_t = 1000)]
        limit: u64,
    },
    /// Development PKI for demos and tests (see `pki --help`).
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Show or change the detection policy pushed to agents.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Enrolled agents: list, health, revoke.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Bootstrap tokens that let PCs enroll (see `token --help`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Campus-wide campaigns: sweeps, distributed probing, internal scanning.
    #[command(subcommand)]
    Campaigns(CampaignsCommand),
    /// Outbound traffic of the PCs: anomalies, top talkers, destinations,
    /// listening ports.
    #[command(subcommand)]
    Outbound(OutboundCommand),
    /// How long data is kept, and what goes when ([retention] in the config).
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Check a configuration file and exit.
    CheckConfig(ConfigArg),
}
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Path to collector.toml.
    #[arg(long, default_value = "/etc/doorwatch/collector.toml")]
    config: PathBuf,
}
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Every partition retention looks after, with its rows, size and when
    /// it goes ("due" when already out of the window), and the campaigns
    /// whose last activity left the window. Changes nothing.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// table for people, json for scripts (one object per line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Apply retention once, now, whoever holds the retention lease: drop
    /// what `show` calls due. Safe to repeat; a running collector does the
    /// same every [retention] check_minutes.
    Apply(ConfigArg),
}
#[derive(Debug, Subcommand)]
pub enum CampaignsCommand {
    /// Campaigns active within --since, newest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// How far back to look, e.g. 1h, 1d.
        #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
        since: Duration,
        /// table for people, json for scripts (one object per line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One campaign with its sources, PCs (agent ids) and ports.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Campaign id (from `campaigns list`).
        id: uuid::Uuid,
        /// table for people, json for scripts.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}
#[derive(Debug, Subcommand)]
pub enum OutboundCommand {
    /// Suspicious outbound traffic (uploads, outbound scans, SMTP fan-out,
    /// failed connections) reported within --since, newest first.
    Anomalies {
        #[command(flatten)]
        config: ConfigArg,
        /// How far back to look, e.g. 1h, 1d.
        #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
        since: Duration,
        /// table for people, json for scripts (one object per line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The processes of one PC that sent most within --since.
    Talkers {
        #[command(flatten)]
        config: ConfigArg,
        /// The PC's agent id (see `agents list`).
        #[arg(long)]
        agent: String,
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        since: Duration,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The destinations all PCs together sent most to within --since.
    Destinations {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        since: Duration,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Each PC's open ports with their processes; risky ones are named.
    Listening {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token. It is printed once and stored only as a hash: put it
    /// in the agent package's configuration (collector.token).
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// Group (site) label the agents enrolled with it inherit, e.g.
        /// "library" (A-Z a-z 0-9 . _ -).
        #[arg(long)]
        group: String,
        /// How long the token can be used, e.g. 7d, 12h.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        expires: Duration,
        /// How many PCs may enroll with it.
        #[arg(long, default_value_t = 1)]
        max_uses: u32,
    },
    /// List tokens with their uses (never their secrets).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// table for people, json for scripts (one object per line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Revoke a token: no more PCs can enroll with it. Agents already
    /// enrolled with it keep working (revoke those with `agents revoke`).
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The token id (the part after "dwt1-", as `token list` shows it).
        id: String,
    },
}
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Enrolled agents with their group, certificate and status (active,
    /// revoked).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// table for people, json for scripts (one object per line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Revoke an agent: its open stream is closed within seconds and its
    /// certificate is refused from then on, by every collector, also after
    /// restarts. The bootstrap token it enrolled with is revoked too while
    /// it can still enroll PCs (a stolen PC keeps the token in its
    /// agent.toml); PCs already enrolled with that token keep working. A
    /// PC that should come back must enroll again, with a new token.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The agent id (from `agents list`).
        id: String,
        /// Why, for the audit trail, e.g. "laptop stolen".
        #[arg(long)]
        reason: String,
        /// Leave the agent's bootstrap token usable (only when the PC is
        /// known to be in safe hands, e.g. reinstalled by IT).
        #[arg(long)]
        keep_token: bool,
    },
    /// Each agent's health from its newest heartbeat: online (heard from
    /// within 90 s), stale (within 10 minutes) or offline.
    Health {
        #[command(flatten)]
        config: ConfigArg,
        /// table for people, json for scripts (one object per line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the policy in force.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Agent group.
        #[arg(long, default_value = crate::policy::DEFAULT_GROUP)]
        group: String,
        /// text for people, json for scripts.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Store a new policy version; connected agents apply it within seconds.
    Set {
        #[command(flatten)]
        config: ConfigArg,
        /// Agent group.
        #[arg(long, default_value = crate::policy::DEFAULT_GROUP)]
        group: String,
        /// Net refused ports that make a scanner (0: each agent's own value).
        #[arg(long)]
        scan_min_ports: Option<u32>,
        /// Silence that closes an episode, in seconds (0: agent's value).
        #[arg(long)]
        episode_idle_seconds: Option<u32>,
        /// Add a source agents must never report (repeatable).
        #[arg(long = "allow")]
        allow: Vec<IpAddr>,
        /// Remove a source from the allowlist (repeatable).
        #[arg(long = "disallow")]
        disallow: Vec<IpAddr>,
        /// Empty the allowlist before adding.
        #[arg(long)]
        clear_allowlist: bool,
    },
}
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a campus CA and the collector's server certificate.
    Init {
        /// Directory for the files (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// DNS name agents use to reach the collector (repeatable).
        #[arg(long = "name", default_value = "doorwatch-collector")]
        names: Vec<String>,
        /// IP address agents use to reach the collector (repeatable).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Replace an existing CA. Every agent then needs a new certificate.
        #[arg(long)]
        force: bool,
    },
    /// Replace the issuing CA with a new one signed by the root (needs
    /// DIR/root.key). Certificates from the old one stay valid until they
    /// expire; restart the collector to sign with the new one.
    RotateIssuing {
        /// Directory holding ca.pem, root.key and issuing.*.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a client certificate for one agent by hand (tests, demos, PCs
    /// that cannot enroll). Signed by DIR/issuing.pem.
    IssueAgent {
        /// Directory holding issuing.pem and issuing.key.
        #[arg(long)]
        dir: PathBuf,
        /// Agent id, e.g. the PC's inventory name (A-Z a-z 0-9 . _ -).
        #[arg(long)]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
}

/// Runs the parsed command line (logging is set up by then).
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Pki(command) => pki::run_pki(command),
        Command::Policy(command) => runtime()?.block_on(policy::run_policy(command)),
        Command::Agents(AgentsCommand::Health { config, format }) => {
            runtime()?.block_on(agents::print_health(load_config(&config)?, format))
        }
        Command::Agents(AgentsCommand::List { config, format }) => {
            runtime()?.block_on(agents::print_agents(load_config(&config)?, format))
        }
        Command::Agents(AgentsCommand::Revoke {
            config,
            id,
            reason,
            keep_token,
        }) => runtime()?.block_on(agents::revoke_agent(
            load_config(&config)?,
            id,
            reason,
            keep_token,
        )),
        Command::Token(command) => runtime()?.block_on(tokens::run_token(command)),
        Command::Campaigns(command) => runtime()?.block_on(campaigns::run_campaigns(command)),
        Command::Outbound(command) => runtime()?.block_on(outbound::run_outbound(command)),
        Command::Retention(command) => runtime()?.block_on(retention::run_retention(command)),
        Command::CheckConfig(arg) => {
            let config = load_config(&arg)?;
            config
                .read_files()
                .with_context(|| format!("invalid configuration {}", arg.config.display()))?;
            crate::app::load_issuer(&config)?;
            tls::server_config(
                &config.client_ca,
                &config.server_cert,
                &config.server_key,
                tls::ClientAuth::Required,
                Revocations::default(),
            )
            .context("the TLS files named in [tls] do not work")?;
            println!("{}: ok", arg.config.display());
            Ok(())
        }
        Command::Serve(arg) => runtime()?.block_on(crate::app::serve(load_config(&arg)?)),
        Command::Events {
            config,
            since,
            format,
            limit,
        } => runtime()?.block_on(events::print_events(
            load_config(&config)?,
            since,
            format,
            limit,
        )),
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
pub(crate) fn load_config(arg: &ConfigArg) -> anyhow::Result<ValidConfig> {
    CollectorConfig::load(&arg.config)
        .and_then(CollectorConfig::validate)
        .with_context(|| format!("invalid configuration {}", arg.config.display()))
}
/// Connects to ClickHouse for a read-only command (no migrations).
pub(crate) async fn connect_store(config: &ValidConfig) -> anyhow::Result<Store> {
    Store::connect(&config.clickhouse.store_config()?)
        .await
        .context("connecting to ClickHouse")
}
pub(crate) fn since_unix(since: Duration) -> u32 {
    clock::unix_now_u32().saturating_sub(u32::try_from(since.as_secs()).unwrap_or(u32::MAX))
}
/// Who runs this command, for the records it writes.
pub(crate) fn os_user() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

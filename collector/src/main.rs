//! `doorwatch-collector`: the command-line entry point. Each subcommand is a
//! thin shell over the library modules.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use doorwatch_collector::config::{CollectorConfig, ValidConfig};
use doorwatch_collector::enroll::{EnrollmentService, EnrollmentSettings};
use doorwatch_collector::ingest::IngestService;
use doorwatch_collector::pki::AgentIssuer;
use doorwatch_collector::policy::{self, PolicyChange};
use doorwatch_collector::report::{self, Format};
use doorwatch_collector::revocation::{self, Revocations};
use doorwatch_collector::writer::Writer;
use doorwatch_collector::{alert, correlate};
use doorwatch_collector::{pki, tls};
use doorwatch_process::{clock, shutdown};
use doorwatch_store::Store;
use doorwatch_store::Token;
use doorwatch_store::TokenUse;
use tokio::sync::watch;

/// mimalloc instead of the system allocator: ingest allocates and frees
/// many small buffers on every thread, where glibc's malloc spent about a
/// third of the collector's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
struct Cli {
    #[command(flatten)]
    log: doorwatch_process::logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
struct ConfigArg {
    /// Path to collector.toml.
    #[arg(long, default_value = "/etc/doorwatch/collector.toml")]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum RetentionCommand {
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
enum CampaignsCommand {
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
enum OutboundCommand {
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
enum TokenCommand {
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
enum AgentsCommand {
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
    /// restarts. A PC that should come back must enroll again.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The agent id (from `agents list`).
        id: String,
        /// Why, for the audit trail, e.g. "laptop stolen".
        #[arg(long)]
        reason: String,
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
enum PolicyCommand {
    /// Print the policy in force.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Agent group.
        #[arg(long, default_value = policy::DEFAULT_GROUP)]
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
        #[arg(long, default_value = policy::DEFAULT_GROUP)]
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
enum PkiCommand {
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init();
    match cli.command {
        Command::Pki(command) => run_pki(command),
        Command::Policy(command) => runtime()?.block_on(run_policy(command)),
        Command::Agents(AgentsCommand::Health { config, format }) => {
            runtime()?.block_on(print_health(load_config(&config)?, format))
        }
        Command::Agents(AgentsCommand::List { config, format }) => {
            runtime()?.block_on(print_agents(load_config(&config)?, format))
        }
        Command::Agents(AgentsCommand::Revoke { config, id, reason }) => {
            runtime()?.block_on(revoke_agent(load_config(&config)?, id, reason))
        }
        Command::Token(command) => runtime()?.block_on(run_token(command)),
        Command::Campaigns(command) => runtime()?.block_on(run_campaigns(command)),
        Command::Outbound(command) => runtime()?.block_on(run_outbound(command)),
        Command::Retention(command) => runtime()?.block_on(run_retention(command)),
        Command::CheckConfig(arg) => {
            let config = load_config(&arg)?;
            load_issuer(&config)?;
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
        Command::Serve(arg) => runtime()?.block_on(serve(load_config(&arg)?)),
        Command::Events {
            config,
            since,
            format,
            limit,
        } => runtime()?.block_on(print_events(load_config(&config)?, since, format, limit)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load_config(arg: &ConfigArg) -> anyhow::Result<ValidConfig> {
    CollectorConfig::load(&arg.config)
        .and_then(CollectorConfig::validate)
        .with_context(|| format!("invalid configuration {}", arg.config.display()))
}

fn run_pki(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init {
            dir,
            names,
            ips,
            force,
        } => {
            let (ca, server) = pki::init(&dir, &names, &ips, force)
                .with_context(|| format!("cannot create the PKI in {}", dir.display()))?;
            println!("trust bundle (root CA) for agents: {}", ca.cert.display());
            println!("root CA key (move it offline):     {}", ca.key.display());
            println!(
                "issuing CA (collector signs with): {}",
                dir.join("issuing.pem").display()
            );
            println!(
                "collector certificate:             {}",
                server.cert.display()
            );
            println!(
                "collector key:                     {}",
                server.key.display()
            );
        }
        PkiCommand::RotateIssuing { dir } => {
            let files = pki::rotate_issuing(&dir)
                .with_context(|| format!("cannot make a new issuing CA in {}", dir.display()))?;
            println!(
                "new issuing CA: {} (key {})",
                files.cert.display(),
                files.key.display()
            );
            println!("restart the collector to sign with it");
        }
        PkiCommand::IssueAgent { dir, name, days } => {
            let files = pki::issue_agent(&dir, &name, days)
                .with_context(|| format!("cannot issue a certificate for agent {name:?}"))?;
            println!("agent certificate: {}", files.cert.display());
            println!("agent key:         {}", files.key.display());
        }
    }
    Ok(())
}

async fn run_policy(command: PolicyCommand) -> anyhow::Result<()> {
    let (config, group) = match &command {
        PolicyCommand::Show { config, group, .. } | PolicyCommand::Set { config, group, .. } => {
            (load_config(config)?, group.clone())
        }
    };
    if group != policy::DEFAULT_GROUP {
        anyhow::bail!(
            "agent groups other than {:?} arrive with enrollment; use --group {0}",
            policy::DEFAULT_GROUP
        );
    }
    let store = Store::open(&config.clickhouse.store_config()?)
        .await
        .context("connecting to ClickHouse")?;
    let current = store
        .latest_policy(&group)
        .await
        .context("cannot read the stored policy")?
        .unwrap_or_else(|| policy::from_config(&config.policy));
    let shown = match command {
        PolicyCommand::Show { format, .. } => {
            print_policy(&current, format);
            return Ok(());
        }
        PolicyCommand::Set {
            scan_min_ports,
            episode_idle_seconds,
            allow,
            disallow,
            clear_allowlist,
            ..
        } => {
            let change = PolicyChange {
                scan_min_ports,
                episode_idle_seconds,
                allow,
                disallow,
                clear_allowlist,
            };
            let next = policy::apply_change(&current, &change, clock::unix_now_u32(), &os_user());
            store
                .insert_policy(&next)
                .await
                .context("cannot store the new policy")?;
            next
        }
    };
    println!(
        "stored policy version {}; connected agents apply it within seconds",
        shown.version
    );
    print_policy(&shown, Format::Table);
    Ok(())
}

fn print_policy(row: &doorwatch_store::PolicyRow, format: Format) {
    let allow: Vec<String> = row
        .allowlisted_sources
        .iter()
        .map(|b| doorwatch_store::ip::from_fixed16(*b).to_string())
        .collect();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "group": row.policy_group,
                "version": row.version,
                "scan_min_ports": row.scan_min_ports,
                "episode_idle_seconds": row.episode_idle_seconds,
                "allowlisted_sources": allow,
                "updated_at": clock::rfc3339(row.updated_at),
                "updated_by": row.updated_by,
            })
        ),
        Format::Table => {
            let or_agent = |n: u32| {
                if n == 0 {
                    "agent's own".to_owned()
                } else {
                    n.to_string()
                }
            };
            println!("group:                {}", row.policy_group);
            println!("version:              {}", row.version);
            println!("scan_min_ports:       {}", or_agent(row.scan_min_ports));
            println!(
                "episode_idle_seconds: {}",
                or_agent(row.episode_idle_seconds)
            );
            println!(
                "allowlisted_sources:  {}",
                if allow.is_empty() {
                    "none".to_owned()
                } else {
                    allow.join(", ")
                }
            );
            println!(
                "updated:              {} by {}",
                clock::rfc3339(row.updated_at),
                row.updated_by
            );
        }
    }
}

/// Connects to ClickHouse for a read-only command (no migrations).
async fn connect_store(config: &ValidConfig) -> anyhow::Result<Store> {
    Store::connect(&config.clickhouse.store_config()?)
        .await
        .context("connecting to ClickHouse")
}

fn campaign_json(row: &doorwatch_store::CampaignRow) -> serde_json::Value {
    serde_json::json!({
        "campaign_id": row.campaign_id.to_string(),
        "kind": doorwatch_store::campaign_kind::label(row.kind),
        "key": row.campaign_key,
        "state": doorwatch_store::campaign_state::label(row.state),
        "severity": correlate::severity_label(row.severity),
        "first_seen": clock::rfc3339(row.first_seen),
        "last_seen": clock::rfc3339(row.last_seen),
        "pcs": row.pcs,
        "sources": row.sources,
        "ports": row.ports,
        "open_ports": row.open_ports,
        "exposed_ports": row.exposed_ports,
        "explanation": row.explanation,
    })
}

fn since_unix(since: Duration) -> u32 {
    clock::unix_now_u32().saturating_sub(u32::try_from(since.as_secs()).unwrap_or(u32::MAX))
}

async fn run_outbound(command: OutboundCommand) -> anyhow::Result<()> {
    use doorwatch_collector::report::{anomaly_json, listening_json, print_lines, talker_json};
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

async fn run_campaigns(command: CampaignsCommand) -> anyhow::Result<()> {
    match command {
        CampaignsCommand::List {
            config,
            since,
            format,
        } => {
            let store = connect_store(&load_config(&config)?).await?;
            let since = clock::unix_now_u32()
                .saturating_sub(u32::try_from(since.as_secs()).unwrap_or(u32::MAX));
            let rows = store
                .recent_campaigns(since, 10_000)
                .await
                .context("cannot read campaigns")?;
            if format == Format::Table {
                println!(
                    "{:<36}  {:<11}  {:<24}  {:<6}  {:<8}  {:>5}  {:>7}  {:>5}  LAST SEEN (UTC)",
                    "CAMPAIGN", "KIND", "KEY", "STATE", "SEVERITY", "PCS", "SOURCES", "PORTS"
                );
            }
            for row in rows {
                match format {
                    Format::Json => println!("{}", campaign_json(&row)),
                    Format::Table => {
                        println!(
                            "{:<36}  {:<11}  {:<24}  {:<6}  {:<8}  {:>5}  {:>7}  {:>5}  {}",
                            row.campaign_id,
                            doorwatch_store::campaign_kind::label(row.kind),
                            row.campaign_key,
                            doorwatch_store::campaign_state::label(row.state),
                            correlate::severity_label(row.severity),
                            row.pcs,
                            row.sources,
                            row.ports,
                            clock::rfc3339(row.last_seen)
                        );
                        println!("    {}", row.explanation);
                    }
                }
            }
        }
        CampaignsCommand::Show { config, id, format } => {
            let store = connect_store(&load_config(&config)?).await?;
            let members = store
                .campaign_members(id)
                .await
                .context("cannot read the campaign's members")?;
            if members.is_empty() {
                anyhow::bail!("no campaign {id} (see `campaigns list`)");
            }
            let of = |kind: i8| -> Vec<String> {
                members
                    .iter()
                    .filter(|m| m.member == kind)
                    .map(|m| m.value.clone())
                    .collect()
            };
            let (sources, pcs, ports) = (
                of(doorwatch_store::member::SOURCE),
                of(doorwatch_store::member::PC),
                of(doorwatch_store::member::PORT),
            );
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({
                        "campaign_id": id.to_string(),
                        "sources": sources,
                        "pcs": pcs,
                        "ports": ports,
                    })
                ),
                Format::Table => {
                    println!("campaign {id}");
                    println!("sources ({}): {}", sources.len(), sources.join(" "));
                    println!("PCs     ({}): {}", pcs.len(), pcs.join(" "));
                    println!("ports   ({}): {}", ports.len(), ports.join(" "));
                }
            }
        }
    }
    Ok(())
}

async fn run_token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            config,
            group,
            expires,
            max_uses,
        } => {
            if !doorwatch_collector::identity::is_valid_agent_id(&group) {
                anyhow::bail!("--group {group:?}: use 1 to 128 of A-Z a-z 0-9 . _ -");
            }
            if max_uses == 0 {
                anyhow::bail!("--max-uses must be at least 1");
            }
            let store = connect_store(&load_config(&config)?).await?;
            let token = Token::generate().context("cannot make a token")?;
            let now = clock::unix_now();
            let expires_at = now.saturating_add(expires.as_secs());
            store
                .insert_token(&doorwatch_store::TokenRow {
                    token_id: token.id.clone(),
                    secret_sha256: token.secret_sha256(),
                    agent_group: group.clone(),
                    created_at: clock::seconds(now),
                    expires_at: clock::seconds(expires_at),
                    max_uses,
                    revoked: 0,
                    revoked_at: 0,
                    changed_by: os_user(),
                    version: 1,
                })
                .await
                .context("cannot store the token")?;
            tracing::info!(token_id = %token.id, group = %group, max_uses, "enrollment token created");
            println!("{}", token.reveal());
            eprintln!(
                "token {} for group {group:?}: up to {max_uses} PCs until {}. It is shown only now.",
                token.id,
                clock::rfc3339(clock::seconds(expires_at))
            );
        }
        TokenCommand::List { config, format } => {
            let store = connect_store(&load_config(&config)?).await?;
            let tokens = store.tokens().await.context("cannot read tokens")?;
            let now = clock::unix_now();
            if format == Format::Table {
                println!(
                    "{:<16}  {:<16}  {:<9}  {:>11}  {:<20}  CREATED BY",
                    "TOKEN ID", "GROUP", "STATUS", "USES", "EXPIRES"
                );
            }
            for found in tokens {
                let status = found.state(now).label();
                let TokenUse { token, uses } = found;
                match format {
                    Format::Json => println!(
                        "{}",
                        serde_json::json!({
                            "token_id": token.token_id,
                            "group": token.agent_group,
                            "status": status,
                            "uses": uses,
                            "max_uses": token.max_uses,
                            "created_at": clock::rfc3339(token.created_at),
                            "expires_at": clock::rfc3339(token.expires_at),
                            "changed_by": token.changed_by,
                        })
                    ),
                    Format::Table => println!(
                        "{:<16}  {:<16}  {:<9}  {:>11}  {:<20}  {}",
                        token.token_id,
                        token.agent_group,
                        status,
                        format!("{uses}/{}", token.max_uses),
                        clock::rfc3339(token.expires_at),
                        token.changed_by
                    ),
                }
            }
        }
        TokenCommand::Revoke { config, id } => {
            let store = connect_store(&load_config(&config)?).await?;
            let Some(found) = store.token(&id).await.context("cannot read the token")? else {
                anyhow::bail!("no token with id {id:?} (see `token list`)");
            };
            let mut row = found.token;
            row.revoked = 1;
            row.revoked_at = clock::unix_now_u32();
            row.changed_by = os_user();
            row.version += 1;
            store
                .insert_token(&row)
                .await
                .context("cannot store the revocation")?;
            tracing::info!(token_id = %id, "enrollment token revoked");
            println!("token {id} revoked: no more PCs can enroll with it");
        }
    }
    Ok(())
}

async fn print_agents(config: ValidConfig, format: Format) -> anyhow::Result<()> {
    let store = connect_store(&config).await?;
    let agents = store
        .agents()
        .await
        .context("cannot read enrolled agents")?;
    let revoked: std::collections::HashMap<String, doorwatch_store::RevocationRow> = store
        .revocations()
        .await
        .context("cannot read revocations")?
        .into_iter()
        .map(|r| (r.agent_id.clone(), r))
        .collect();
    let now = clock::unix_now_u32();
    let health: std::collections::HashMap<String, u32> = store
        .agent_health(now.saturating_sub(30 * 86_400))
        .await
        .context("cannot read agent heartbeats")?
        .into_iter()
        .map(|h| (h.agent_id, h.last_seen))
        .collect();
    if format == Format::Table {
        println!(
            "{:<36}  {:<8}  {:<12}  {:<20}  {:<20}  HOSTNAME (claimed)",
            "AGENT", "STATUS", "GROUP", "ENROLLED", "CERT EXPIRES"
        );
    }
    for agent in agents {
        let status = match (revoked.get(&agent.agent_id), health.get(&agent.agent_id)) {
            (Some(_), _) => "revoked".to_owned(),
            (None, Some(seen)) => format!(
                "{:?}",
                doorwatch_store::Health::from_age(now.saturating_sub(*seen))
            )
            .to_lowercase(),
            (None, None) => "never".to_owned(),
        };
        match format {
            Format::Json => println!(
                "{}",
                serde_json::json!({
                    "agent_id": agent.agent_id,
                    "status": status,
                    "group": agent.agent_group,
                    "enrolled_at": clock::rfc3339(agent.enrolled_at),
                    "cert_serial": agent.cert_serial,
                    "cert_not_after": clock::rfc3339(agent.cert_not_after),
                    "claimed_hostname": agent.hostname,
                    "os": agent.os,
                    "agent_version": agent.agent_version,
                    "token_id": agent.token_id,
                    "revoked_reason": revoked.get(&agent.agent_id).map(|r| r.reason.clone()),
                })
            ),
            Format::Table => println!(
                "{:<36}  {:<8}  {:<12}  {:<20}  {:<20}  {}",
                agent.agent_id,
                status,
                agent.agent_group,
                clock::rfc3339(agent.enrolled_at),
                clock::rfc3339(agent.cert_not_after),
                agent.hostname
            ),
        }
    }
    Ok(())
}

async fn revoke_agent(config: ValidConfig, id: String, reason: String) -> anyhow::Result<()> {
    if !doorwatch_collector::identity::is_valid_agent_id(&id) {
        anyhow::bail!("{id:?} is not an agent id (see `agents list`)");
    }
    if reason.trim().is_empty() {
        anyhow::bail!("--reason must say why, for the audit trail");
    }
    let store = connect_store(&config).await?;
    if store
        .agent(&id)
        .await
        .context("cannot read the agent")?
        .is_none()
    {
        eprintln!("note: {id} never enrolled (a hand-made certificate?); revoking it anyway");
    }
    store
        .insert_revocation(&doorwatch_store::RevocationRow {
            agent_id: id.clone(),
            revoked_at: clock::unix_now_u32(),
            reason: reason.clone(),
            revoked_by: os_user(),
        })
        .await
        .context("cannot store the revocation")?;
    tracing::info!(agent_id = %id, reason = %reason, "agent revoked");
    println!(
        "agent {id} revoked; every collector closes its stream and refuses it within {} s",
        config.enrollment.revocation_check.as_secs() + 1
    );
    Ok(())
}

async fn run_retention(command: RetentionCommand) -> anyhow::Result<()> {
    use doorwatch_collector::retention;
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
                report::retention(&config.retention, &review, now, format)
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

async fn print_health(config: ValidConfig, format: Format) -> anyhow::Result<()> {
    let store = connect_store(&config).await?;
    let now = clock::unix_now_u32();
    // Agents silent for a month are retired, not offline.
    let rows = store
        .agent_health(now.saturating_sub(30 * 86_400))
        .await
        .context("cannot read agent heartbeats")?;
    if format == Format::Table {
        println!(
            "{:<24}  {:<8}  {:<20}  {:>8}  {:>8}  {:>8}  {:>8}  {:>6}  HOSTNAME (claimed)",
            "AGENT",
            "HEALTH",
            "LAST HEARTBEAT",
            "CREATED",
            "PENDING",
            "DROPPED",
            "K-DROPS",
            "POLICY"
        );
    }
    for row in rows {
        let health = doorwatch_store::Health::from_age(now.saturating_sub(row.last_seen));
        match format {
            Format::Json => println!(
                "{}",
                serde_json::json!({
                    "agent_id": row.agent_id,
                    "health": health,
                    "last_heartbeat": clock::rfc3339(row.last_seen),
                    "agent_version": row.agent_version,
                    "claimed_hostname": row.claimed_hostname,
                    "events_created": row.events_created,
                    "pending_events": row.pending_events,
                    "events_dropped": row.events_dropped,
                    "kernel_drops": row.kernel_drops,
                    "policy_version": row.policy_version,
                })
            ),
            Format::Table => println!(
                "{:<24}  {:<8}  {:<20}  {:>8}  {:>8}  {:>8}  {:>8}  {:>6}  {}",
                row.agent_id,
                format!("{health:?}").to_lowercase(),
                clock::rfc3339(row.last_seen),
                row.events_created,
                row.pending_events,
                row.events_dropped,
                row.kernel_drops,
                row.policy_version,
                row.claimed_hostname,
            ),
        }
    }
    Ok(())
}

async fn print_events(
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
    print!("{}", report::render(&rows, &floods, format));
    Ok(())
}

async fn serve(config: ValidConfig) -> anyhow::Result<()> {
    // One open file per connected agent: use all the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(files) => tracing::info!(open_files_limit = files, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let revocations = Revocations::default();
    // Loaded now, so a broken issuing CA is reported before anything starts.
    let issuer = load_issuer(&config)?;
    // Clients without a certificate may connect only to enroll.
    let auth = if issuer.is_some() {
        tls::ClientAuth::Optional
    } else {
        tls::ClientAuth::Required
    };
    let tls_config = tls::server_config(
        &config.client_ca,
        &config.server_cert,
        &config.server_key,
        auth,
        revocations.clone(),
    )
    .context("cannot set up TLS")?;
    let (stop_tx, stop_rx) = shutdown::channel();
    shutdown::stop_on_signal(stop_tx);

    let store = open_store_with_retry(&config, stop_rx.clone()).await?;
    let Some(store) = store else {
        return Ok(());
    };

    // Revoked agents must be refused from the first connection on.
    revocations
        .refresh(&store)
        .await
        .context("cannot read the revocation list")?;
    tracing::info!(revoked_agents = revocations.len(), "revocation list loaded");
    tokio::spawn(revocation::follow(
        store.clone(),
        revocations.clone(),
        config.enrollment.revocation_check,
        stop_rx.clone(),
    ));
    match config.correlation.clone() {
        Some(settings) => {
            tracing::info!(every = ?settings.interval, window = ?settings.window, "correlating campus-wide campaigns");
            tokio::spawn(correlate::run(store.clone(), settings, stop_rx.clone()));
        }
        None => tracing::info!("correlation off in this collector"),
    }
    if config.retention.enabled {
        let r = &config.retention;
        tracing::info!(
            events_days = r.events_days,
            outbound_days = r.outbound_days,
            heartbeats_days = r.heartbeats_days,
            campaigns_days = r.campaigns_days,
            audit_days = r.audit_days,
            "applying retention when holding its lease (0 keeps forever)"
        );
        tokio::spawn(doorwatch_collector::retention::run(
            store.clone(),
            config.retention.clone(),
            stop_rx.clone(),
        ));
    } else {
        tracing::info!("retention off in this collector");
    }
    if let Some(feed) = &config.feed {
        let token = std::fs::read_to_string(&feed.token_file)
            .with_context(|| format!("cannot read feed.token_file {}", feed.token_file.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if token.len() < 16 {
            anyhow::bail!(
                "feed.token_file {}: the token must be at least 16 characters",
                feed.token_file.display()
            );
        }
        let tls = if feed.tls {
            Some(
                doorwatch_tls::server_config_with(
                    doorwatch_tls::client_verifier(&config.client_ca, tls::ClientAuth::Optional)
                        .context("feed TLS")?,
                    &config.server_cert,
                    &config.server_key,
                )
                .map(|c| {
                    let mut c = (*c).clone();
                    c.alpn_protocols = vec![b"http/1.1".to_vec()];
                    Arc::new(c)
                })
                .context("feed TLS")?,
            )
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(feed.listen)
            .await
            .with_context(|| format!("cannot listen on feed.listen {}", feed.listen))?;
        tracing::info!(address = %feed.listen, tls = feed.tls, "serving the blocklist feed");
        tokio::spawn(doorwatch_collector::feed::serve(
            listener,
            store.clone(),
            doorwatch_collector::feed::Settings {
                listen: feed.listen,
                token,
                entry_lifetime: feed.entry_lifetime,
                campus: config.campus_networks.clone(),
                allowlist: config.allowlist.clone(),
                tls,
            },
            stop_rx.clone(),
        ));
    }
    if config.alerts.channels.is_empty() {
        tracing::info!("no alert channels configured ([alerts])");
    } else {
        let names: Vec<&str> = config.alerts.channels.iter().map(|c| c.name()).collect();
        tracing::info!(channels = ?names, "sending campaign alerts");
        tokio::spawn(alert::run(
            store.clone(),
            config.alerts.clone(),
            stop_rx.clone(),
        ));
    }
    let enrollment = issuer.map(|issuer| {
        EnrollmentService::new(
            store.clone(),
            issuer,
            EnrollmentSettings {
                certificate_lifetime: config.enrollment.certificate_lifetime,
                enrolls_per_address_per_minute: config.enrollment.enrolls_per_address_per_minute,
            },
            revocations.clone(),
        )
    });
    match &enrollment {
        Some(_) => tracing::info!(
            certificate_lifetime = ?config.enrollment.certificate_lifetime,
            "enrollment on: agents without a certificate may enroll with a token"
        ),
        None => tracing::info!("enrollment off: no [enrollment] issuing CA configured"),
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(address = %config.listen, "accepting agents");
    let incoming = tls::accept_agents(listener, tls_config, stop_rx.clone());
    let initial = match store.latest_policy(policy::DEFAULT_GROUP).await {
        Ok(Some(row)) => row,
        Ok(None) => policy::from_config(&config.policy),
        Err(e) => return Err(e).context("cannot read the stored policy"),
    };
    tracing::info!(
        group = policy::DEFAULT_GROUP,
        version = initial.version,
        "policy in force"
    );
    let (policy_tx, policy_rx) = watch::channel(Arc::new(policy::to_wire(&initial)));
    tokio::spawn(policy::follow(store.clone(), policy_tx, stop_rx.clone()));
    let (heartbeat_tx, heartbeat_rx) = tokio::sync::mpsc::channel(10_000);
    tokio::spawn(doorwatch_collector::ingest::write_heartbeats(
        store.clone(),
        heartbeat_rx,
        stop_rx.clone(),
    ));
    let (writer, writer_task) = Writer::start(store, config.writer, stop_rx.clone());
    let service = IngestService::new(
        writer,
        config.agent_limits,
        policy_rx,
        heartbeat_tx,
        revocations,
        stop_rx.clone(),
    );
    let mut stop = stop_rx;
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(service.into_server())
        .add_optional_service(enrollment.map(EnrollmentService::into_server))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .context("gRPC server failed")?;
    // The server is gone, so every session and its Writer handle is; the
    // writer stores what it holds and ends.
    if tokio::time::timeout(Duration::from_secs(60), writer_task)
        .await
        .is_err()
    {
        tracing::warn!("the batch writer did not finish within 60 s");
    }
    tracing::info!("collector stopped");
    Ok(())
}

/// The issuing CA named in `[enrollment]`, if enrollment is on.
fn load_issuer(config: &ValidConfig) -> anyhow::Result<Option<AgentIssuer>> {
    let Some((cert, key)) = &config.enrollment.issuing else {
        return Ok(None);
    };
    let issuer = AgentIssuer::from_files(cert, key).with_context(|| {
        format!(
            "cannot load the issuing CA ({} and {}) set in [enrollment]",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Some(issuer))
}

/// Connects to ClickHouse and applies migrations, retrying while it is
/// unreachable. Returns `None` if shutdown was requested meanwhile.
async fn open_store_with_retry(
    config: &ValidConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<Store>> {
    let store_config = config.clickhouse.store_config()?;
    let mut delay = Duration::from_millis(500);
    loop {
        match Store::open(&store_config).await {
            Ok(store) => return Ok(Some(store)),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, url = %store_config.url, retry_in = ?delay, "clickhouse unreachable");
            }
            Err(e) => return Err(e).context("cannot prepare the ClickHouse schema"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Who runs this command, for the records it writes.
fn os_user() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

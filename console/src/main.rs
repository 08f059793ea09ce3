//! `doorwatch-console`: the admin web console. See [`Cli`] for the
//! commands. This file only parses the command line and dispatches; the
//! console itself is the `doorwatch_console` library (`app::serve`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use doorwatch_console::auth::{Role, hash_password, random_token, token_digest};
use doorwatch_console::config::{ConsoleConfig, ReadyConfig};
use doorwatch_process::logging::LogArgs;

/// The doorwatch web console for campus security staff: campaigns, PCs,
/// source addresses, search, triage and the audit log, signed in with the
/// campus identity provider (OpenID Connect).
///
/// First setup:
///   doorwatch-console hash-password            (for a break-glass [local_admin])
///   doorwatch-console api-token --name siem    (for scripts using /api/v1)
///   doorwatch-console check-config --config /etc/doorwatch/console.toml
///   doorwatch-console serve --config /etc/doorwatch/console.toml
///
/// Register the console at the campus IdP as a confidential client with
/// the redirect URI PUBLIC_URL/auth/callback and the post-logout URI
/// PUBLIC_URL/login. See docs/configuration.md for every setting.
#[derive(Debug, Parser)]
#[command(
    version,
    verbatim_doc_comment,
    mut_arg("log_level", |a| a.help(
        "Log filter, e.g. \"info\" or \"doorwatch_console=debug\". \
         The RUST_LOG environment variable overrides it."
    ))
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the console.
    Serve {
        /// The console's configuration file.
        #[arg(long, default_value = "/etc/doorwatch/console.toml")]
        config: PathBuf,
    },
    /// Check the configuration file and the secret files it names, then
    /// exit (0 if good).
    CheckConfig {
        #[arg(long, default_value = "/etc/doorwatch/console.toml")]
        config: PathBuf,
    },
    /// Print an argon2 hash for [local_admin] password_hash. Reads the
    /// password from standard input (one line), so it stays out of the
    /// shell history.
    HashPassword,
    /// Make a new API bearer token: prints the token (give it to the
    /// script; it is shown only now) and the [[api_tokens]] entry for the
    /// configuration file.
    ApiToken {
        /// Who or what will use it, e.g. "siem".
        #[arg(long)]
        name: String,
        /// viewer, analyst or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init();
    match cli.command {
        Command::Serve { config } => {
            let ready = load_config(&config)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(doorwatch_console::app::serve(ready))
                .map_err(anyhow::Error::from)
        }
        Command::CheckConfig { config } => {
            load_config(&config)?;
            println!("{}: configuration is valid", config.display());
            Ok(())
        }
        Command::HashPassword => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.chars().count() < 12 {
                bail!("use a password of at least 12 characters");
            }
            println!(
                "{}",
                hash_password(password).map_err(|e| anyhow::anyhow!("cannot hash: {e}"))?
            );
            Ok(())
        }
        Command::ApiToken { name, role } => {
            if Role::parse(&role).is_none() {
                bail!("--role must be viewer, analyst or admin");
            }
            let token = format!("dwc_{}", random_token());
            let digest: String = token_digest(&token)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            println!("token (shown only now): {token}");
            println!();
            println!("[[api_tokens]]\nname = {name:?}\nrole = {role:?}\nsha256 = \"{digest}\"");
            Ok(())
        }
    }
}

/// The one way to a configuration `serve` can start from, shared with
/// `check-config`: parse, check every field, then read every file named.
fn load_config(path: &Path) -> anyhow::Result<ReadyConfig> {
    let valid = ConsoleConfig::load(path)
        .and_then(ConsoleConfig::validate)
        .with_context(|| format!("invalid configuration {}", path.display()))?;
    Ok(valid.read_files()?)
}

//! `doorwatch-console`: the admin web console. See [`Cli`] for the
//! commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::extract::ConnectInfo;
use clap::{Parser, Subcommand, ValueEnum};
use doorwatch_console::auth::{LoginLimiter, Sessions, hash_password, random_token, token_digest};
use doorwatch_console::config::{ConsoleConfig, ValidConfig, read_secret};
use doorwatch_console::oidc::Oidc;
use doorwatch_console::web::{self, App};
use doorwatch_store::Store;
use tokio::sync::watch;
use tower::ServiceExt;

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
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter, e.g. "info" or "doorwatch_console=debug".
    /// The RUST_LOG environment variable overrides it.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Serve { config } => {
            let config = load_config(&config)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(config))
        }
        Command::CheckConfig { config } => {
            let valid = load_config(&config)?;
            if let Some(oidc) = &valid.oidc {
                read_secret(&oidc.client_secret_file).context("oidc.client_secret_file")?;
            }
            valid
                .clickhouse
                .store_config()
                .context("clickhouse.password_file")?;
            if let Some((cert, key)) = &valid.tls {
                load_tls(cert, key)?;
            }
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
            if doorwatch_console::auth::Role::parse(&role).is_none() {
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

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(path: &std::path::Path) -> anyhow::Result<ValidConfig> {
    ConsoleConfig::load(path)
        .and_then(ConsoleConfig::validate)
        .with_context(|| format!("invalid configuration {}", path.display()))
}

fn load_tls(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad certificate in {}", cert.display()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .context("TLS versions")?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("the certificate does not match the key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Connects to ClickHouse (retrying while it is down), then serves until
/// SIGTERM or Ctrl-C.
async fn serve(config: ValidConfig) -> anyhow::Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let oidc = match &config.oidc {
        Some(settings) => {
            let secret =
                read_secret(&settings.client_secret_file).context("oidc.client_secret_file")?;
            let oidc = Oidc::new(
                settings.clone(),
                secret,
                format!("{}/auth/callback", config.public_url),
            )?;
            if let Err(e) = oidc.discover().await {
                tracing::warn!(error = %e, "identity provider unreachable; will retry at the next sign-in");
            }
            Some(oidc)
        }
        None => None,
    };
    let tls = match &config.tls {
        Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(load_tls(
            cert, key,
        )?))),
        None => None,
    };
    let store_config = config.clickhouse.store_config()?;
    let mut delay = Duration::from_millis(500);
    let store = loop {
        // The console never changes the schema: it waits for a collector
        // to create and migrate it, and needs only its own grants.
        let connected = async {
            let store = Store::connect(&store_config).await?;
            store.check_grants(doorwatch_store::grants::CONSOLE).await?;
            Ok::<_, doorwatch_store::StoreError>(store)
        };
        match connected.await {
            Ok(store) => break store,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in = ?delay, "clickhouse not ready");
            }
            Err(e) => return Err(e).context("cannot use ClickHouse"),
        }
        let mut stop = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr().context("listening address")?;
    let app = Arc::new(App {
        sessions: Sessions::new(config.session_idle_secs, config.session_max_secs),
        limiter: LoginLimiter::default(),
        store,
        oidc,
        config,
        aggregates: doorwatch_console::data::AggregatesCache::default(),
    });
    // The first overview should not wait for the counts either.
    if let Err(e) = app.aggregates.refresh(&app.store).await {
        tracing::warn!(error = %e, "cannot compute the overview counts yet");
    }
    tokio::spawn(refresh_aggregates(app.clone(), stop.clone()));
    let router = web::router(app);
    tracing::info!(address = %local, tls = tls.is_some(), "console listening");
    let mut stop_serving = stop.clone();
    let shutdown = async move {
        let _ = stop_serving.wait_for(|s| *s).await;
    };
    match tls {
        None => axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving")?,
        Some(acceptor) => serve_tls(listener, acceptor, router, stop).await,
    }
    tracing::info!("console stopped");
    Ok(())
}

/// Keeps the overview's aggregates fresh, so no request waits for them.
async fn refresh_aggregates(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(doorwatch_console::data::AGGREGATES_REFRESH) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match app.aggregates.refresh(&app.store).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("overview counts computed again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot compute the overview counts");
            }
            Err(_) => {}
        }
    }
}

/// HTTPS: one task per connection, each request told its peer address.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            if let Err(e) =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

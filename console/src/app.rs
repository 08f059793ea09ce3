//! The running console, built from a [`ReadyConfig`] (validated, files
//! read): it waits for ClickHouse, reaches the IdP, listens, serves the
//! router over HTTP or HTTPS, and keeps the overview's counts fresh, until
//! SIGTERM or Ctrl-C.
//!
//! It owns every task it starts (the signal watcher, the aggregates
//! refresh; the HTTPS loop owns its connections) and stops and awaits
//! them on the way out. It must not hold request handling or page logic: those are `web`'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use doorwatch_process::backoff::Backoff;
use doorwatch_process::shutdown::{self, stop_requested};
use doorwatch_store::{Store, StoreConfig, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{LoginLimiter, Sessions};
use crate::config::ReadyConfig;
use crate::data::{AGGREGATES_REFRESH, AggregatesCache};
use crate::https;
use crate::oidc::{Oidc, OidcError};
use crate::web::{self, App};

/// Why the console could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    #[error("cannot use ClickHouse")]
    Store(#[source] StoreError),
    #[error("cannot set up sign-in with the identity provider")]
    Oidc(#[source] OidcError),
    #[error("cannot listen on {address}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listening address")]
    LocalAddress(#[source] std::io::Error),
}

/// The first and the longest wait between ClickHouse connection attempts.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(500);
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

/// Connects to ClickHouse (retrying while it is down), then serves until
/// SIGTERM or Ctrl-C.
pub async fn serve(ready: ReadyConfig) -> Result<(), AppError> {
    let (stop_tx, stop) = shutdown::channel();
    let signals = shutdown::stop_on_signal(stop_tx);
    let result = run(ready, stop).await;
    // Ended without a signal (an error, or ClickHouse refused us): the
    // watcher has nothing left to stop.
    signals.abort();
    let _ = signals.await;
    result
}

/// [`serve`] with the stop flag given: everything after the signal.
async fn run(ready: ReadyConfig, stop: watch::Receiver<bool>) -> Result<(), AppError> {
    let ReadyConfig {
        config,
        oidc: oidc_files,
        store: store_config,
        tls,
    } = ready;
    let oidc = match (&config.oidc, oidc_files) {
        (Some(settings), Some(files)) => {
            let oidc = Oidc::new(
                settings.clone(),
                files,
                format!("{}/auth/callback", config.public_url),
            )
            .map_err(AppError::Oidc)?;
            Some(oidc)
        }
        _ => None,
    };
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let Some(store) = connect_store(&store_config, stop.clone()).await? else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AppError::Listen {
            address: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(AppError::LocalAddress)?;
    let app = Arc::new(App {
        sessions: Sessions::new(config.session_idle_secs, config.session_max_secs),
        limiter: LoginLimiter::default(),
        store,
        oidc,
        config,
        aggregates: AggregatesCache::default(),
    });
    // The first overview should not wait for the counts either.
    if let Err(e) = app.aggregates.refresh(&app.store).await {
        tracing::warn!(error = %e, "cannot compute the overview counts yet");
    }
    let refresh = tokio::spawn(refresh_aggregates(app.clone(), stop.clone()));
    // The IdP is asked in the background: the console listens at once,
    // and a sign-in before discovery is done discovers by itself.
    let discovery = tokio::spawn(discover(app.clone()));
    let router = web::router(app);
    tracing::info!(address = %local, tls = tls.is_some(), "console listening");
    https::serve(
        listener,
        tls,
        router,
        https::CONSOLE_LIMITS,
        https::HEADER_READ_TIMEOUT,
        stop.clone(),
    )
    .await;
    // Serving ends only on a stop, and the refresh ends with it.
    discovery.abort();
    finish(refresh).await;
    tracing::info!("console stopped");
    Ok(())
}

/// Fetches the IdP's discovery document and keys, if there is an IdP.
async fn discover(app: Arc<App>) {
    if let Some(oidc) = &app.oidc
        && let Err(e) = oidc.discover().await
    {
        tracing::warn!(error = %e, "identity provider unreachable; will retry at the next sign-in");
    }
}

/// Awaits a task the console started; a panic in it is logged.
async fn finish(task: JoinHandle<()>) {
    if let Err(e) = task.await
        && e.is_panic()
    {
        tracing::error!(error = %e, "a console task panicked");
    }
}

/// Connects to ClickHouse as the console (no schema changes, only its own
/// grants), retrying while it is not ready. `None` when shutdown came
/// first.
async fn connect_store(
    config: &StoreConfig,
    stop: watch::Receiver<bool>,
) -> Result<Option<Store>, AppError> {
    // The console never changes the schema: it waits for a collector to
    // create and migrate it, and needs only its own grants.
    let attempt = || async {
        let store = Store::connect(config).await?;
        store.check_grants(doorwatch_store::grants::CONSOLE).await?;
        Ok::<_, StoreError>(store)
    };
    doorwatch_process::backoff::until_ready(
        Backoff::new(STORE_RETRY_FIRST, STORE_RETRY_MAX),
        attempt,
        StoreError::is_transient,
        "clickhouse not ready",
        stop,
    )
    .await
    .map_err(AppError::Store)
}

/// Keeps the overview's aggregates fresh, so no request waits for them.
async fn refresh_aggregates(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(AGGREGATES_REFRESH) => {}
            () = stop_requested(&mut stop) => return,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_for_clickhouse_ends_at_shutdown() {
        let (stop_tx, stop) = shutdown::channel();
        stop_tx.send(true).expect("receiver alive");
        // Nothing listens on the discard port: a transient failure, and
        // then the stop is seen instead of a retry.
        let nowhere = StoreConfig {
            url: "http://127.0.0.1:9".into(),
            database: "doorwatch".into(),
            user: "doorwatch_console".into(),
            password: None,
            compress: false,
            cluster: None,
        };
        let waited = tokio::time::timeout(Duration::from_secs(30), connect_store(&nowhere, stop))
            .await
            .expect("the wait ends");
        assert!(matches!(waited, Ok(None)), "{waited:?}");
    }
}

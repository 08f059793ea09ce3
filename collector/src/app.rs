//! `serve`: builds every subsystem of a running collector from a validated
//! config (TLS and revocation, the store, the correlator, retention, the
//! feed, alerts, enrollment, policy, heartbeats, the writer and the gRPC
//! server) and runs it until shutdown. It owns every task it starts
//! ([`Tasks`]) and waits for each to end.
//!
//! Which optional jobs run is decided once, by the pure [`optional_jobs`].

use crate::campaigns::{alert, correlate};
use crate::config::ValidConfig;
use crate::enroll::{EnrollmentService, EnrollmentSettings};
use crate::ingest::IngestService;
use crate::ingest::writer::Writer;
use crate::policy::{self};
use crate::trust::pki::AgentIssuer;
use crate::trust::revocation::{self, Revocations};
use crate::trust::tls;
use anyhow::Context;
use doorwatch_process::shutdown;
use doorwatch_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub async fn serve(config: ValidConfig) -> anyhow::Result<()> {
    // Every file the config names is read before anything starts, by the
    // same step as check-config.
    let files = config
        .read_files()
        .context("a file named in the configuration")?;
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

    let store = open_store_with_retry(&files.store, stop_rx.clone()).await?;
    let Some(store) = store else {
        return Ok(());
    };

    // Revoked agents must be refused from the first connection on.
    revocations
        .refresh(&store)
        .await
        .context("cannot read the revocation list")?;
    tracing::info!(revoked_agents = revocations.len(), "revocation list loaded");
    let mut tasks = Tasks::default();
    tasks.spawn(
        "revocations",
        revocation::follow(
            store.clone(),
            revocations.clone(),
            config.enrollment.revocation_check,
            stop_rx.clone(),
        ),
    );
    for job in optional_jobs(&config) {
        match job {
            OptionalJob::Correlator(settings) => {
                tracing::info!(every = ?settings.interval, window = ?settings.window, "correlating campus-wide campaigns");
                tasks.spawn(
                    "correlator",
                    correlate::run(store.clone(), settings, stop_rx.clone()),
                );
            }
            OptionalJob::Retention(r) => {
                tracing::info!(
                    events_days = r.events_days,
                    outbound_days = r.outbound_days,
                    heartbeats_days = r.heartbeats_days,
                    campaigns_days = r.campaigns_days,
                    audit_days = r.audit_days,
                    "applying retention when holding its lease (0 keeps forever)"
                );
                tasks.spawn(
                    "retention",
                    crate::retention::run(store.clone(), r, stop_rx.clone()),
                );
            }
            OptionalJob::Feed(feed) => {
                let token = files
                    .feed_token
                    .clone()
                    .context("the feed is on but its token was not read")?;
                let tls = if feed.tls {
                    Some(
                        tls::server_config_for(
                            tls::Protocol::Https,
                            &config.client_ca,
                            &config.server_cert,
                            &config.server_key,
                            tls::ClientAuth::Optional,
                            revocations.clone(),
                        )
                        .context("feed TLS")?,
                    )
                } else {
                    None
                };
                let listener = tokio::net::TcpListener::bind(feed.listen)
                    .await
                    .with_context(|| format!("cannot listen on feed.listen {}", feed.listen))?;
                tracing::info!(address = %feed.listen, tls = feed.tls, "serving the blocklist feed");
                tasks.spawn(
                    "feed",
                    crate::campaigns::feed::serve(
                        listener,
                        store.clone(),
                        crate::campaigns::feed::Settings {
                            listen: feed.listen,
                            token,
                            entry_lifetime: feed.entry_lifetime,
                            policy: crate::campaigns::listing::ListingPolicy::new(
                                config.campus_networks.clone(),
                                config.allowlist.clone(),
                                feed.never_list.clone(),
                            ),
                            minimum: feed.minimum,
                            tls,
                        },
                        stop_rx.clone(),
                    ),
                );
            }
            OptionalJob::Alerts(settings) => {
                let names: Vec<&str> = settings.channels.iter().map(|c| c.name()).collect();
                tracing::info!(channels = ?names, "sending alerts");
                tasks.spawn(
                    "alerts",
                    alert::run(store.clone(), settings, stop_rx.clone()),
                );
            }
        }
    }
    if config.correlation.is_none() {
        tracing::info!("correlation off in this collector");
    }
    if !config.retention.enabled {
        tracing::info!("retention off in this collector");
    }
    if config.alerts.channels.is_empty() {
        tracing::info!("no alert channels configured ([alerts])");
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
    let incoming = tls::accept_agents(listener, tls_config, config.listen_limits, stop_rx.clone());
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
    tasks.spawn(
        "policy",
        policy::follow(store.clone(), policy_tx, stop_rx.clone()),
    );
    let (heartbeat_tx, heartbeat_rx) = tokio::sync::mpsc::channel(10_000);
    tasks.spawn(
        "heartbeats",
        crate::ingest::write_heartbeats(store.clone(), heartbeat_rx, stop_rx.clone()),
    );
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
    tasks.finish(Duration::from_secs(10)).await;
    tracing::info!("collector stopped");
    Ok(())
}

/// A job a collector runs only when its config asks for it, with its
/// settings.
#[derive(Debug)]
pub enum OptionalJob {
    Correlator(correlate::Settings),
    Retention(crate::retention::Settings),
    Feed(crate::config::ValidFeed),
    Alerts(alert::Settings),
}

/// Pure: the optional jobs of a collector with `config`, in start order.
pub fn optional_jobs(config: &ValidConfig) -> Vec<OptionalJob> {
    let mut jobs = Vec::new();
    if let Some(settings) = config.correlation.clone() {
        jobs.push(OptionalJob::Correlator(settings));
    }
    if config.retention.enabled {
        jobs.push(OptionalJob::Retention(config.retention.clone()));
    }
    if let Some(feed) = config.feed.clone() {
        jobs.push(OptionalJob::Feed(feed));
    }
    if !config.alerts.channels.is_empty() {
        jobs.push(OptionalJob::Alerts(config.alerts.clone()));
    }
    jobs
}

/// Every background task `serve` starts, by name, so none is left behind.
#[derive(Debug, Default)]
pub struct Tasks {
    set: tokio::task::JoinSet<&'static str>,
}

impl Tasks {
    /// Starts `task`, known as `name` in logs.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.set.spawn(async move {
            task.await;
            name
        });
    }

    /// How many are still running.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether none is running.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Waits up to `grace` for every task to end (each watches the stop
    /// flag), then aborts the rest, naming them; returns how many it aborted.
    pub async fn finish(mut self, grace: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.set.is_empty() {
            match tokio::time::timeout_at(deadline, self.set.join_next()).await {
                Ok(Some(Ok(name))) => tracing::debug!(task = name, "task ended"),
                Ok(Some(Err(e))) => tracing::warn!(error = %e, "a task failed"),
                Ok(None) => break,
                Err(_) => {
                    let left = self.set.len();
                    tracing::warn!(
                        tasks = left,
                        "tasks still running after the grace period; aborting them"
                    );
                    self.set.abort_all();
                    while self.set.join_next().await.is_some() {}
                    return left;
                }
            }
        }
        0
    }
}

/// The issuing CA named in `[enrollment]`, if enrollment is on.
pub(crate) fn load_issuer(config: &ValidConfig) -> anyhow::Result<Option<AgentIssuer>> {
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
pub(crate) async fn open_store_with_retry(
    store_config: &doorwatch_store::StoreConfig,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<Store>> {
    doorwatch_process::backoff::until_ready(
        doorwatch_process::backoff::Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(30),
        ),
        || Store::open(store_config),
        doorwatch_store::StoreError::is_transient,
        "clickhouse unreachable",
        stop,
    )
    .await
    .context("cannot prepare the ClickHouse schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> ValidConfig {
        let text = format!(
            "[listen]\naddress = \"127.0.0.1:4443\"\n[tls]\nclient_ca = \"ca.pem\"\n\
             server_cert = \"c.pem\"\nserver_key = \"c.key\"\n[clickhouse]\n\
             url = \"http://127.0.0.1:8123\"\n{extra}"
        );
        toml::from_str::<crate::config::CollectorConfig>(&text)
            .expect("parses")
            .validate()
            .expect("valid")
    }

    fn names(config: &ValidConfig) -> Vec<&'static str> {
        optional_jobs(config)
            .iter()
            .map(|job| match job {
                OptionalJob::Correlator(_) => "correlator",
                OptionalJob::Retention(_) => "retention",
                OptionalJob::Feed(_) => "feed",
                OptionalJob::Alerts(_) => "alerts",
            })
            .collect()
    }

    #[test]
    fn a_default_collector_correlates_and_applies_retention_only() {
        assert_eq!(names(&config("")), ["correlator", "retention"]);
    }

    #[test]
    fn each_optional_job_follows_its_table() {
        let all = config(
            "[feed]\nlisten = \"127.0.0.1:8443\"\ntoken_file = \"feed.token\"\n\
             [alerts]\nsyslog = \"udp://127.0.0.1:514\"\n",
        );
        assert_eq!(names(&all), ["correlator", "retention", "feed", "alerts"]);
        let none = config("[correlation]\nenabled = false\n[retention]\nenabled = false\n");
        assert!(names(&none).is_empty());
    }

    #[tokio::test]
    async fn tasks_end_on_stop_and_a_straggler_is_aborted() {
        let (stop_tx, stop_rx) = shutdown::channel();
        let mut tasks = Tasks::default();
        for _ in 0..3 {
            let mut stop = stop_rx.clone();
            tasks.spawn("polite", async move {
                shutdown::stop_requested(&mut stop).await
            });
        }
        tasks.spawn("stuck", std::future::pending());
        assert_eq!(tasks.len(), 4);
        stop_tx.send(true).expect("receivers alive");
        let aborted = tasks.finish(Duration::from_millis(200)).await;
        assert_eq!(
            aborted, 1,
            "only the task that ignores the stop flag is aborted"
        );
    }
}

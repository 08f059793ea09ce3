//! The running agent, built from a validated configuration: identity (it
//! enrolls first when it has to), TLS, spool, capture, the uplink task and
//! the capture thread. [`App`] owns every thread and task it starts and
//! joins them when it stops.
//!
//! It must not parse flags or read the configuration file (the CLI does),
//! and holds no detection logic (that is [`crate::pipeline`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doorwatch_process::clock::unix_now_ms;
use doorwatch_process::shutdown::wait_for_signal;
use doorwatch_proto::v1;
use tokio::sync::{mpsc, oneshot, watch};

use crate::capture::{Capture, CaptureError};
use crate::config::ValidConfig;
use crate::detect::Detector;
use crate::enroll::{self, Claims, EnrollError, IdentityFiles, Renewal};
use crate::events;
use crate::outbound::Monitor;
use crate::pipeline::{CaptureLoop, OutboundLoop, Stages};
use crate::spool::{Spool, SpoolError};
use crate::status::{self, Status};
use crate::tls::{ClientTls, ClientTlsError};
use crate::uplink::{Backoff, Counters, Uplink};
use crate::{explain, state_file};

/// Why the agent could not start, or stopped with a fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot read the agent certificate")]
    ReadCertificate(#[source] EnrollError),
    #[error(
        "{problem}; set collector.token in the configuration or run `doorwatch-agent enroll --token ...`"
    )]
    NoToken { problem: String },
    #[error("stopped before enrolling")]
    StoppedBeforeEnrolling,
    #[error("enrollment refused")]
    EnrollmentRefused(#[source] EnrollError),
    #[error("cannot load the agent's TLS files")]
    Tls(#[source] ClientTlsError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("cannot open the spool in {}", dir.display())]
    Spool {
        dir: PathBuf,
        #[source]
        source: SpoolError,
    },
    #[error("interface {interface} has no IP addresses; set local_ips in the configuration")]
    NoLocalIps { interface: String },
    #[error("cannot start the capture thread")]
    CaptureThread(#[source] std::io::Error),
    #[error("capture stopped")]
    CaptureStopped(#[source] CaptureError),
}

/// What this PC says about itself when enrolling.
pub fn claims() -> Claims {
    Claims {
        hostname: hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        os: std::env::consts::OS.to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// Where this agent's identity lives and whom it enrolls with.
pub fn identity_files(config: &ValidConfig) -> IdentityFiles {
    IdentityFiles {
        cert: config.cert.clone(),
        key: config.key.clone(),
        ca: config.ca.clone(),
        address: config.collector_address.clone(),
        server_name: config.server_name.clone(),
    }
}

/// Runs the agent until SIGTERM or Ctrl-C, or until capture fails.
pub fn run(config: ValidConfig) -> Result<(), AppError> {
    App::start(config)?.run_until_signal()
}

/// The started agent: its runtime, the uplink task and the capture thread.
#[derive(Debug)]
pub struct App {
    runtime: tokio::runtime::Runtime,
    uplink: tokio::task::JoinHandle<()>,
    capture_thread: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    failed: oneshot::Receiver<CaptureError>,
}

impl App {
    /// Makes sure there is an identity (enrolling if needed), opens the TLS
    /// files, the spool and the capture, and starts the uplink and the
    /// capture thread.
    pub fn start(config: ValidConfig) -> Result<Self, AppError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(AppError::Runtime)?;
        runtime.block_on(ensure_identity(&config))?;
        let tls = ClientTls::load(&config.ca, &config.cert, &config.key, &config.server_name)
            .map_err(AppError::Tls)?;
        let renewal = Renewal::new(identity_files(&config), claims(), config.token.clone())
            .map_err(AppError::ReadCertificate)?;
        let capture = Capture::open(&config.interface)?;
        let (spool, recovery) =
            Spool::open(&config.spool_dir, config.spool_max_bytes).map_err(|source| {
                AppError::Spool {
                    dir: config.spool_dir.clone(),
                    source,
                }
            })?;
        tracing::info!(
            dir = %config.spool_dir.display(),
            unacknowledged_batches = recovery.batches,
            torn_bytes_cut = recovery.truncated_bytes,
            quarantined = recovery.quarantined.len(),
            lost_batches = recovery.lost_batches,
            "spool opened"
        );
        for path in &recovery.quarantined {
            tracing::error!(path = %path.display(), "damaged spool segment: its readable batches were kept, this is a copy as found");
        }
        let local_ips = if config.local_ips.is_empty() {
            capture.interface_ips()
        } else {
            config.local_ips.clone()
        };
        if local_ips.is_empty() {
            return Err(AppError::NoLocalIps {
                interface: config.interface.clone(),
            });
        }
        tracing::info!(interface = %config.interface, local_ips = ?local_ips, collector = %config.collector_address, "agent starting");

        let counters = Arc::new(Counters::default());
        if recovery.lost_batches > 0 {
            // How many events they held was lost with them: each counts
            // as one, so events_dropped shows the loss at least.
            tracing::error!(
                lost_batches = recovery.lost_batches,
                "unacknowledged spool batches could not be read; they are lost"
            );
            counters.dropped(&counters.dropped_spool_error, recovery.lost_batches);
        }
        let (event_tx, event_rx) = mpsc::channel(4096);
        let (policy_tx, policy_rx) = watch::channel(None);
        let stop = Arc::new(AtomicBool::new(false));
        let (failed_tx, failed) = oneshot::channel();

        let claims = claims();
        let hello = v1::Hello {
            protocol_version: doorwatch_proto::PROTOCOL_VERSION,
            agent_version: claims.agent_version.clone(),
            hostname: claims.hostname.clone(),
            os: claims.os.clone(),
            local_ips: local_ips.iter().map(|&ip| events::ip_bytes(ip)).collect(),
        };
        let uplink = Uplink::new(
            tls,
            config.collector_address.clone(),
            hello,
            config.heartbeat,
            event_rx,
            spool,
            policy_tx,
            counters.clone(),
        )
        .with_renewal(renewal);
        let uplink = runtime.spawn(uplink.run());

        let outbound = config.outbound.clone().map(|c| {
            OutboundLoop::new(
                Monitor::new(c, local_ips.clone()),
                config.inventory_every,
                state_file::beside_spool(&config.spool_dir, "baseline.json"),
            )
        });
        let status = Status {
            started_ms: unix_now_ms(),
            interface: config.interface.clone(),
            ..Status::default()
        };
        let stages = Stages::new(
            Detector::new(config.detector.clone(), local_ips),
            outbound,
            status,
            status::path_for(&config.spool_dir),
            event_tx,
            counters,
        );
        let capture_loop = CaptureLoop::new(capture, stages, policy_rx, stop.clone());
        let capture_thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                if let Err(e) = capture_loop.run() {
                    let _ = failed_tx.send(e);
                }
            })
            .map_err(AppError::CaptureThread)?;
        Ok(Self {
            runtime,
            uplink,
            capture_thread,
            stop,
            failed,
        })
    }

    /// Waits for SIGTERM, Ctrl-C or a capture failure, then stops: the
    /// capture thread closes its episodes and is joined, and the uplink
    /// gets a few seconds to deliver the closing reports.
    pub fn run_until_signal(self) -> Result<(), AppError> {
        let Self {
            runtime,
            uplink,
            capture_thread,
            stop,
            failed,
        } = self;
        let failure = runtime.block_on(async {
            tokio::select! {
                _ = wait_for_signal() => None,
                failed = failed => failed.ok(),
            }
        });
        stop.store(true, Ordering::Relaxed);
        if capture_thread.join().is_err() {
            tracing::error!("capture thread panicked");
        }
        // Give delivery a moment to send the closing reports.
        if runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), uplink).await })
            .is_err()
        {
            tracing::warn!("stopping with undelivered events");
        }
        match failure {
            Some(e) => Err(AppError::CaptureStopped(e)),
            None => {
                tracing::info!("agent stopped");
                Ok(())
            }
        }
    }
}

/// Makes sure a usable certificate is in place before the agent starts:
/// enrolls with the configured token when there is none yet, when it has
/// expired, or when it does not fit the key. Waits out an unreachable
/// collector; a refusal (bad token, say) stops the agent with the reason.
pub async fn ensure_identity(config: &ValidConfig) -> Result<(), AppError> {
    let problem = match enroll::validity(&config.cert) {
        Ok(validity) if validity.expired(SystemTime::now()) => Some(format!(
            "the certificate {} expired at {}",
            config.cert.display(),
            explain::rfc3339_ms(unix_ms_of(validity.not_after))
        )),
        Ok(_) => ClientTls::load(&config.ca, &config.cert, &config.key, &config.server_name)
            .err()
            .map(|e| format!("the certificate and key do not work: {e}")),
        Err(_) if !config.cert.exists() => {
            Some(format!("no certificate at {} yet", config.cert.display()))
        }
        Err(e) => return Err(AppError::ReadCertificate(e)),
    };
    let Some(problem) = problem else {
        return Ok(());
    };
    let Some(token) = &config.token else {
        return Err(AppError::NoToken { problem });
    };
    tracing::info!(reason = %problem, collector = %config.collector_address, "enrolling with the configured token");
    let files = identity_files(config);
    let mut backoff = Backoff::new();
    loop {
        match enroll::enroll(&files, token.expose(), &claims()).await {
            Ok(enrolled) => {
                tracing::info!(agent_id = %enrolled.agent_id, group = %enrolled.group, "enrolled");
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay(&mut rand::rng());
                tracing::warn!(error = %e, retry_in = ?delay, "cannot enroll yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wait_for_signal() => return Err(AppError::StoppedBeforeEnrolling),
                }
            }
            Err(e) => return Err(AppError::EnrollmentRefused(e)),
        }
    }
}

/// Unix milliseconds of `time`; 0 before 1970.
fn unix_ms_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

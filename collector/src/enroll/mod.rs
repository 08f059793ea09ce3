//! Enrollment: bootstrap tokens, and the `Enrollment` gRPC service that
//! turns a token and a CSR into an agent identity and a short-lived client
//! certificate, and renews that certificate over mutual TLS.
//!
//! Tokens are `doorwatch_store::Token` (`dwt1-<id>-<secret>`; only a
//! SHA-256 of the secret is stored). Each enrollment assigns a
//! new UUID agent id, so a re-imaged PC that enrolls again is a new agent
//! and its old identity simply goes stale. A CSR's public key can enroll
//! once: a replayed Enroll request (the same key again) is refused.

pub mod config;

use doorwatch_process::clock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doorwatch_proto::v1::{self, EnrollRequest, EnrollResponse, RenewRequest};
use doorwatch_store::{AgentRow, Store, StoreError, Token, TokenRow, TokenState};
use std::time::Instant;
use tonic::{Request, Response, Status};

use crate::rate::RateLimit;
use crate::trust::identity;
use crate::trust::pki::{AgentIssuer, PkiError, SignedAgent};
use crate::trust::revocation::Revocations;
use crate::trust::tls::PeerInfo;
/// Largest CSR accepted.
const MAX_CSR_BYTES: usize = 16 * 1024;
/// Source addresses remembered by the enrollment rate limit.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Settings of the enrollment service.
#[derive(Debug, Clone)]
pub struct EnrollmentSettings {
    pub certificate_lifetime: Duration,
    pub enrolls_per_address_per_minute: u32,
}

/// The `Enrollment` gRPC service.
#[derive(Debug, Clone)]
pub struct EnrollmentService {
    store: Store,
    issuer: Arc<AgentIssuer>,
    settings: EnrollmentSettings,
    revocations: Revocations,
    limits: Arc<Mutex<HashMap<IpAddr, RateLimit>>>,
    /// Held from the token and key checks to the agent's record, so two
    /// requests at once cannot both take a token's last use or both enroll
    /// one key. (Two collectors at the very same moment still can; see
    /// docs/decisions.md.)
    recording: Arc<tokio::sync::Mutex<()>>,
}

impl EnrollmentService {
    pub fn new(
        store: Store,
        issuer: AgentIssuer,
        settings: EnrollmentSettings,
        revocations: Revocations,
    ) -> Self {
        Self {
            store,
            issuer: Arc::new(issuer),
            settings,
            revocations,
            limits: Arc::default(),
            recording: Arc::default(),
        }
    }

    pub fn into_server(self) -> v1::enrollment_server::EnrollmentServer<Self> {
        v1::enrollment_server::EnrollmentServer::new(self)
            .max_decoding_message_size(64 * 1024)
            .max_encoding_message_size(64 * 1024)
    }

    /// Refuses a source address that has used up its enrollment attempts.
    fn rate_limit(&self, address: IpAddr) -> Result<(), Status> {
        let per_minute = f64::from(self.settings.enrolls_per_address_per_minute);
        let now = Instant::now();
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if limits.len() >= MAX_TRACKED_ADDRESSES && !limits.contains_key(&address) {
            // Forget addresses that have been quiet for a minute or more:
            // their buckets are full again anyway.
            limits.retain(|_, limit| limit.idle_for(now) < Duration::from_secs(60));
        }
        let limit = limits
            .entry(address)
            .or_insert_with(|| RateLimit::new(per_minute / 60.0, per_minute, now));
        let wait = limit.take(1, now);
        if wait.is_zero() {
            Ok(())
        } else {
            Err(Status::resource_exhausted(format!(
                "too many enrollment attempts from {address}; retry in {} s",
                wait.as_secs().max(1)
            )))
        }
    }

    /// Checks the token: known, secret right, not revoked, not expired,
    /// uses left. Returns its stored row.
    async fn check_token(&self, text: &str) -> Result<TokenRow, Refusal> {
        let token = Token::parse(text).map_err(|e| Refusal::denied(e.to_string()))?;
        let found = self
            .store
            .token(&token.id)
            .await
            .map_err(Refusal::storage)?;
        let Some(found) = found.filter(|f| token.matches(&f.token.secret_sha256)) else {
            return Err(Refusal::denied(format!("token {} is not known", token.id)));
        };
        let refusal = match found.state(clock::unix_now()) {
            TokenState::Usable => return Ok(found.token),
            TokenState::Revoked => format!("token {} is revoked", found.token.token_id),
            TokenState::Expired => format!(
                "token {} expired at {}",
                found.token.token_id,
                clock::rfc3339(found.token.expires_at)
            ),
            TokenState::UsedUp => format!(
                "token {} is used up ({} of {} enrollments)",
                found.token.token_id, found.uses, found.token.max_uses
            ),
        };
        Err(Refusal::denied(refusal))
    }

    /// Signs `csr` for `agent_id` after checking its key was never used.
    async fn sign(&self, csr: &[u8], agent_id: &str) -> Result<SignedAgent, Refusal> {
        if csr.len() > MAX_CSR_BYTES {
            return Err(Refusal::invalid(format!(
                "certificate signing request is {} bytes; at most {MAX_CSR_BYTES}",
                csr.len()
            )));
        }
        let signed = self
            .issuer
            .sign_request(csr, agent_id, self.settings.certificate_lifetime)
            .map_err(|e| match e {
                PkiError::BadRequest(_) => Refusal::invalid(e.to_string()),
                other => Refusal::internal(other.to_string()),
            })?;
        if let Some(owner) = self
            .store
            .agent_with_key(&signed.key_sha256)
            .await
            .map_err(Refusal::storage)?
        {
            let revoked = self.store.revocations().await.unwrap_or_default();
            if let Some(revocation) = revoked.iter().find(|r| r.agent_id == owner) {
                tracing::warn!(revoked_agent_id = %owner, revoked_reason = %revocation.reason, "the key of a revoked agent tried to enroll again: refused");
            }
            return Err(Refusal {
                status: Status::already_exists(format!(
                    "this key is already enrolled (agent {owner}); a replayed or reused request is refused, make a new key"
                )),
            });
        }
        Ok(signed)
    }

    async fn enroll(
        &self,
        peer: &PeerInfo,
        request: EnrollRequest,
    ) -> Result<EnrollResponse, Refusal> {
        let _recording = self.recording.lock().await;
        let token = self.check_token(&request.token).await?;
        let agent_id = uuid::Uuid::new_v4().to_string();
        let signed = self.sign(&request.csr_der, &agent_id).await?;
        let now = clock::unix_now();
        let row = AgentRow {
            agent_id: agent_id.clone(),
            hostname: identity::claim(&request.hostname),
            os: identity::claim(&request.os),
            agent_version: identity::claim(&request.agent_version),
            agent_group: token.agent_group.clone(),
            token_id: token.token_id.clone(),
            enrolled_at: clock::seconds(now),
            cert_serial: signed.serial.clone(),
            cert_not_after: clock::seconds(signed.not_after.unix_timestamp().max(0) as u64),
            key_sha256: signed.key_sha256.clone(),
            remote: peer.remote.ip().to_string(),
            version: clock::unix_now_ms(),
        };
        self.store
            .insert_agent(&row)
            .await
            .map_err(Refusal::storage)?;
        tracing::info!(
            agent_id = %agent_id,
            group = %row.agent_group,
            token_id = %row.token_id,
            claimed_hostname = %row.hostname,
            remote = %peer.remote,
            serial = %row.cert_serial,
            not_after = %clock::rfc3339(row.cert_not_after),
            "agent enrolled"
        );
        self.warn_if_a_revoked_pc_returns(&row).await;
        Ok(response(row, signed))
    }

    /// A new agent whose claimed hostname is a revoked agent's may be a
    /// stolen PC enrolling again (with a token it kept): say so loudly,
    /// with what an admin needs to act. A claim proves nothing, so the
    /// enrollment itself goes ahead.
    async fn warn_if_a_revoked_pc_returns(&self, row: &AgentRow) {
        if row.hostname.is_empty() {
            return;
        }
        // The store, not the in-memory list: a PC may enroll again right
        // after its revocation, before this collector has reloaded it.
        let (agents, revoked) =
            match tokio::try_join!(self.store.agents(), self.store.revocations()) {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot check the new agent against revoked ones");
                    return;
                }
            };
        let reason = |id: &str| {
            revoked
                .iter()
                .find(|r| r.agent_id == id)
                .map(|r| r.reason.clone())
        };
        for (revoked_agent, why) in agents.iter().filter_map(|a| {
            let matches =
                a.agent_id != row.agent_id && a.hostname.eq_ignore_ascii_case(&row.hostname);
            matches
                .then(|| reason(&a.agent_id).map(|why| (a, why)))
                .flatten()
        }) {
            tracing::warn!(
                agent_id = %row.agent_id,
                claimed_hostname = %row.hostname,
                revoked_agent_id = %revoked_agent.agent_id,
                revoked_reason = %why,
                token_id = %row.token_id,
                remote = %row.remote,
                "a revoked PC's hostname enrolled again: if that PC was stolen, revoke this agent and its token"
            );
        }
    }

    async fn renew(
        &self,
        peer: &PeerInfo,
        request: RenewRequest,
    ) -> Result<EnrollResponse, Refusal> {
        let Some(agent) = peer.agent() else {
            return Err(Refusal {
                status: Status::unauthenticated(
                    "renewal needs the agent's current certificate (mutual TLS)",
                ),
            });
        };
        let agent_id = agent.identity.agent_id;
        if let Some(reason) = self.revocations.reason(&agent_id) {
            return Err(Refusal::denied(format!(
                "agent {agent_id} is revoked: {reason}"
            )));
        }
        let _recording = self.recording.lock().await;
        let signed = self.sign(&request.csr_der, &agent_id).await?;
        let previous = self
            .store
            .agent(&agent_id)
            .await
            .map_err(Refusal::storage)?;
        // Agents given certificates by hand have no enrollment record yet.
        let mut row = previous.unwrap_or_else(|| AgentRow {
            agent_id: agent_id.clone(),
            hostname: String::new(),
            os: String::new(),
            agent_version: String::new(),
            agent_group: crate::policy::DEFAULT_GROUP.to_owned(),
            token_id: String::new(),
            enrolled_at: clock::seconds(clock::unix_now()),
            cert_serial: String::new(),
            cert_not_after: 0,
            key_sha256: String::new(),
            remote: String::new(),
            version: 0,
        });
        if !request.hostname.is_empty() {
            row.hostname = identity::claim(&request.hostname);
        }
        if !request.agent_version.is_empty() {
            row.agent_version = identity::claim(&request.agent_version);
        }
        row.cert_serial = signed.serial.clone();
        row.cert_not_after = clock::seconds(signed.not_after.unix_timestamp().max(0) as u64);
        row.key_sha256 = signed.key_sha256.clone();
        row.remote = peer.remote.ip().to_string();
        row.version = clock::unix_now_ms().max(row.version + 1);
        self.store
            .insert_agent(&row)
            .await
            .map_err(Refusal::storage)?;
        tracing::info!(
            agent_id = %agent_id,
            remote = %peer.remote,
            serial = %row.cert_serial,
            not_after = %clock::rfc3339(row.cert_not_after),
            "agent certificate renewed"
        );
        Ok(response(row, signed))
    }
}

fn response(row: AgentRow, signed: SignedAgent) -> EnrollResponse {
    EnrollResponse {
        agent_id: row.agent_id,
        certificate_chain_pem: signed.chain_pem,
        not_after_unix_ms: signed.not_after.unix_timestamp().saturating_mul(1000),
        group: row.agent_group,
    }
}

/// Why a request was refused, as the status the agent gets.
#[derive(Debug)]
struct Refusal {
    status: Status,
}

impl Refusal {
    fn denied(message: String) -> Self {
        Self {
            status: Status::permission_denied(message),
        }
    }

    fn invalid(message: String) -> Self {
        Self {
            status: Status::invalid_argument(message),
        }
    }

    fn internal(message: String) -> Self {
        Self {
            status: Status::internal(message),
        }
    }

    fn storage(error: StoreError) -> Self {
        Self {
            status: Status::unavailable(format!(
                "enrollment records unavailable, retry later: {error}"
            )),
        }
    }
}

#[tonic::async_trait]
impl v1::enrollment_server::Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let peer = peer(&request)?;
        self.rate_limit(peer.remote.ip()).inspect_err(|status| {
            tracing::warn!(remote = %peer.remote, reason = %status.message(), "enrollment refused");
        })?;
        let request = request.into_inner();
        let token_id = Token::parse(&request.token)
            .map(|t| t.id)
            .unwrap_or_default();
        match self.enroll(&peer, request).await {
            Ok(response) => Ok(Response::new(response)),
            Err(refusal) => {
                tracing::warn!(
                    remote = %peer.remote,
                    token_id = %token_id,
                    code = ?refusal.status.code(),
                    reason = %refusal.status.message(),
                    "enrollment refused"
                );
                Err(refusal.status)
            }
        }
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let peer = peer(&request)?;
        let agent_id = peer
            .identity
            .as_ref()
            .map(|i| i.agent_id.clone())
            .unwrap_or_default();
        match self.renew(&peer, request.into_inner()).await {
            Ok(response) => Ok(Response::new(response)),
            Err(refusal) => {
                tracing::warn!(
                    agent_id = %agent_id,
                    remote = %peer.remote,
                    code = ?refusal.status.code(),
                    reason = %refusal.status.message(),
                    "renewal refused"
                );
                Err(refusal.status)
            }
        }
    }
}

fn peer<T>(request: &Request<T>) -> Result<PeerInfo, Status> {
    request
        .extensions()
        .get::<PeerInfo>()
        .cloned()
        .ok_or_else(|| Status::internal("connection information missing"))
}

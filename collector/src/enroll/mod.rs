//! Enrollment: bootstrap tokens, and the `Enrollment` gRPC service that
//! turns a token and a CSR into an agent identity and a short-lived client
//! certificate, and renews that certificate over mutual TLS.
//!
//! Tokens are `doorwatch_store::Token` (`dwt1-<id>-<secret>`; only a
//! SHA-256 of the secret is stored). Each enrollment assigns a
//! new UUID agent id, so a re-imaged PC that enrolls again is a new agent
//! and its old identity simply goes stale. A CSR's public key can enroll
//! once: a replayed Enroll request (the same key again) is refused.
//!
//! A stolen PC may come back: the stock agent makes a new key for every
//! enrollment, but keeps its hostname, and a crafted request may reuse the
//! revoked agent's key (refused, as any known key). An enrollment that
//! claims a revoked agent's hostname or presents its key is recorded in
//! `revoked_returns` and logged; the holder of the `alerts` lease alerts
//! it ([`crate::campaigns::alert`]). A claim proves nothing, so the
//! enrollment itself goes ahead.

pub mod config;

use doorwatch_process::clock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doorwatch_proto::v1::{self, EnrollRequest, EnrollResponse, RenewRequest};
use doorwatch_store::{
    AgentRow, RevokedMatch, RevokedReturnRow, Store, StoreError, Token, TokenRow, TokenState,
};
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
/// Most revoked agents one enrollment is recorded against, the most
/// recently revoked first (a name many revoked PCs shared, like `ubuntu`,
/// must not make a flood of alerts).
const MAX_RETURN_MATCHES: u64 = 10;

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

    /// Signs `csr` for `agent_id` (the request's own checks only).
    fn sign(&self, csr: &[u8], agent_id: &str) -> Result<SignedAgent, Refusal> {
        if csr.len() > MAX_CSR_BYTES {
            return Err(Refusal::invalid(format!(
                "certificate signing request is {} bytes; at most {MAX_CSR_BYTES}",
                csr.len()
            )));
        }
        self.issuer
            .sign_request(csr, agent_id, self.settings.certificate_lifetime)
            .map_err(|e| match e {
                PkiError::BadRequest(_) => Refusal::invalid(e.to_string()),
                other => Refusal::internal(other.to_string()),
            })
    }

    /// The agent that already enrolled or renewed with the key `signed`
    /// names, if one did: a replayed or reused request.
    async fn key_owner(&self, signed: &SignedAgent) -> Result<Option<String>, Refusal> {
        self.store
            .agent_with_key(&signed.key_sha256)
            .await
            .map_err(Refusal::storage)
    }

    async fn enroll(
        &self,
        peer: &PeerInfo,
        request: EnrollRequest,
    ) -> Result<EnrollResponse, Refusal> {
        let _recording = self.recording.lock().await;
        let token = self.check_token(&request.token).await?;
        let agent_id = uuid::Uuid::new_v4().to_string();
        let signed = self.sign(&request.csr_der, &agent_id)?;
        let now = clock::unix_now();
        let attempt = Attempt {
            id: agent_id.clone(),
            at: clock::seconds(now),
            claimed_hostname: identity::claim(&request.hostname),
            token_id: token.token_id.clone(),
            remote: peer.remote.ip().to_string(),
            key_sha256: signed.key_sha256.clone(),
        };
        // The store, not the in-memory list: a PC may enroll again right
        // after its revocation, before this collector has reloaded it.
        let resembled = self
            .store
            .revoked_matching(
                &attempt.claimed_hostname,
                &attempt.key_sha256,
                MAX_RETURN_MATCHES,
            )
            .await
            .map_err(Refusal::storage)?;
        if let Some(owner) = self.key_owner(&signed).await? {
            self.record_return(returns(&attempt, None, &resembled))
                .await;
            return Err(Refusal::known_key(&owner));
        }
        let row = AgentRow {
            agent_id: agent_id.clone(),
            hostname: attempt.claimed_hostname.clone(),
            os: identity::claim(&request.os),
            agent_version: identity::claim(&request.agent_version),
            agent_group: token.agent_group.clone(),
            token_id: token.token_id.clone(),
            enrolled_at: clock::seconds(now),
            cert_serial: signed.serial.clone(),
            cert_not_after: clock::seconds(signed.not_after.unix_timestamp().max(0) as u64),
            key_sha256: signed.key_sha256.clone(),
            remote: attempt.remote.clone(),
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
        self.record_return(returns(&attempt, Some(&agent_id), &resembled))
            .await;
        Ok(response(row, signed))
    }

    /// Logs and records an enrollment that resembled revoked agents, so
    /// the alert channels carry it. Without the record no alert goes out,
    /// so a failure is an error in the log, which still names everything.
    async fn record_return(&self, rows: Vec<RevokedReturnRow>) {
        for row in &rows {
            warn_of_return(row);
        }
        if rows.is_empty() {
            return;
        }
        if let Err(e) = self.store.insert_revoked_returns(&rows).await {
            tracing::error!(
                error = %e,
                agent_id = %rows[0].agent_id,
                token_id = %rows[0].token_id,
                "cannot record a revoked PC's return: no alert will be sent, act on the warning above"
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
        let signed = self.sign(&request.csr_der, &agent_id)?;
        if let Some(owner) = self.key_owner(&signed).await? {
            return Err(Refusal::known_key(&owner));
        }
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

/// An enrollment request as a revoked PC's return records it.
#[derive(Debug, Clone)]
struct Attempt {
    /// The agent id it gets if it enrolls.
    id: String,
    at: u32,
    /// Already made safe ([`identity::claim`]).
    claimed_hostname: String,
    token_id: String,
    remote: String,
    key_sha256: String,
}

/// Pure: the record of `attempt`, which enrolled as `enrolled` (`None`:
/// refused), against each revoked agent it `resembled`. Ids are the same
/// for the same attempt and revoked agent.
fn returns(
    attempt: &Attempt,
    enrolled: Option<&str>,
    resembled: &[RevokedMatch],
) -> Vec<RevokedReturnRow> {
    resembled
        .iter()
        .map(|revoked| {
            let digest = ring::digest::digest(
                &ring::digest::SHA256,
                format!("doorwatch-return\0{}\0{}", attempt.id, revoked.agent_id).as_bytes(),
            );
            let mut id = [0u8; 16];
            id.copy_from_slice(&digest.as_ref()[..16]);
            RevokedReturnRow {
                return_id: uuid::Builder::from_custom_bytes(id).into_uuid(),
                at: attempt.at,
                revoked_agent_id: revoked.agent_id.clone(),
                revoked_hostname: revoked.hostname.clone(),
                revoked_at: revoked.revoked_at,
                revoked_reason: revoked.reason.clone(),
                hostname_matched: revoked.hostname_matched,
                key_matched: revoked.key_matched,
                agent_id: enrolled.unwrap_or_default().to_owned(),
                claimed_hostname: attempt.claimed_hostname.clone(),
                token_id: attempt.token_id.clone(),
                remote: attempt.remote.clone(),
                key_sha256: attempt.key_sha256.clone(),
            }
        })
        .collect()
}

/// Logs an enrollment that resembled a revoked agent (one row of
/// `revoked_returns`) as a warning with what an admin needs to act.
fn warn_of_return(r: &RevokedReturnRow) {
    let what = match (r.agent_id.is_empty(), r.key_matched != 0) {
        (false, _) => {
            "a revoked PC's hostname enrolled again: if that PC was stolen, revoke this agent and its token"
        }
        (true, true) => {
            "the key of a revoked agent tried to enroll again: refused; revoke the token it used"
        }
        (true, false) => {
            "a revoked PC's hostname tried to enroll again: refused (its key is already enrolled); revoke the token it used"
        }
    };
    tracing::warn!(
        agent_id = %r.agent_id,
        claimed_hostname = %r.claimed_hostname,
        revoked_agent_id = %r.revoked_agent_id,
        revoked_reason = %r.revoked_reason,
        hostname_matched = r.hostname_matched != 0,
        key_matched = r.key_matched != 0,
        token_id = %r.token_id,
        remote = %r.remote,
        return_id = %r.return_id,
        "{what}"
    );
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

    /// The key is already `owner`'s.
    fn known_key(owner: &str) -> Self {
        Self {
            status: Status::already_exists(format!(
                "this key is already enrolled (agent {owner}); a replayed or reused request is refused, make a new key"
            )),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> Attempt {
        Attempt {
            id: "9c1d0000-0000-4000-8000-000000000002".into(),
            at: 1_764_000_600,
            claimed_hostname: "LAB-PC-7".into(),
            token_id: "3f9a0c1d2e4b5a67".into(),
            remote: "198.18.0.7".into(),
            key_sha256: "ab".repeat(32),
        }
    }

    fn revoked(agent_id: &str, hostname_matched: u8, key_matched: u8) -> RevokedMatch {
        RevokedMatch {
            agent_id: agent_id.into(),
            hostname: "lab-pc-7".into(),
            revoked_at: 1_764_000_000,
            reason: "laptop stolen".into(),
            hostname_matched,
            key_matched,
        }
    }

    #[test]
    fn nothing_resembled_records_nothing() {
        assert!(returns(&attempt(), Some("x"), &[]).is_empty());
    }

    #[test]
    fn each_revoked_agent_resembled_is_one_row_with_the_whole_attempt() {
        let found = [revoked("a", 1, 0), revoked("b", 1, 1)];
        let rows = returns(&attempt(), Some(&attempt().id), &found);
        assert_eq!(rows.len(), 2);
        let first = &rows[0];
        assert_eq!(
            (
                first.revoked_agent_id.as_str(),
                first.revoked_hostname.as_str()
            ),
            ("a", "lab-pc-7")
        );
        assert_eq!(
            (first.revoked_at, first.revoked_reason.as_str()),
            (1_764_000_000, "laptop stolen")
        );
        assert_eq!((first.hostname_matched, first.key_matched), (1, 0));
        assert_eq!((rows[1].hostname_matched, rows[1].key_matched), (1, 1));
        assert_eq!(first.agent_id, attempt().id, "the new agent");
        assert_eq!(
            (
                first.at,
                first.claimed_hostname.as_str(),
                first.token_id.as_str(),
                first.remote.as_str(),
                first.key_sha256.as_str()
            ),
            (
                1_764_000_600,
                "LAB-PC-7",
                "3f9a0c1d2e4b5a67",
                "198.18.0.7",
                "ab".repeat(32).as_str()
            )
        );
        assert_ne!(rows[0].return_id, rows[1].return_id);
        assert_eq!(
            returns(&attempt(), Some(&attempt().id), &found)[0].return_id,
            first.return_id,
            "the same attempt and revoked agent give the same id"
        );
        let other = Attempt {
            id: "another attempt".into(),
            ..attempt()
        };
        assert_ne!(returns(&other, None, &found)[0].return_id, first.return_id);
    }

    #[test]
    fn a_refused_attempt_names_no_new_agent() {
        let rows = returns(&attempt(), None, &[revoked("a", 0, 1)]);
        assert_eq!(rows[0].agent_id, "", "refused: no agent was made");
        assert_eq!(rows[0].key_matched, 1);
    }
}

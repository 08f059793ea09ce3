//! Revoked agents: the list every collector keeps in memory, refreshed
//! from ClickHouse, and the TLS client verifier that refuses a revoked
//! agent's handshake.
//!
//! `agents revoke` writes to ClickHouse, so every collector instance sees a
//! revocation at its next refresh (`enrollment.revocation_check_seconds`)
//! and it survives restarts. Open streams of a revoked agent are ended by
//! their sessions, which watch [`Revocations::subscribe`].

use doorwatch_process::shutdown;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use doorwatch_store::Store;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::sync::watch;

use crate::trust::identity;

/// The revoked agent ids and why, shared by the TLS layer and sessions.
#[derive(Debug, Clone)]
pub struct Revocations {
    revoked: Arc<RwLock<HashMap<String, String>>>,
    generation: Arc<watch::Sender<u64>>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self {
            revoked: Arc::default(),
            generation: Arc::new(watch::channel(0).0),
        }
    }
}

impl Revocations {
    /// Why `agent_id` was revoked, if it was.
    pub fn reason(&self, agent_id: &str) -> Option<String> {
        let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        revoked.get(agent_id).cloned()
    }

    /// Replaces the list; returns the ids that are newly revoked.
    pub fn replace(&self, list: HashMap<String, String>) -> Vec<String> {
        let fresh: Vec<String> = {
            let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
            let fresh = list
                .keys()
                .filter(|id| !revoked.contains_key(*id))
                .cloned()
                .collect();
            *revoked = list;
            fresh
        };
        if !fresh.is_empty() {
            self.generation.send_modify(|g| *g += 1);
        }
        fresh
    }

    /// Changes whenever an agent is newly revoked.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// How many agent ids are revoked.
    pub fn len(&self) -> usize {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the list from ClickHouse once.
    pub async fn refresh(&self, store: &Store) -> Result<(), doorwatch_store::StoreError> {
        let rows = store.revocations().await?;
        let list = rows.into_iter().map(|r| (r.agent_id, r.reason)).collect();
        for agent_id in self.replace(list) {
            tracing::info!(agent_id = %agent_id, reason = ?self.reason(&agent_id), "agent revoked: refusing its connections");
        }
        Ok(())
    }
}

/// Refreshes `revocations` from ClickHouse every `every` until shutdown. A
/// failed read keeps the last list (revocations are never forgotten
/// because ClickHouse is briefly away).
pub async fn follow(
    store: Store,
    revocations: Revocations,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown::stop_requested(&mut shutdown) => return,
        }
        match revocations.refresh(&store).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("revocation list readable again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot read the revocation list; keeping the last one");
            }
            Err(_) => {}
        }
    }
}

/// Verifies client certificates with `inner` (the CA check), then refuses
/// those of revoked agents.
#[derive(Debug)]
pub struct RevocationCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revocations: Revocations,
}

impl RevocationCheckingVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, revocations: Revocations) -> Self {
        Self { inner, revocations }
    }
}

impl ClientCertVerifier for RevocationCheckingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        // A certificate without a usable agent id is refused later, with
        // its own reason; only revocation is decided here.
        if let Ok(agent) = identity::from_certificate(end_entity)
            && self.revocations.reason(&agent.agent_id).is_some()
        {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_reports_only_new_revocations_and_bumps_the_generation() {
        let revocations = Revocations::default();
        let watch = revocations.subscribe();
        let list = |ids: &[&str]| {
            ids.iter()
                .map(|id| ((*id).to_owned(), "stolen".to_owned()))
                .collect()
        };
        assert_eq!(revocations.replace(list(&["a"])), vec!["a".to_owned()]);
        assert_eq!(*watch.borrow(), 1);
        assert!(revocations.replace(list(&["a"])).is_empty());
        assert_eq!(*watch.borrow(), 1, "nothing new, no wake-up");
        assert_eq!(revocations.replace(list(&["a", "b"])), vec!["b".to_owned()]);
        assert_eq!(revocations.reason("b").as_deref(), Some("stolen"));
        assert_eq!(revocations.reason("c"), None);
    }
}

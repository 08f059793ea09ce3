//! The agents page: every PC with its health and revocation, and the
//! enrollment tokens with their state.

use std::collections::BTreeMap;

use super::summary::health_label;
use doorwatch_process::clock::unix_now_u32;
use doorwatch_store::{Health, Store, StoreError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub agent_id: String,
    pub hostname: String,
    pub group: String,
    pub version: String,
    pub status: &'static str,
    pub last_seen: u32,
    pub cert_not_after: u32,
    pub pending_events: u64,
    pub events_dropped: u64,
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenView {
    pub token_id: String,
    pub group: String,
    pub expires_at: u32,
    pub uses: u64,
    pub max_uses: u32,
    pub revoked: bool,
    /// Usable, revoked, expired or used up: the store's one rule.
    pub state: doorwatch_store::TokenState,
}

/// Pure: what the agents page shows of each token at `now`.
pub fn token_views(tokens: Vec<doorwatch_store::TokenUse>, now: u64) -> Vec<TokenView> {
    tokens
        .into_iter()
        .map(|t| TokenView {
            state: t.state(now),
            token_id: t.token.token_id,
            group: t.token.agent_group,
            expires_at: t.token.expires_at,
            uses: t.uses,
            max_uses: t.token.max_uses,
            revoked: t.token.revoked != 0,
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentsView {
    pub agents: Vec<AgentView>,
    pub tokens: Vec<TokenView>,
}

pub async fn agents(store: &Store) -> Result<AgentsView, StoreError> {
    let now = unix_now_u32();
    let health: BTreeMap<String, doorwatch_store::AgentHealthRow> = store
        .agent_health(0)
        .await?
        .into_iter()
        .map(|h| (h.agent_id.clone(), h))
        .collect();
    let revoked: std::collections::BTreeSet<String> = store
        .revocations()
        .await?
        .into_iter()
        .map(|r| r.agent_id)
        .collect();
    let mut agents: Vec<AgentView> = store
        .agents()
        .await?
        .into_iter()
        .map(|a| {
            let h = health.get(&a.agent_id);
            AgentView {
                revoked: revoked.contains(&a.agent_id),
                status: h.map_or("never seen", |h| {
                    health_label(Health::from_age(now.saturating_sub(h.last_seen)))
                }),
                last_seen: h.map_or(0, |h| h.last_seen),
                pending_events: h.map_or(0, |h| h.pending_events),
                events_dropped: h.map_or(0, |h| h.events_dropped),
                version: h.map_or(a.agent_version.clone(), |h| h.agent_version.clone()),
                agent_id: a.agent_id,
                hostname: a.hostname,
                group: a.agent_group,
                cert_not_after: a.cert_not_after,
            }
        })
        .collect();
    // Agents with certificates from the dev PKI (not enrolled) still send
    // heartbeats: list them too.
    for (id, h) in &health {
        if !agents.iter().any(|a| &a.agent_id == id) {
            agents.push(AgentView {
                agent_id: id.clone(),
                hostname: h.claimed_hostname.clone(),
                group: String::new(),
                version: h.agent_version.clone(),
                status: health_label(Health::from_age(now.saturating_sub(h.last_seen))),
                last_seen: h.last_seen,
                cert_not_after: 0,
                pending_events: h.pending_events,
                events_dropped: h.events_dropped,
                revoked: revoked.contains(id),
            });
        }
    }
    agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    let tokens = token_views(store.tokens().await?, u64::from(now));
    Ok(AgentsView { agents, tokens })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_and_used_up_tokens_are_not_shown_as_usable() {
        let token = |id: &str, expires_at: u32, uses: u64| doorwatch_store::TokenUse {
            token: doorwatch_store::TokenRow {
                token_id: id.into(),
                secret_sha256: String::new(),
                agent_group: "library".into(),
                created_at: 0,
                expires_at,
                max_uses: 10,
                revoked: 0,
                revoked_at: 0,
                changed_by: "ada".into(),
                version: 1,
            },
            uses,
        };
        let views = token_views(
            vec![
                token("fresh", 2_000, 3),
                token("old", 1_000, 3),
                token("full", 2_000, 10),
            ],
            1_500,
        );
        let labels: Vec<(&str, &str)> = views
            .iter()
            .map(|v| (v.token_id.as_str(), v.state.label()))
            .collect();
        assert_eq!(
            labels,
            [("fresh", "usable"), ("old", "expired"), ("full", "used up")]
        );
        assert!(views.iter().all(|v| !v.revoked));
    }
}

//! Enrollment records: bootstrap tokens (`enrollment_tokens`), enrolled
//! agents (`agents`), revocations (`agent_revocations`) and enrollments
//! that resembled a revoked agent (`revoked_returns`).
//!
//! Every collector reads and writes these tables, so a token created, an
//! agent enrolled or an agent revoked through one collector is seen by all
//! of them. Tokens and agents are ReplacingMergeTree tables whose newest
//! version wins; reads use FINAL so they are right before merges too.

use crate::StoreError;

/// One version of a bootstrap token. The secret itself is never stored.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct TokenRow {
    pub token_id: String,
    /// Lower-case hex SHA-256 of the token's secret part.
    pub secret_sha256: String,
    /// Group (site) label its agents inherit.
    pub agent_group: String,
    pub created_at: u32,
    pub expires_at: u32,
    pub max_uses: u32,
    /// 1 once revoked.
    pub revoked: u8,
    pub revoked_at: u32,
    /// Who created or last changed it (the OS user for the CLI).
    pub changed_by: String,
    /// Newest wins.
    pub version: u64,
}

/// A token with the number of agents enrolled with it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenUse {
    pub token: TokenRow,
    pub uses: u64,
}

/// Whether a token still enrolls PCs: the one rule that the enrollment
/// gate, `token list` and the console all apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// Enrolls PCs.
    Usable,
    /// Revoked by an admin (takes precedence over the others).
    Revoked,
    /// Past its expiry (takes precedence over used up).
    Expired,
    /// Has enrolled as many PCs as it may.
    UsedUp,
}

impl TokenState {
    /// The word people see: `usable`, `revoked`, `expired`, `used up`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Usable => "usable",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::UsedUp => "used up",
        }
    }
}

impl TokenUse {
    /// Pure: the token's state at `now` (Unix seconds). Expired means
    /// `now >= expires_at`.
    pub fn state(&self, now: u64) -> TokenState {
        if self.token.revoked != 0 {
            TokenState::Revoked
        } else if now >= u64::from(self.token.expires_at) {
            TokenState::Expired
        } else if self.uses >= u64::from(self.token.max_uses) {
            TokenState::UsedUp
        } else {
            TokenState::Usable
        }
    }
}

/// One version of an enrolled agent: written at enrollment and at each
/// renewal.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct AgentRow {
    pub agent_id: String,
    /// What the PC said about itself; for people, never for attribution.
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub agent_group: String,
    /// The token it enrolled with.
    pub token_id: String,
    pub enrolled_at: u32,
    /// Hex serial of its newest certificate.
    pub cert_serial: String,
    pub cert_not_after: u32,
    /// Hex SHA-256 of the newest certificate's public key (its
    /// SubjectPublicKeyInfo, DER): the key's fingerprint.
    pub key_sha256: String,
    /// Address the enrollment or renewal came from.
    pub remote: String,
    /// Newest wins.
    pub version: u64,
}

/// A revocation of an agent id.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct RevocationRow {
    pub agent_id: String,
    pub revoked_at: u32,
    pub reason: String,
    pub revoked_by: String,
}

/// A revoked agent that an enrolling PC resembles (see
/// [`crate::Store::revoked_matching`]).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize)]
pub struct RevokedMatch {
    pub agent_id: String,
    /// The hostname in its current record.
    pub hostname: String,
    /// Its first revocation.
    pub revoked_at: u32,
    pub reason: String,
    /// 1 when the PC claims this hostname.
    pub hostname_matched: u8,
    /// 1 when the PC presents this agent's key.
    pub key_matched: u8,
}

/// An enrollment that resembled a revoked agent: what an admin needs to
/// decide whether a stolen PC came back. PC-claimed text is stored as
/// the collector made it safe.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
pub struct RevokedReturnRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub return_id: uuid::Uuid,
    /// When the enrollment was attempted.
    pub at: u32,
    pub revoked_agent_id: String,
    pub revoked_hostname: String,
    pub revoked_at: u32,
    pub revoked_reason: String,
    /// 1 when the PC claimed the revoked agent's hostname.
    pub hostname_matched: u8,
    /// 1 when the PC presented the revoked agent's key.
    pub key_matched: u8,
    /// The new agent; empty when the enrollment was refused.
    pub agent_id: String,
    pub claimed_hostname: String,
    /// The bootstrap token it enrolled (or tried to) with.
    pub token_id: String,
    /// The address it came from.
    pub remote: String,
    /// Fingerprint of the key it presented.
    pub key_sha256: String,
}

pub(crate) async fn insert_token(
    client: &clickhouse::Client,
    row: &TokenRow,
) -> Result<(), StoreError> {
    crate::insert_all(client, "enrollment_tokens", std::slice::from_ref(row)).await
}

pub(crate) async fn token(
    client: &clickhouse::Client,
    token_id: &str,
) -> Result<Option<TokenUse>, StoreError> {
    let Some(token) = client
        .query("SELECT ?fields FROM enrollment_tokens FINAL WHERE token_id = ?")
        .bind(token_id)
        .fetch_optional::<TokenRow>()
        .await
        .map_err(StoreError::query("select token"))?
    else {
        return Ok(None);
    };
    let uses: u64 = client
        .query("SELECT uniqExact(agent_id) FROM agents WHERE token_id = ?")
        .bind(token_id)
        .fetch_one()
        .await
        .map_err(StoreError::query("count token uses"))?;
    Ok(Some(TokenUse { token, uses }))
}

pub(crate) async fn tokens(client: &clickhouse::Client) -> Result<Vec<TokenUse>, StoreError> {
    let tokens = client
        .query("SELECT ?fields FROM enrollment_tokens FINAL ORDER BY created_at")
        .fetch_all::<TokenRow>()
        .await
        .map_err(StoreError::query("select tokens"))?;
    let counts: Vec<(String, u64)> = client
        .query("SELECT token_id, uniqExact(agent_id) FROM agents GROUP BY token_id")
        .fetch_all()
        .await
        .map_err(StoreError::query("count token uses"))?;
    let counts: std::collections::HashMap<String, u64> = counts.into_iter().collect();
    Ok(tokens
        .into_iter()
        .map(|token| {
            let uses = counts.get(&token.token_id).copied().unwrap_or(0);
            TokenUse { token, uses }
        })
        .collect())
}

pub(crate) async fn insert_agent(
    client: &clickhouse::Client,
    row: &AgentRow,
) -> Result<(), StoreError> {
    crate::insert_all(client, "agents", std::slice::from_ref(row)).await
}

pub(crate) async fn agent(
    client: &clickhouse::Client,
    agent_id: &str,
) -> Result<Option<AgentRow>, StoreError> {
    client
        .query("SELECT ?fields FROM agents FINAL WHERE agent_id = ?")
        .bind(agent_id)
        .fetch_optional::<AgentRow>()
        .await
        .map_err(StoreError::query("select agent"))
}

pub(crate) async fn agent_with_key(
    client: &clickhouse::Client,
    key_sha256: &str,
) -> Result<Option<String>, StoreError> {
    client
        .query("SELECT agent_id FROM agents WHERE key_sha256 = ? LIMIT 1")
        .bind(key_sha256)
        .fetch_optional::<String>()
        .await
        .map_err(StoreError::query("select agent by key"))
}

pub(crate) async fn agents(client: &clickhouse::Client) -> Result<Vec<AgentRow>, StoreError> {
    client
        .query("SELECT ?fields FROM agents FINAL ORDER BY enrolled_at, agent_id")
        .fetch_all::<AgentRow>()
        .await
        .map_err(StoreError::query("select agents"))
}

pub(crate) async fn insert_revocation(
    client: &clickhouse::Client,
    row: &RevocationRow,
) -> Result<(), StoreError> {
    crate::insert_all(client, "agent_revocations", std::slice::from_ref(row)).await
}

pub(crate) async fn revocations(
    client: &clickhouse::Client,
) -> Result<Vec<RevocationRow>, StoreError> {
    client
        .query(
            "SELECT agent_id, first_at AS revoked_at, first_reason AS reason, first_by AS revoked_by \
             FROM (SELECT agent_id, min(revoked_at) AS first_at, \
                          argMin(reason, revoked_at) AS first_reason, \
                          argMin(revoked_by, revoked_at) AS first_by \
                   FROM agent_revocations GROUP BY agent_id) \
             ORDER BY agent_id",
        )
        .fetch_all::<RevocationRow>()
        .await
        .map_err(StoreError::query("select revocations"))
}

pub(crate) async fn revoked_matching(
    client: &clickhouse::Client,
    hostname: &str,
    key_sha256: &str,
    limit: u64,
) -> Result<Vec<RevokedMatch>, StoreError> {
    // Only revoked agents' rows are read (both tables are ordered by
    // agent_id). The newest version of each is its current record
    // (argMax, not FINAL, so a filter never sees an older version).
    // `lower` folds ASCII only, as the rule says. No alias reuses a
    // column's name: ClickHouse would put the alias inside the aggregate.
    client
        .query(
            "SELECT agent_id, newest_hostname AS hostname, first_at AS revoked_at, \
                    first_reason AS reason, hostname_matched, key_matched \
             FROM ( \
                 SELECT agent_id, newest_hostname, \
                        (newest_hostname != '' AND lower(newest_hostname) = lower(?)) \
                            AS hostname_matched, \
                        (newest_key != '' AND newest_key = ?) AS key_matched \
                 FROM (SELECT agent_id, argMax(hostname, version) AS newest_hostname, \
                              argMax(key_sha256, version) AS newest_key \
                       FROM agents \
                       WHERE agent_id IN (SELECT agent_id FROM agent_revocations) \
                       GROUP BY agent_id) \
                 WHERE hostname_matched OR key_matched) AS resembled \
             ANY INNER JOIN \
                 (SELECT agent_id, min(revoked_at) AS first_at, \
                         argMin(reason, revoked_at) AS first_reason \
                  FROM agent_revocations GROUP BY agent_id) AS revoked \
             USING agent_id \
             ORDER BY revoked_at DESC, agent_id LIMIT ?",
        )
        .bind(hostname)
        .bind(key_sha256)
        .bind(limit)
        .fetch_all::<RevokedMatch>()
        .await
        .map_err(StoreError::query(
            "select revoked agents like an enrollment",
        ))
}

pub(crate) async fn insert_revoked_returns(
    client: &clickhouse::Client,
    rows: &[RevokedReturnRow],
) -> Result<(), StoreError> {
    crate::insert_all(client, "revoked_returns", rows).await
}

pub(crate) async fn revoked_returns(
    client: &clickhouse::Client,
    since_unix: u32,
) -> Result<Vec<RevokedReturnRow>, StoreError> {
    client
        .query(
            "SELECT ?fields FROM revoked_returns FINAL \
             WHERE at >= toDateTime(?) ORDER BY at, return_id",
        )
        .bind(since_unix)
        .fetch_all::<RevokedReturnRow>()
        .await
        .map_err(StoreError::query("select revoked returns"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(revoked: u8, expires_at: u32, max_uses: u32, uses: u64) -> TokenUse {
        TokenUse {
            token: TokenRow {
                token_id: "t".into(),
                secret_sha256: String::new(),
                agent_group: "library".into(),
                created_at: 0,
                expires_at,
                max_uses,
                revoked,
                revoked_at: 0,
                changed_by: "ada".into(),
                version: 1,
            },
            uses,
        }
    }

    #[test]
    fn revoked_wins_then_expired_then_used_up() {
        assert_eq!(token(0, 100, 2, 1).state(99), TokenState::Usable);
        assert_eq!(token(0, 100, 2, 1).state(100), TokenState::Expired);
        assert_eq!(token(0, 100, 2, 2).state(99), TokenState::UsedUp);
        assert_eq!(token(0, 100, 2, 2).state(100), TokenState::Expired);
        assert_eq!(token(1, 100, 2, 2).state(100), TokenState::Revoked);
        assert_eq!(TokenState::UsedUp.label(), "used up");
    }
}

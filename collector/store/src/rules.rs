//! The domain rules that the collector's CLI and the console both apply,
//! in one place so they cannot disagree: what an agent id and a group name
//! may be, how a bootstrap token is made and revoked, and how an agent is
//! revoked. Token *state* is [`crate::TokenUse::state`].
//!
//! Pure: the clock and the caller's name come in as arguments; writing the
//! rows is the caller's job.

use crate::{RevocationRow, Token, TokenRow};

/// The group every agent is in until enrollment puts it in another.
pub const DEFAULT_GROUP: &str = "default";
/// Longest agent id or group name (both are stored in every row).
pub const MAX_NAME_LEN: usize = 128;
/// Longest revocation reason kept.
pub const MAX_REASON_LEN: usize = 500;

/// Whether `name` is an acceptable agent id or group name: 1 to 128
/// characters of `[A-Za-z0-9._-]`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A change the rules refuse, in words for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    #[error("{what} {value:?}: use 1 to 128 of A-Z a-z 0-9 . _ -")]
    BadName { what: &'static str, value: String },
    #[error("a token must enroll at least one PC")]
    NoUses,
    #[error("a token must expire after it is made")]
    AlreadyExpired,
    #[error(
        "a revocation needs a reason (at most {MAX_REASON_LEN} characters, no control characters)"
    )]
    BadReason,
    #[error("the system's random number source failed")]
    NoRandomness,
}

/// A new bootstrap token for `group`, valid until `expires_at` for at most
/// `max_uses` PCs, made by `by` at `now` (Unix seconds). Returns the token
/// (shown once) and the row to store (only a hash of the secret).
pub fn new_token(
    group: &str,
    expires_at: u32,
    max_uses: u32,
    by: &str,
    now: u32,
) -> Result<(Token, TokenRow), RuleError> {
    if !is_valid_name(group) {
        return Err(RuleError::BadName {
            what: "group",
            value: group.to_owned(),
        });
    }
    if max_uses == 0 {
        return Err(RuleError::NoUses);
    }
    if expires_at <= now {
        return Err(RuleError::AlreadyExpired);
    }
    let token = Token::generate().map_err(|_| RuleError::NoRandomness)?;
    let row = TokenRow {
        token_id: token.id.clone(),
        secret_sha256: token.secret_sha256(),
        agent_group: group.to_owned(),
        created_at: now,
        expires_at,
        max_uses,
        revoked: 0,
        revoked_at: 0,
        changed_by: by.to_owned(),
        version: 1,
    };
    Ok((token, row))
}

/// The next version of `row`, revoked by `by` at `now`.
pub fn revoke_token(mut row: TokenRow, by: &str, now: u32) -> TokenRow {
    row.revoked = 1;
    row.revoked_at = now;
    row.changed_by = by.to_owned();
    row.version += 1;
    row
}

/// A revocation of agent `agent_id` by `by` at `now`, for `reason`.
pub fn new_revocation(
    agent_id: &str,
    reason: &str,
    by: &str,
    now: u32,
) -> Result<RevocationRow, RuleError> {
    if !is_valid_name(agent_id) {
        return Err(RuleError::BadName {
            what: "agent id",
            value: agent_id.chars().take(MAX_NAME_LEN + 1).collect(),
        });
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > MAX_REASON_LEN || reason.chars().any(char::is_control) {
        return Err(RuleError::BadReason);
    }
    Ok(RevocationRow {
        agent_id: agent_id.to_owned(),
        revoked_at: now,
        reason: reason.to_owned(),
        revoked_by: by.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        assert!(is_valid_name("library-3.pc_17"));
        for bad in ["", "a b", "ü", "x/y", &"a".repeat(129)] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        assert!(is_valid_name(&"a".repeat(128)));
    }

    #[test]
    fn tokens_need_a_group_a_use_and_a_future() {
        let (token, row) = new_token("library", 200, 5, "ada", 100).expect("valid");
        assert_eq!(row.token_id, token.id);
        assert!(token.matches(&row.secret_sha256));
        assert_eq!((row.created_at, row.version, row.revoked), (100, 1, 0));
        assert!(matches!(
            new_token("bad group", 200, 5, "ada", 100),
            Err(RuleError::BadName { .. })
        ));
        assert_eq!(
            new_token("library", 200, 0, "ada", 100).err(),
            Some(RuleError::NoUses)
        );
        assert_eq!(
            new_token("library", 100, 5, "ada", 100).err(),
            Some(RuleError::AlreadyExpired)
        );
        let revoked = revoke_token(row, "bob", 150);
        assert_eq!(
            (revoked.revoked, revoked.revoked_at, revoked.version),
            (1, 150, 2)
        );
        assert_eq!(revoked.changed_by, "bob");
    }

    #[test]
    fn revocations_need_a_real_agent_id_and_a_reason() {
        let row = new_revocation("pc-1", "  laptop stolen ", "ada", 5).expect("valid");
        assert_eq!(row.reason, "laptop stolen");
        assert!(new_revocation("pc 1", "x", "ada", 5).is_err());
        assert_eq!(
            new_revocation("pc-1", "  ", "ada", 5).err(),
            Some(RuleError::BadReason)
        );
        assert_eq!(
            new_revocation("pc-1", "a\u{1b}[2J", "ada", 5).err(),
            Some(RuleError::BadReason)
        );
    }
}

//! Who is asking and what they may do: roles, server-side sessions,
//! pending sign-ins, CSRF tokens, the local admin's password check, API
//! bearer tokens and the sign-in rate limit.
//!
//! Sessions and pending sign-ins live in this process's memory only; the
//! browser holds a random id in an `HttpOnly` cookie. A console restart
//! signs everybody out, which is the safe direction.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use rand::RngCore;

/// What a user may do. Ordered: each role may do what the ones below may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything but the audit log and agent administration.
    Viewer,
    /// Also triage campaigns.
    Analyst,
    /// Also manage agents and tokens, and read the audit log.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "viewer" => Self::Viewer,
            "analyst" => Self::Analyst,
            "admin" => Self::Admin,
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Analyst => "analyst",
            Self::Admin => "admin",
        }
    }
}

/// A signed-in user (or an API token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Shown in the page and written to the audit log: the IdP's name or
    /// subject, "local:NAME" or "token:NAME".
    pub name: String,
    pub role: Role,
}

/// One browser's session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    /// Sent back with every form; a POST without it is refused.
    pub csrf: String,
    /// The IdP's ID token, for its logout endpoint (`id_token_hint`).
    pub id_token: Option<String>,
    created: u64,
    last_used: u64,
}

/// A sign-in started at the IdP and not finished yet, found again by the
/// `state` the IdP sends back.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub pkce_verifier: String,
    pub nonce: String,
    /// The browser that started it (a random id in a cookie): a callback
    /// from another browser is refused, so nobody can sign a victim into
    /// the attacker's account.
    pub browser: String,
    /// Where to go after signing in (a path on this console).
    pub return_to: String,
    created: u64,
}

/// How long a sign-in may take at the IdP.
const PENDING_SECS: u64 = 600;
/// Most sessions and pending sign-ins kept; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
const MAX_PENDING: usize = 10_000;

/// Sessions and pending sign-ins.
#[derive(Debug)]
pub struct Sessions {
    idle_secs: u64,
    max_secs: u64,
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, PendingLogin>>,
}

/// 32 random bytes as hex: session ids, CSRF tokens, browser ids.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub fn new(idle_secs: u64, max_secs: u64) -> Self {
        Self {
            idle_secs,
            max_secs,
            sessions: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session for `user`; returns its id (the cookie value).
    pub fn create(&self, user: User, id_token: Option<String>, now: u64) -> String {
        let id = random_token();
        let mut sessions = lock(&self.sessions);
        self.expire(&mut sessions, now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                user,
                csrf: random_token(),
                id_token,
                created: now,
                last_used: now,
            },
        );
        id
    }

    /// The live session `id`, touched.
    pub fn get(&self, id: &str, now: u64) -> Option<Session> {
        let mut sessions = lock(&self.sessions);
        let live = sessions.get(id).is_some_and(|s| self.is_live(s, now));
        if !live {
            sessions.remove(id);
            return None;
        }
        let session = sessions.get_mut(id)?;
        session.last_used = now;
        Some(session.clone())
    }

    /// Ends session `id`, returning it.
    pub fn remove(&self, id: &str) -> Option<Session> {
        lock(&self.sessions).remove(id)
    }

    fn is_live(&self, s: &Session, now: u64) -> bool {
        now.saturating_sub(s.last_used) < self.idle_secs
            && now.saturating_sub(s.created) < self.max_secs
    }

    fn expire(&self, sessions: &mut HashMap<String, Session>, now: u64) {
        sessions.retain(|_, s| self.is_live(s, now));
    }

    /// Remembers a sign-in under its `state`.
    pub fn add_pending(&self, state: String, login: PendingLogin) {
        let mut pending = lock(&self.pending);
        let now = login.created;
        pending.retain(|_, p| now.saturating_sub(p.created) < PENDING_SECS);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(state, login);
    }

    /// Takes the sign-in started with `state`, once: a replayed callback
    /// finds nothing.
    pub fn take_pending(&self, state: &str, now: u64) -> Option<PendingLogin> {
        let login = lock(&self.pending).remove(state)?;
        (now.saturating_sub(login.created) < PENDING_SECS).then_some(login)
    }
}

impl PendingLogin {
    pub fn new(
        pkce_verifier: String,
        nonce: String,
        browser: String,
        return_to: String,
        now: u64,
    ) -> Self {
        Self {
            pkce_verifier,
            nonce,
            browser,
            return_to,
            created: now,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; go on.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Compares two secrets without leaking where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// Compares two byte strings in time that depends only on their length.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `password` matches the argon2 PHC `hash`.
pub fn password_matches(hash: &str, password: &str) -> bool {
    use argon2::PasswordVerifier;
    match argon2::PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// An argon2id PHC string for `password`, for the config file.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::PasswordHasher;
    use argon2::password_hash::SaltString;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// SHA-256 of an API token, as configured.
pub fn token_digest(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Local sign-in attempts allowed per window, per address and per user
/// name.
const ATTEMPTS: usize = 5;
const WINDOW_SECS: u64 = 300;
/// Addresses and names tracked at once.
const MAX_TRACKED: usize = 10_000;

/// Limits password guessing at the local admin login: 5 failures per
/// 5 minutes from one address or against one name, then refusals until
/// the window passes.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<u64>>>,
}

impl LoginLimiter {
    /// Whether a new attempt from `ip` for `username` may go ahead.
    pub fn allowed(&self, ip: IpAddr, username: &str, now: u64) -> bool {
        let mut failures = lock(&self.failures);
        [format!("ip:{ip}"), format!("user:{username}")]
            .iter()
            .all(|key| {
                let recent = failures.entry(key.clone()).or_default();
                recent.retain(|&t| now.saturating_sub(t) < WINDOW_SECS);
                recent.len() < ATTEMPTS
            })
    }

    /// Counts a failed attempt.
    pub fn failed(&self, ip: IpAddr, username: &str, now: u64) {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, times| times.iter().any(|&t| now.saturating_sub(t) < WINDOW_SECS));
        }
        for key in [format!("ip:{ip}"), format!("user:{username}")] {
            failures.entry(key).or_default().push(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User {
            name: "alice".into(),
            role: Role::Analyst,
        }
    }

    #[test]
    fn sessions_expire_when_idle_and_at_their_maximum() {
        let s = Sessions::new(60, 3600);
        let id = s.create(alice(), None, 1000);
        assert!(s.get(&id, 1059).is_some());
        assert!(s.get(&id, 1118).is_some(), "use keeps it alive");
        assert!(s.get(&id, 1200).is_none(), "idle too long");
        let id = s.create(alice(), None, 2000);
        for t in (2050..5600).step_by(50) {
            assert!(s.get(&id, t).is_some(), "{t}");
        }
        assert!(s.get(&id, 5650).is_none(), "past the maximum");
        assert!(s.get("forged", 2000).is_none());
    }

    #[test]
    fn a_pending_login_is_taken_once() {
        let s = Sessions::new(60, 3600);
        s.add_pending(
            "st".into(),
            PendingLogin::new("v".into(), "n".into(), "b".into(), "/".into(), 100),
        );
        assert!(s.take_pending("other", 101).is_none());
        assert_eq!(s.take_pending("st", 101).map(|p| p.nonce), Some("n".into()));
        assert!(s.take_pending("st", 102).is_none(), "replay");
        s.add_pending(
            "old".into(),
            PendingLogin::new("v".into(), "n".into(), "b".into(), "/".into(), 100),
        );
        assert!(
            s.take_pending("old", 100 + PENDING_SECS).is_none(),
            "expired"
        );
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(password_matches(&hash, "correct horse"));
        assert!(!password_matches(&hash, "wrong"));
        assert!(!password_matches("garbage", "correct horse"));
    }

    #[test]
    fn the_limiter_stops_guessing_per_address_and_per_name() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "127.0.0.1".parse().expect("literal");
        let other: IpAddr = "127.0.0.2".parse().expect("literal");
        for _ in 0..ATTEMPTS {
            assert!(l.allowed(ip, "admin", 10));
            l.failed(ip, "admin", 10);
        }
        assert!(!l.allowed(ip, "admin", 11));
        assert!(!l.allowed(ip, "someone", 11), "same address");
        assert!(!l.allowed(other, "admin", 11), "same name");
        assert!(l.allowed(other, "someone", 11));
        assert!(l.allowed(ip, "admin", 10 + WINDOW_SECS));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}

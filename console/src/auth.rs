//! Who is asking and what they may do: roles, server-side sessions,
//! pending sign-ins, CSRF tokens, the local admin's password check, API
//! bearer tokens and the sign-in rate limit.
//!
//! Sessions and pending sign-ins live in this process's memory only; the
//! browser holds a random id in an `HttpOnly` cookie. A console restart
//! signs everybody out, which is the safe direction.

use doorwatch_process::secret::Secret;
use doorwatch_tls::serve::AddressKey;
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
    pub csrf: Secret,
    /// The IdP's ID token, for its logout endpoint (`id_token_hint`).
    pub id_token: Option<Secret>,
    created: u64,
    last_used: u64,
}

/// A sign-in started at the IdP and not finished yet, found again by the
/// `state` the IdP sends back.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub pkce_verifier: Secret,
    pub nonce: Secret,
    /// The browser that started it (a random id in a cookie): a callback
    /// from another browser is refused, so nobody can sign a victim into
    /// the attacker's account.
    pub browser: Secret,
    /// The address (key) that started it; set when it is added.
    from: Option<AddressKey>,
    /// Where to go after signing in (a path on this console).
    pub return_to: String,
    created: u64,
}

/// How long a sign-in may take at the IdP.
const PENDING_SECS: u64 = 600;
/// Most sessions and pending sign-ins kept; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
const MAX_PENDING: usize = 10_000;
/// Sign-ins in progress from one address.
const MAX_PENDING_PER_ADDRESS: usize = 16;

/// Too many sign-ins are in progress; try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingFull;

/// Sessions and pending sign-ins.
pub struct Sessions {
    idle_secs: u64,
    max_secs: u64,
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, PendingLogin>>,
}

/// Counts only: the keys are session ids and sign-in states.
impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("sessions", &lock(&self.sessions).len())
            .field("pending", &lock(&self.pending).len())
            .finish_non_exhaustive()
    }
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
    pub fn create(&self, user: User, id_token: Option<Secret>, now: u64) -> String {
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
                csrf: random_token().into(),
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

    /// Remembers a sign-in under its `state`. One address (one IPv6 /64)
    /// holds at most [`MAX_PENDING_PER_ADDRESS`]: its oldest goes first.
    /// Other users' sign-ins are never pushed out; when the whole table
    /// is full, the start is refused.
    pub fn add_pending(
        &self,
        state: String,
        from: IpAddr,
        mut login: PendingLogin,
    ) -> Result<(), PendingFull> {
        let mut pending = lock(&self.pending);
        let now = login.created;
        pending.retain(|_, p| now.saturating_sub(p.created) < PENDING_SECS);
        login.from = Some(AddressKey::of(from));
        let mut mine: Vec<(u64, String)> = pending
            .iter()
            .filter(|(_, p)| p.from == login.from)
            .map(|(state, p)| (p.created, state.clone()))
            .collect();
        if mine.len() >= MAX_PENDING_PER_ADDRESS {
            mine.sort();
            if let Some((_, oldest)) = mine.first() {
                pending.remove(oldest);
            }
        } else if pending.len() >= MAX_PENDING {
            return Err(PendingFull);
        }
        pending.insert(state, login);
        Ok(())
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
        pkce_verifier: Secret,
        nonce: Secret,
        browser: Secret,
        return_to: String,
        now: u64,
    ) -> Self {
        Self {
            pkce_verifier,
            nonce,
            browser,
            from: None,
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

/// Local sign-in attempts allowed per window from one address (one IPv6
/// /64), failed or still being checked.
const ATTEMPTS: usize = 5;
const WINDOW_SECS: u64 = 300;
/// Failures against one name (from every address) after which attempts
/// at that name are paced, one per [`NAME_PACE_SECS`]: guessing slows to
/// a crawl, but nobody can lock the admin out by typing their name.
const NAME_FAILURES_BEFORE_PACING: usize = 5;
const NAME_PACE_SECS: u64 = 10;
/// Addresses and names tracked at once.
const MAX_TRACKED: usize = 10_000;
/// The characters of a typed name the limiter keys on.
const MAX_NAME_KEY: usize = 64;

/// Limits password guessing at the local admin login. An attempt is
/// counted when it begins, before the password hash is checked, so
/// concurrent attempts cannot slip past the limit: [`LoginLimiter::begin`]
/// reserves it, and only [`LoginAttempt::succeeded`] takes it back.
#[derive(Debug)]
pub struct LoginLimiter {
    state: Mutex<LimiterState>,
    /// Password checks running at once: each argon2 check takes tens of
    /// milliseconds of CPU and 19 MiB, off the async workers.
    checks: tokio::sync::Semaphore,
}

/// Password checks at once.
const CONCURRENT_CHECKS: usize = 2;

impl Default for LoginLimiter {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
        }
    }
}

#[derive(Debug, Default)]
struct LimiterState {
    /// Attempts (failed or in progress) per address, by time.
    by_address: HashMap<AddressKey, Vec<u64>>,
    /// Failures per name, by time, and when the name was last tried.
    by_name: HashMap<String, (Vec<u64>, u64)>,
}

/// Why an attempt may not go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address used its attempts for the window.
    Address,
    /// The name is being guessed at: one attempt per few seconds.
    NamePaced,
}

/// One sign-in attempt, counted against its address from the start.
#[derive(Debug)]
pub struct LoginAttempt<'a> {
    limiter: &'a LoginLimiter,
    address: AddressKey,
    name: String,
    at: u64,
    settled: bool,
}

impl LoginLimiter {
    /// Whether `password` matches the PHC string `hash`, checked on a
    /// blocking thread, a few at a time.
    pub async fn check_password(&self, hash: &str, password: &str) -> bool {
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        let (hash, password) = (hash.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || password_matches(&hash, &password))
            .await
            .unwrap_or(false)
    }

    /// Begins an attempt from `ip` at `username`, or says why not.
    pub fn begin(&self, ip: IpAddr, username: &str, now: u64) -> Result<LoginAttempt<'_>, Refusal> {
        let mut state = lock(&self.state);
        if state.by_address.len() + state.by_name.len() >= MAX_TRACKED {
            let recent = |t: &u64| now.saturating_sub(*t) < WINDOW_SECS;
            state.by_address.retain(|_, times| times.iter().any(recent));
            state
                .by_name
                .retain(|_, (times, _)| times.iter().any(recent));
            if state.by_address.len() + state.by_name.len() >= MAX_TRACKED {
                // Guessing from everywhere at once: fail closed.
                return Err(Refusal::Address);
            }
        }
        let address = AddressKey::of(ip);
        let attempts = state.by_address.entry(address).or_default();
        attempts.retain(|&t| now.saturating_sub(t) < WINDOW_SECS);
        if attempts.len() >= ATTEMPTS {
            return Err(Refusal::Address);
        }
        let username: String = username.chars().take(MAX_NAME_KEY).collect();
        let (failures, last_try) = state.by_name.entry(username.clone()).or_default();
        failures.retain(|&t| now.saturating_sub(t) < WINDOW_SECS);
        if failures.len() >= NAME_FAILURES_BEFORE_PACING
            && now.saturating_sub(*last_try) < NAME_PACE_SECS
        {
            return Err(Refusal::NamePaced);
        }
        *last_try = now;
        state.by_address.entry(address).or_default().push(now);
        Ok(LoginAttempt {
            limiter: self,
            address,
            name: username,
            at: now,
            settled: false,
        })
    }
}

impl LoginAttempt<'_> {
    /// The password was right: the attempt no longer counts.
    pub fn succeeded(mut self) {
        self.settled = true;
        let mut state = lock(&self.limiter.state);
        if let Some(times) = state.by_address.get_mut(&self.address)
            && let Some(at) = times.iter().position(|&t| t == self.at)
        {
            times.remove(at);
        }
    }
}

impl Drop for LoginAttempt<'_> {
    /// An attempt that did not succeed (a wrong password, or one dropped
    /// half-way) stays counted against its address and counts against
    /// its name.
    fn drop(&mut self) {
        if !self.settled {
            let mut state = lock(&self.limiter.state);
            state
                .by_name
                .entry(self.name.clone())
                .or_default()
                .0
                .push(self.at);
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
    fn debug_output_shows_no_session_id_token_or_nonce() {
        let s = Sessions::new(60, 3600);
        let id = s.create(alice(), Some("id-token-value".into()), 1000);
        let pending = PendingLogin::new(
            "verifier-value".into(),
            "nonce-value".into(),
            "browser-value".into(),
            "/".into(),
            1000,
        );
        let text = format!("{pending:?}");
        s.add_pending(
            "state-value".into(),
            "198.18.0.1".parse().expect("ip"),
            pending,
        )
        .expect("room");
        let session = s.get(&id, 1001).expect("live");
        let text = format!("{text} {s:?} {session:?}");
        for secret in [
            id.as_str(),
            session.csrf.expose(),
            "id-token-value",
            "verifier-value",
            "nonce-value",
            "browser-value",
            "state-value",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
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
        let ip: IpAddr = "198.18.0.1".parse().expect("literal");
        s.add_pending(
            "st".into(),
            ip,
            PendingLogin::new("v".into(), "n".into(), "b".into(), "/".into(), 100),
        )
        .expect("room");
        assert!(s.take_pending("other", 101).is_none());
        assert_eq!(s.take_pending("st", 101).map(|p| p.nonce), Some("n".into()));
        assert!(s.take_pending("st", 102).is_none(), "replay");
        s.add_pending(
            "old".into(),
            ip,
            PendingLogin::new("v".into(), "n".into(), "b".into(), "/".into(), 100),
        )
        .expect("room");
        assert!(
            s.take_pending("old", 100 + PENDING_SECS).is_none(),
            "expired"
        );
    }

    #[test]
    fn one_address_cannot_push_out_other_sign_ins() {
        let s = Sessions::new(60, 3600);
        let login = || PendingLogin::new("v".into(), "n".into(), "b".into(), "/".into(), 100);
        let victim: IpAddr = "198.18.0.1".parse().expect("literal");
        s.add_pending("victim".into(), victim, login())
            .expect("room");
        let attacker: IpAddr = "198.18.0.66".parse().expect("literal");
        for i in 0..1000 {
            s.add_pending(format!("a{i}"), attacker, login())
                .expect("its own oldest go");
        }
        assert!(
            s.take_pending("victim", 101).is_some(),
            "the victim's sign-in survives"
        );
        assert_eq!(lock(&s.pending).len(), MAX_PENDING_PER_ADDRESS);
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
    fn the_limiter_stops_guessing_per_address_and_paces_it_per_name() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "198.18.0.1".parse().expect("literal");
        for _ in 0..ATTEMPTS {
            drop(l.begin(ip, "admin", 10).expect("allowed"));
        }
        assert_eq!(l.begin(ip, "admin", 11).err(), Some(Refusal::Address));
        assert_eq!(
            l.begin(ip, "someone", 11).err(),
            Some(Refusal::Address),
            "same address"
        );
        // The name was failed 5 times: guesses at it are paced, not locked.
        let other: IpAddr = "198.18.0.2".parse().expect("literal");
        assert_eq!(l.begin(other, "admin", 11).err(), Some(Refusal::NamePaced));
        let admin = l
            .begin(other, "admin", 10 + NAME_PACE_SECS)
            .expect("paced, not locked out");
        admin.succeeded();
        assert!(l.begin(other, "someone", 21).is_ok());
        assert!(
            l.begin(ip, "admin", 10 + WINDOW_SECS).is_ok(),
            "the window passed"
        );
    }

    #[test]
    fn concurrent_attempts_count_before_the_password_is_checked() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "198.18.0.1".parse().expect("literal");
        // Attempts in flight at once, none settled yet.
        let in_flight: Vec<_> = (0..ATTEMPTS)
            .map(|_| l.begin(ip, "admin", 10).expect("allowed"))
            .collect();
        assert_eq!(l.begin(ip, "admin", 10).err(), Some(Refusal::Address));
        for attempt in in_flight {
            attempt.succeeded();
        }
        assert!(
            l.begin(ip, "admin", 10).is_ok(),
            "successes give their place back"
        );
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64() {
        let l = LoginLimiter::default();
        for i in 0..ATTEMPTS {
            let ip: IpAddr = format!("fd00:d00::{:x}", i + 1).parse().expect("literal");
            drop(l.begin(ip, "admin", 10).expect("allowed"));
        }
        let next: IpAddr = "fd00:d00::ff".parse().expect("literal");
        assert_eq!(l.begin(next, "x", 10).err(), Some(Refusal::Address));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}

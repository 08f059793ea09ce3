//! What an alert about a revoked PC's return says: which revoked agent the
//! enrollment resembled and how (its claimed hostname, its key), the new
//! agent or the refusal, the token, the address, and what to do. Pure
//! text from a stored [`RevokedReturnRow`]; the channels carry it like
//! any other alert.
//!
//! PC-claimed hostnames (and the reason an admin typed) pass through
//! `doorwatch_process::text::printable` again here, so no channel ever
//! gets a line break, an escape sequence or a bidirectional control from
//! them, whatever an older row holds.

use doorwatch_process::clock;
use doorwatch_process::text::printable;
use doorwatch_store::RevokedReturnRow;

/// Severity of every return alert: high. Someone holds a revoked PC's
/// token, key or name.
pub const SEVERITY: u8 = 3;

/// The alert's name (CEF name, start of the subject line).
pub const TITLE: &str = "Revoked PC back?";

/// How the enrollment resembled the revoked agent, in words.
fn resemblance(r: &RevokedReturnRow) -> &'static str {
    match (r.hostname_matched != 0, r.key_matched != 0) {
        (true, true) => "the hostname and the key",
        (false, true) => "the key",
        _ => "the hostname",
    }
}

/// The matched traits as JSON labels.
fn matched(r: &RevokedReturnRow) -> Vec<&'static str> {
    let mut out = Vec::new();
    if r.hostname_matched != 0 {
        out.push("hostname");
    }
    if r.key_matched != 0 {
        out.push("key");
    }
    out
}

fn enrolled(r: &RevokedReturnRow) -> bool {
    !r.agent_id.is_empty()
}

/// What an admin should do.
fn action(r: &RevokedReturnRow) -> String {
    if enrolled(r) {
        format!(
            "If that PC was stolen, revoke the new agent, which also revokes token {token}: \
             doorwatch-collector agents revoke {agent} --reason \"stolen PC returned\".",
            token = r.token_id,
            agent = r.agent_id,
        )
    } else {
        format!(
            "Whoever sent it holds token {token}: revoke it with \
             doorwatch-collector token revoke {token} (PCs already enrolled with it keep working).",
            token = r.token_id,
        )
    }
}

fn link(console_url: &str) -> String {
    format!("{}/agents", console_url.trim_end_matches('/'))
}

/// One line for people (the webhook's `text`, the syslog message, the
/// email's body).
pub fn text(r: &RevokedReturnRow, console_url: &str) -> String {
    let outcome = if enrolled(r) {
        format!("new agent {} enrolled", r.agent_id)
    } else if r.key_matched != 0 {
        "it was refused".to_owned()
    } else {
        "it was refused (its key is already enrolled)".to_owned()
    };
    format!(
        "[doorwatch] {TITLE} An enrollment with {how} of revoked agent {revoked} \
         (\"{revoked_hostname}\", revoked {revoked_at}: {reason}) came in and {outcome}: \
         claimed hostname \"{hostname}\", token {token}, from {remote}. {action} {link}",
        how = resemblance(r),
        revoked = r.revoked_agent_id,
        revoked_hostname = printable(&r.revoked_hostname),
        revoked_at = clock::rfc3339(r.revoked_at),
        reason = printable(&r.revoked_reason),
        hostname = printable(&r.claimed_hostname),
        token = r.token_id,
        remote = r.remote,
        action = action(r),
        link = link(console_url),
    )
}

/// The webhook body.
pub fn json(r: &RevokedReturnRow, console_url: &str) -> serde_json::Value {
    serde_json::json!({
        "text": text(r, console_url),
        "event": "revoked_pc_returned",
        "return": {
            "id": r.return_id.to_string(),
            "at": clock::rfc3339(r.at),
            "matched": matched(r),
            "outcome": if enrolled(r) { "enrolled" } else { "refused" },
            "agent_id": enrolled(r).then(|| r.agent_id.clone()),
            "claimed_hostname": printable(&r.claimed_hostname),
            "token_id": r.token_id,
            "remote": r.remote,
            "key_sha256": r.key_sha256,
            "revoked_agent": {
                "id": r.revoked_agent_id,
                "hostname": printable(&r.revoked_hostname),
                "revoked_at": clock::rfc3339(r.revoked_at),
                "reason": printable(&r.revoked_reason),
            },
        },
        "severity": doorwatch_store::severity_label(SEVERITY),
        "action": action(r),
        "link": link(console_url),
    })
}

/// The CEF extension of the syslog line, keys and values (not escaped
/// yet).
pub fn cef_fields(r: &RevokedReturnRow, console_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("cs1Label", "revokedAgentId".into()),
        ("cs1", r.revoked_agent_id.clone()),
        ("cs2Label", "agentId".into()),
        ("cs2", r.agent_id.clone()),
        ("cs3Label", "claimedHostname".into()),
        ("cs3", printable(&r.claimed_hostname).into_owned()),
        ("cs4Label", "tokenId".into()),
        ("cs4", r.token_id.clone()),
        ("cs5Label", "remote".into()),
        ("cs5", r.remote.clone()),
        ("cs6Label", "matched".into()),
        ("cs6", matched(r).join(",")),
        ("msg", text(r, console_url)),
        ("request", link(console_url)),
    ]
}

/// The email's subject line.
pub fn email_subject(r: &RevokedReturnRow) -> String {
    format!(
        "[doorwatch] {TITLE} {how} of revoked agent {revoked} (\"{hostname}\"), {outcome}",
        how = capitalized(resemblance(r)),
        revoked = r.revoked_agent_id,
        hostname = printable(&r.revoked_hostname),
        outcome = if enrolled(r) { "enrolled" } else { "refused" },
    )
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stolen laptop came back under its own name with another token.
    fn returned() -> RevokedReturnRow {
        RevokedReturnRow {
            return_id: uuid::Uuid::nil(),
            at: 1_764_000_600,
            revoked_agent_id: "7b0e0000-0000-4000-8000-000000000001".into(),
            revoked_hostname: "lab-pc-7".into(),
            revoked_at: 1_764_000_000,
            revoked_reason: "laptop stolen, ticket 4711".into(),
            hostname_matched: 1,
            key_matched: 0,
            agent_id: "9c1d0000-0000-4000-8000-000000000002".into(),
            claimed_hostname: "LAB-PC-7".into(),
            token_id: "3f9a0c1d2e4b5a67".into(),
            remote: "198.18.0.7".into(),
            key_sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn an_enrolled_return_names_everything_and_says_to_revoke_the_new_agent() {
        let r = returned();
        let line = text(&r, "https://console.example/");
        for needle in [
            "Revoked PC back?",
            "with the hostname of revoked agent 7b0e0000-0000-4000-8000-000000000001",
            "(\"lab-pc-7\", revoked 2025-11-24T16:00:00Z: laptop stolen, ticket 4711)",
            "new agent 9c1d0000-0000-4000-8000-000000000002 enrolled",
            "claimed hostname \"LAB-PC-7\", token 3f9a0c1d2e4b5a67, from 198.18.0.7",
            "doorwatch-collector agents revoke 9c1d0000-0000-4000-8000-000000000002",
            "also revokes token 3f9a0c1d2e4b5a67",
        ] {
            assert!(line.contains(needle), "{needle:?} in {line}");
        }
        assert!(line.ends_with(" https://console.example/agents"), "{line}");
        let body = json(&r, "https://c");
        assert_eq!(body["event"], "revoked_pc_returned");
        assert_eq!(body["return"]["outcome"], "enrolled");
        assert_eq!(body["return"]["matched"], serde_json::json!(["hostname"]));
        assert_eq!(body["return"]["agent_id"], r.agent_id.as_str());
        assert_eq!(body["return"]["revoked_agent"]["id"], r.revoked_agent_id);
        assert_eq!(body["severity"], "high");
        assert_eq!(
            email_subject(&r),
            "[doorwatch] Revoked PC back? The hostname of revoked agent \
             7b0e0000-0000-4000-8000-000000000001 (\"lab-pc-7\"), enrolled"
        );
    }

    #[test]
    fn a_refused_key_says_to_revoke_the_token() {
        let r = RevokedReturnRow {
            hostname_matched: 0,
            key_matched: 1,
            agent_id: String::new(),
            claimed_hostname: "e2e-client".into(),
            ..returned()
        };
        let line = text(&r, "https://c");
        assert!(
            line.contains("with the key of revoked agent") && line.contains("it was refused:"),
            "{line}"
        );
        assert!(
            line.contains("doorwatch-collector token revoke 3f9a0c1d2e4b5a67"),
            "{line}"
        );
        assert!(
            !line.contains("agents revoke"),
            "no new agent to revoke: {line}"
        );
        let body = json(&r, "https://c");
        assert_eq!(body["return"]["outcome"], "refused");
        assert_eq!(body["return"]["agent_id"], serde_json::Value::Null);
        assert_eq!(body["return"]["matched"], serde_json::json!(["key"]));
        let both = RevokedReturnRow {
            hostname_matched: 1,
            ..r.clone()
        };
        assert!(text(&both, "https://c").contains("with the hostname and the key of"));
        let replayed = RevokedReturnRow {
            key_matched: 0,
            ..both
        };
        assert!(text(&replayed, "https://c").contains("refused (its key is already enrolled)"));
    }

    #[test]
    fn claimed_text_cannot_break_a_line_a_header_or_a_cef_field() {
        let r = RevokedReturnRow {
            claimed_hostname: "pc\r\nSubject: forged\u{1b}[2J=x|y".into(),
            revoked_hostname: "evil\u{202e}gpj".into(),
            ..returned()
        };
        let line = text(&r, "https://c");
        assert!(!line.contains(['\r', '\n', '\u{1b}', '\u{202e}']), "{line}");
        assert!(
            line.contains("pc\\u{d}\\u{a}Subject: forged\\u{1b}[2J=x|y"),
            "{line}"
        );
        let subject = email_subject(&r);
        assert!(!subject.contains(['\r', '\n', '\u{202e}']), "{subject}");
        let fields = cef_fields(&r, "https://c");
        assert!(
            fields.contains(&("cs3", "pc\\u{d}\\u{a}Subject: forged\\u{1b}[2J=x|y".into())),
            "{fields:?}"
        );
        assert!(
            fields.iter().all(|(_, v)| !v.contains(['\r', '\n'])),
            "{fields:?}"
        );
        let body = json(&r, "https://c").to_string();
        assert!(!body.contains('\u{202e}'), "{body}");
    }
}

//! Outside text made safe for a log line, a terminal or a stored row: the
//! one rule for what a PC, a browser, a local user or an IdP may put in
//! front of security staff. Control characters (C0, DEL, C1: newlines
//! that forge log lines, escape sequences that drive a terminal) and
//! Unicode bidirectional controls (which reorder what a reader sees) are
//! shown as `\u{..}` escapes rather than dropped, so tampering stays
//! visible; long text is cut with `…`.

use std::borrow::Cow;

/// Whether `c` must not reach a log, a terminal or a stored row as is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character escaped; borrowed when there is
/// none.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(escape(text.chars()))
}

/// At most `max_chars` characters of `text` (then `…`), with every unsafe
/// character escaped.
pub fn printable_bounded(text: &str, max_chars: usize) -> String {
    let mut chars = text.chars();
    let mut out = escape(chars.by_ref().take(max_chars));
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

fn escape(chars: impl Iterator<Item = char>) -> String {
    let mut out = String::new();
    for c in chars {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_shown_escaped() {
        assert_eq!(printable("pc-17"), "pc-17");
        assert!(matches!(printable("pc-17"), Cow::Borrowed(_)));
        assert_eq!(
            printable("admin\n2026-12-03 INFO signed in"),
            "admin\\u{a}2026-12-03 INFO signed in"
        );
        assert_eq!(printable("\u{1b}[2J\u{9b}31m"), "\\u{1b}[2J\\u{9b}31m");
        assert_eq!(printable("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(printable("tab\there"), "tab\\u{9}here");
        assert_eq!(printable("Zürich ✓"), "Zürich ✓");
    }

    #[test]
    fn long_text_is_cut_after_escaping_the_rest() {
        assert_eq!(printable_bounded("abcdef", 3), "abc…");
        assert_eq!(printable_bounded("abc", 3), "abc");
        assert_eq!(printable_bounded("a\nbcdef", 2), "a\\u{a}…");
        assert_eq!(
            printable_bounded(&"x".repeat(100_000), 64).chars().count(),
            65
        );
    }
}

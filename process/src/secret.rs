//! [`Secret`]: text that must never reach a log. Its `Debug` (and so any
//! `{:?}` of a struct holding it) says `<redacted>`; only code that needs
//! the value reads it, through `Deref` or [`Secret::expose`].

use std::fmt;
use std::ops::Deref;

/// A password, token, session id, key or nonce.
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Holder {
        name: &'static str,
        token: Secret,
        hint: Option<Secret>,
    }

    #[test]
    fn debug_never_shows_the_value() {
        let holder = Holder {
            name: "alice",
            token: "s3cr3t-value".into(),
            hint: Some("id-token".into()),
        };
        let text = format!("{holder:?} {holder:#?}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("id-token"),
            "{text}"
        );
        assert!(
            text.contains("alice") && text.contains("<redacted>"),
            "{text}"
        );
        assert_eq!(holder.token.expose(), "s3cr3t-value");
        assert_eq!(&*holder.token, "s3cr3t-value");
    }
}

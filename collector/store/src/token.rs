//! The enrollment token format, shared by the collector (which checks
//! tokens) and the console (which creates them): `dwt1-<id>-<secret>`. The
//! id names the token in lists and logs; only a SHA-256 of the secret is
//! stored ([`crate::TokenRow`]).

/// The system's random source failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the system's random number source failed")]
pub struct NoRandomness;

/// Prefix of every token (and its format version).
const TOKEN_PREFIX: &str = "dwt1";
/// Bytes of the token id and of its secret.
const TOKEN_ID_BYTES: usize = 8;
const TOKEN_SECRET_BYTES: usize = 32;
/// A token that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a doorwatch enrollment token (expected dwt1-<16 hex>-<64 hex>)")]
pub struct MalformedToken;

/// A token split into its id and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for Token {
    /// Shows the id, never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// A new random token.
    pub fn generate() -> Result<Self, NoRandomness> {
        Ok(Self {
            id: random_hex(TOKEN_ID_BYTES)?,
            secret: random_hex(TOKEN_SECRET_BYTES)?,
        })
    }

    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        let mut parts = text.trim().split('-');
        let (Some(TOKEN_PREFIX), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MalformedToken);
        };
        let hex = |s: &str, bytes: usize| {
            s.len() == bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(id, TOKEN_ID_BYTES) || !hex(secret, TOKEN_SECRET_BYTES) {
            return Err(MalformedToken);
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The whole token, to show once to whoever created it.
    pub fn reveal(&self) -> String {
        format!("{TOKEN_PREFIX}-{}-{}", self.id, self.secret)
    }

    /// What is stored instead of the secret.
    pub fn secret_sha256(&self) -> String {
        hex_sha256(self.secret.as_bytes())
    }

    /// Whether this token's secret hashes to `stored` (in constant time).
    pub fn matches(&self, stored: &str) -> bool {
        let ours = self.secret_sha256();
        ours.len() == stored.len()
            && ours
                .bytes()
                .zip(stored.bytes())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

fn random_hex(bytes: usize) -> Result<String, NoRandomness> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| NoRandomness)?;
    Ok(hex(&buf))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_only_their_secret_matches() {
        let token = Token::generate().expect("random");
        let text = token.reveal();
        assert!(text.starts_with("dwt1-"));
        let parsed = Token::parse(&text).expect("parses");
        assert_eq!(parsed, token);
        assert!(parsed.matches(&token.secret_sha256()));
        let other = Token::generate().expect("random");
        assert!(!parsed.matches(&other.secret_sha256()));
        assert!(
            !format!("{token:?}").contains(&token.secret),
            "Debug hides the secret"
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = Token::generate().expect("random").reveal();
        for bad in [
            "",
            "dwt1",
            "dwt2-0011223344556677-00",
            &good.to_uppercase(),
            &format!("{good}-extra"),
            &good[..good.len() - 1],
        ] {
            assert_eq!(Token::parse(bad), Err(MalformedToken), "{bad:?}");
        }
        assert!(
            Token::parse(&format!("  {good}\n")).is_ok(),
            "whitespace around is fine"
        );
    }
}

//! Detects which ClickHouse server we talk to and picks the SQL path.

use crate::StoreError;

/// Which dialect of our SQL is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlPath {
    /// Portable SQL that runs on 18.16 and later; row validation off.
    Portable,
    /// Same SQL, with the crate's row validation on (servers ≥ 24.1).
    Current,
}

/// The connected server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// As reported by `SELECT version()`, e.g. `18.16.1`.
    pub version: String,
    pub major: u32,
    pub minor: u32,
}

impl ServerInfo {
    /// Parses `version()` output such as `18.16.1` or `24.8.4.13`.
    pub fn parse(version: &str) -> Option<Self> {
        let mut parts = version.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self {
            version: version.trim().to_owned(),
            major,
            minor,
        })
    }

    /// The SQL path for this server. Row validation needs the
    /// `RowBinaryWithNamesAndTypes` format and settings that old servers lack.
    pub fn path(&self) -> SqlPath {
        if (self.major, self.minor) >= (24, 1) {
            SqlPath::Current
        } else {
            SqlPath::Portable
        }
    }
}

pub(crate) async fn detect(client: &clickhouse::Client) -> Result<ServerInfo, StoreError> {
    let version: String = client
        .query("SELECT version()")
        .fetch_one()
        .await
        .map_err(StoreError::query("version detection"))?;
    ServerInfo::parse(&version).ok_or_else(|| StoreError::Unexpected {
        step: "version detection",
        detail: format!("unparseable version {version:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_server_takes_portable_path() {
        let info = ServerInfo::parse("18.16.1").expect("parses");
        assert_eq!(info.path(), SqlPath::Portable);
    }

    #[test]
    fn current_server_takes_current_path() {
        let info = ServerInfo::parse("25.3.2.39").expect("parses");
        assert_eq!(info.path(), SqlPath::Current);
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(ServerInfo::parse("banana").is_none());
    }
}

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

/// The oldest server doorwatch runs on: Debian's package, tested in CI.
pub const MINIMUM_VERSION: (u32, u32) = (18, 16);

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

    /// Whether doorwatch supports this server at all.
    pub fn supported(&self) -> bool {
        (self.major, self.minor) >= MINIMUM_VERSION
    }

    /// Whether the server has SQL users and grants (`SHOW GRANTS`), which
    /// came in 20.5; older ones have only users.xml.
    pub fn has_access_control(&self) -> bool {
        (self.major, self.minor) >= (20, 5)
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

/// Asks `url` its version; refuses a server older than
/// [`MINIMUM_VERSION`], naming its version and address.
pub(crate) async fn detect(
    client: &clickhouse::Client,
    url: &str,
) -> Result<ServerInfo, StoreError> {
    let version: String = client
        .query("SELECT version()")
        .fetch_one()
        .await
        .map_err(|source| StoreError::Connect {
            url: url.to_owned(),
            source,
        })?;
    let info = ServerInfo::parse(&version).ok_or_else(|| StoreError::Unexpected {
        step: "version detection",
        detail: format!("unparseable version {version:?} at {url}"),
    })?;
    if !info.supported() {
        return Err(StoreError::UnsupportedVersion {
            version: info.version,
            url: url.to_owned(),
            minimum: "18.16",
        });
    }
    Ok(info)
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
    fn servers_before_18_16_are_not_supported() {
        let old = ServerInfo::parse("1.1.54390").expect("parses");
        assert!(!old.supported());
        assert!(!ServerInfo::parse("18.14.19").expect("parses").supported());
        assert!(ServerInfo::parse("18.16.1").expect("parses").supported());
        assert!(
            !ServerInfo::parse("18.16.1")
                .expect("parses")
                .has_access_control()
        );
        assert!(
            ServerInfo::parse("26.9.2.1")
                .expect("parses")
                .has_access_control()
        );
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(ServerInfo::parse("banana").is_none());
    }
}

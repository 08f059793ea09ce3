//! The `[clickhouse]` section that the collector's and the console's
//! configuration files share.

use std::path::PathBuf;

use serde::Deserialize;

use crate::StoreConfig;

/// Where ClickHouse is and how to sign in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP endpoint, e.g. "http://127.0.0.1:8123".
    pub url: String,
    /// Database for doorwatch's tables; created at start if missing.
    #[serde(default = "default_database")]
    pub database: String,
    /// ClickHouse user.
    #[serde(default = "default_user")]
    pub user: String,
    /// File holding the ClickHouse password (first line). Kept out of the
    /// config file so that it can be world-readable.
    pub password_file: Option<PathBuf>,
    /// LZ4-compress what is sent: on when ClickHouse is on another host,
    /// off saves CPU when it is on the same host.
    #[serde(default = "default_compress")]
    pub compress: bool,
    /// The ClickHouse cluster (a name in the servers' `remote_servers`)
    /// to lay the schema out on: event tables sharded by agent under
    /// `Distributed` tables, shared tables replicated on every node. Unset:
    /// one server. See deploy/cluster.md.
    pub cluster: Option<String>,
    /// On a cluster, how many replicas of a shard must hold an insert
    /// before it is acknowledged. 0 (the default): the one replica that
    /// took it, with the others copying it within moments. Above 1 needs
    /// a server with parallel quorum inserts (ClickHouse 20.10 or newer):
    /// 18.16 fails most of them under a steady load (docs/clickhouse.md).
    #[serde(default)]
    pub insert_quorum: u32,
}

/// A `[clickhouse]` value that makes no sense.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidClickHouseConfig {
    /// The field, as `clickhouse.<name>`.
    pub field: &'static str,
    pub problem: String,
}

/// The most replicas a quorum may ask for.
const MAX_INSERT_QUORUM: u32 = 16;

/// Letters, digits and underscores, not empty: safe in SQL and in
/// ZooKeeper paths.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn default_database() -> String {
    "doorwatch".to_owned()
}

fn default_user() -> String {
    "default".to_owned()
}

fn default_compress() -> bool {
    true
}

/// The password file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct PasswordFileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl ClickHouseConfig {
    /// Checks every field but the password file (which
    /// [`ClickHouseConfig::store_config`] reads).
    pub fn validate(&self) -> Result<(), InvalidClickHouseConfig> {
        let invalid = |field, problem: String| Err(InvalidClickHouseConfig { field, problem });
        let url = &self.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return invalid(
                "clickhouse.url",
                format!("{url:?} must start with http:// or https://"),
            );
        }
        if !is_plain_name(&self.database) {
            return invalid(
                "clickhouse.database",
                format!(
                    "{:?} must be letters, digits and underscores",
                    self.database
                ),
            );
        }
        match &self.cluster {
            Some(cluster) if !is_plain_name(cluster) => invalid(
                "clickhouse.cluster",
                format!("{cluster:?} must be letters, digits and underscores"),
            ),
            None if self.insert_quorum > 0 => invalid(
                "clickhouse.insert_quorum",
                "applies to a cluster only: set clickhouse.cluster, or remove it".to_owned(),
            ),
            _ if self.insert_quorum > MAX_INSERT_QUORUM => invalid(
                "clickhouse.insert_quorum",
                format!(
                    "{} is more replicas than any shard has; at most {MAX_INSERT_QUORUM}",
                    self.insert_quorum
                ),
            ),
            _ => Ok(()),
        }
    }

    /// Reads the password file, if any, into a store config.
    pub fn store_config(&self) -> Result<StoreConfig, PasswordFileError> {
        let password = match &self.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError {
                    path: path.clone(),
                    source,
                })?;
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            None => None,
        };
        Ok(StoreConfig {
            url: self.url.clone(),
            database: self.database.clone(),
            user: self.user.clone(),
            password,
            compress: self.compress,
            cluster: self.cluster.as_ref().map(|name| crate::Cluster {
                name: name.clone(),
                insert_quorum: self.insert_quorum,
            }),
        })
    }
}

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
        })
    }
}

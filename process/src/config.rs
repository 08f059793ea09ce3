//! The one error type of doorwatch's configuration files: the file cannot
//! be read, does not parse, or holds a value that makes no sense (naming
//! the field). Each binary's config module builds on it.

use std::path::{Path, PathBuf};

/// A configuration problem, naming the file or the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

impl ConfigError {
    /// A value of `field` that makes no sense.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// `value` of `field` must lie in `min..=max`; the error says so.
pub fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            format!("{value} is outside {min}..={max}"),
        ))
    }
}

/// Reads and parses the TOML file at `path` into `T`. Parse errors name
/// the line and the field.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// The first line of a secret file named by config field `field`,
/// trimmed; an empty one is an error naming the field.
pub fn read_secret(field: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(field, format!("cannot read {}: {e}", path.display())))?;
    let first = text.lines().next().unwrap_or_default().trim().to_owned();
    if first.is_empty() {
        return Err(ConfigError::invalid(
            field,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(first)
}

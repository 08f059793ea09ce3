//! Errors from the storage layer, with enough context to say which step
//! failed and whether retrying can help.

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// ClickHouse could not be reached or rejected a statement.
    #[error("clickhouse {step} failed: {source}")]
    Query {
        step: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    /// The server answered something we cannot use.
    #[error("clickhouse answered unexpectedly during {step}: {detail}")]
    Unexpected { step: &'static str, detail: String },
    /// An operation did not finish in time.
    #[error("clickhouse {step} timed out")]
    Timeout { step: &'static str },
    /// The first request to the server failed: unreachable, refused, or
    /// the sign-in was not accepted.
    #[error("cannot use ClickHouse at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: clickhouse::error::Error,
    },
    /// The server is older than any doorwatch supports.
    #[error(
        "ClickHouse {version} at {url} is not supported: doorwatch needs {minimum} or newer (see docs/clickhouse.md)"
    )]
    UnsupportedVersion {
        version: String,
        url: String,
        minimum: &'static str,
    },
    /// The database or its schema is not there yet: a collector creates
    /// and migrates it at start.
    #[error("{problem} at {url}: start (or upgrade) a collector, which creates and migrates it")]
    SchemaNotReady { url: String, problem: String },
    /// This node cannot take in what the other replicas of a shared table
    /// hold (no ZooKeeper session).
    #[error("this ClickHouse node has not caught up with the other replicas of {table}: {problem}")]
    Lagging {
        table: &'static str,
        problem: String,
    },
    /// The server cannot hold the cluster layout the config asks for.
    #[error(
        "ClickHouse at {url} cannot hold doorwatch's tables on cluster {cluster}: {problem} (see deploy/cluster.md)"
    )]
    Cluster {
        url: String,
        cluster: String,
        problem: String,
    },
    /// The ClickHouse user lacks privileges doorwatch needs.
    #[error(
        "ClickHouse user {user} at {url} lacks {missing}: grant them as in deploy/clickhouse/users.sql"
    )]
    MissingGrants {
        user: String,
        url: String,
        missing: String,
    },
}

impl StoreError {
    /// Builds a `map_err` adapter that names the failed step.
    pub(crate) fn query(step: &'static str) -> impl FnOnce(clickhouse::error::Error) -> Self {
        move |source| Self::Query { step, source }
    }

    /// Whether the same operation may succeed later (ClickHouse down or
    /// overloaded) as opposed to a schema or data problem that will not
    /// fix itself. Callers use this to decide between "retry later" and
    /// "reject".
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Query { source, .. } => matches!(
                source,
                clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
            ),
            Self::Connect { source, .. } => matches!(
                source,
                clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
            ),
            // A collector may be starting and migrating right now.
            Self::Timeout { .. } | Self::SchemaNotReady { .. } | Self::Lagging { .. } => true,
            Self::Unexpected { .. }
            | Self::UnsupportedVersion { .. }
            | Self::Cluster { .. }
            | Self::MissingGrants { .. } => false,
        }
    }
}

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
            Self::Timeout { .. } => true,
            Self::Unexpected { .. } => false,
        }
    }
}

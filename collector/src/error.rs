//! Ingest errors and the one table that maps each to a gRPC status, an HTTP
//! status, whose fault it was, and whether the agent should retry.

use std::sync::Arc;

use doorwatch_store::StoreError;
use tonic::{Code, Status};

/// Something went wrong with an agent's stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("connection carries no verified agent identity")]
    NoIdentity,
    #[error("this agent's certificate is revoked: {0}")]
    Revoked(String),
    #[error("the first message on a stream must be Hello")]
    HelloExpected,
    #[error("no Hello within {0} seconds")]
    HelloTimeout(u64),
    #[error("Hello sent twice on one stream")]
    DuplicateHello,
    #[error("message has no body")]
    EmptyMessage,
    #[error("unreadable message: {}", .0.message())]
    BadMessage(Status),
    #[error("batch carries {got} events; at most {max} are allowed")]
    BatchTooLarge { got: usize, max: usize },
    #[error("batch would take {bytes} bytes once decoded; at most {max} are allowed")]
    BatchTooCostly { bytes: usize, max: usize },
    #[error("batch seq {got} does not follow {previous} on this stream")]
    SeqNotIncreasing { got: u64, previous: u64 },
    #[error("event {index} of batch {seq}: {problem}")]
    BadEvent {
        seq: u64,
        index: usize,
        problem: String,
    },
    #[error("storage unavailable, retry later: {0}")]
    Storage(Arc<StoreError>),
    #[error("storage did not answer within {0} seconds, retry later")]
    StorageTimeout(u64),
    #[error("collector is shutting down; reconnect")]
    ShuttingDown,
    #[error("a newer stream of this agent replaced this one")]
    Replaced,
}

/// Whose fault an error was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The agent sent something it must not.
    Agent,
    /// ClickHouse failed or was unreachable.
    Storage,
    /// The collector itself (shutdown, bug).
    Collector,
}

/// How one error is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorClass {
    pub code: Code,
    pub http_status: u16,
    pub fault: Fault,
    /// Whether sending the same data again later can succeed.
    pub retry: bool,
}

impl IngestError {
    /// The mapping table.
    pub fn class(&self) -> ErrorClass {
        use Fault::*;
        let (code, http_status, fault, retry) = match self {
            Self::NoIdentity => (Code::Unauthenticated, 401, Agent, false),
            Self::Revoked(_) => (Code::PermissionDenied, 403, Agent, false),
            Self::HelloExpected | Self::DuplicateHello | Self::EmptyMessage => {
                (Code::InvalidArgument, 400, Agent, false)
            }
            Self::HelloTimeout(_) => (Code::DeadlineExceeded, 408, Agent, true),
            // tonic reports a message over the size limit as OUT_OF_RANGE.
            Self::BadMessage(status)
                if matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange) =>
            {
                (Code::ResourceExhausted, 413, Agent, false)
            }
            Self::BadMessage(_) => (Code::InvalidArgument, 400, Agent, false),
            Self::BatchTooLarge { .. } | Self::BatchTooCostly { .. } => {
                (Code::ResourceExhausted, 413, Agent, false)
            }
            Self::SeqNotIncreasing { .. } | Self::BadEvent { .. } => {
                (Code::InvalidArgument, 400, Agent, false)
            }
            Self::Storage(e) if !e.is_transient() => (Code::Internal, 500, Storage, true),
            Self::Storage(_) | Self::StorageTimeout(_) => (Code::Unavailable, 503, Storage, true),
            Self::ShuttingDown => (Code::Unavailable, 503, Collector, true),
            // One stream per agent; its in-flight batches are stored and
            // acknowledged first.
            Self::Replaced => (Code::Aborted, 409, Agent, true),
        };
        ErrorClass {
            code,
            http_status,
            fault,
            retry,
        }
    }
}

impl From<IngestError> for Status {
    fn from(error: IngestError) -> Self {
        // The message is for the agent's log; storage details stay in ours.
        let message = match &error {
            IngestError::Storage(_) => "storage unavailable, retry later".to_owned(),
            other => other.to_string(),
        };
        Status::new(error.class().code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_mistakes_are_not_retried() {
        let e = IngestError::BadEvent {
            seq: 1,
            index: 0,
            problem: "x".into(),
        };
        let class = e.class();
        assert_eq!(class.fault, Fault::Agent);
        assert!(!class.retry);
        assert_eq!(Status::from(e).code(), Code::InvalidArgument);
    }

    #[test]
    fn storage_outage_asks_for_retry() {
        let class = IngestError::StorageTimeout(30).class();
        assert_eq!(class.code, Code::Unavailable);
        assert_eq!(class.fault, Fault::Storage);
        assert!(class.retry);
    }
}

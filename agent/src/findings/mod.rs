//! What the agent finds, as plain data: scan episodes, floods, knocks and
//! outbound anomalies. Detection and outbound monitoring produce these
//! reports; explanation, the capture pipeline and event encoding read them.
//!
//! This is a leaf: it owns the report types and their small rules (the
//! scan-type names, an episode's severity) and must not depend on
//! detection, explanation, outbound monitoring or anything that does I/O
//! (it borrows only the plain `Process` type of [`crate::procfs`]).

mod flood;
mod knock;
mod outbound;
mod scan;

pub use flood::FloodReport;
pub use knock::{Knock, KnockReport, MAX_KNOCKS};
pub use outbound::{AnomalyKind, AnomalyReport};
pub use scan::{EpisodeReport, EpisodeState, Exposure, ScanKind, Severity};

/// What the detector reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Scan(EpisodeReport),
    Flood(FloodReport),
    Knocks(KnockReport),
}

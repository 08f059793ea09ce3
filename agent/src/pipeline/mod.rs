//! The agent's run pipeline, as parts that [`crate::app`] assembles:
//!
//! - [`capture_loop`]: the capture thread's loop (capture socket, decode,
//!   timers, policies from the uplink);
//! - [`stages`]: what happens to a packet after capture (detection,
//!   outbound monitoring, status file, events to the uplink's queue);
//! - [`outbound_loop`]: the outbound monitor with its procfs reads and its
//!   saved baseline;
//! - [`policy`]: the pure merge of a pushed policy over the configured
//!   thresholds.
//!
//! It must not parse flags, read the configuration file or start threads
//! and tasks: building and owning those is `app`'s job.

pub mod capture_loop;
pub mod outbound_loop;
pub mod policy;
pub mod stages;

pub use capture_loop::{CaptureLoop, TICK_MS};
pub use outbound_loop::OutboundLoop;
pub use stages::Stages;

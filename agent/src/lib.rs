//! The doorwatch agent: watches this PC's network interface, detects scans
//! against it, and streams what it found to the campus collector.
//!
//! The pure core is [`decode`] (frame bytes to header fields),
//! [`detect`] (header fields and timestamps to episode reports) and
//! [`outbound`] (the same for traffic from this PC); what they report is
//! plain data in [`findings`], and [`explain`] words it. The shells around
//! the core are [`capture`] (pnet, blocking, on its own OS thread) and
//! [`uplink`] (the mutual-TLS gRPC stream); [`events`] turns reports into
//! wire events. [`pipeline`] connects capture, detection and delivery, and
//! [`app`] builds the running agent from a validated [`config`] and owns
//! its thread and tasks. The command line is the binary's `cli` module.
//!
//! Layering (no module cycles): `findings` depends on nothing but the
//! `procfs::Process` type; `detect` and `outbound` use `findings` and call
//! `explain`; `pipeline` uses those; `app` uses `pipeline`.
//!
//! Privacy rule: payload bytes are never copied or stored. Capture asks the
//! kernel for the first [`capture::SNAPLEN`] bytes of each frame only, and
//! decoding keeps header fields only.

#![deny(unsafe_code)]

pub mod app;
pub mod capture;
pub mod config;
pub mod decode;
pub mod detect;
pub mod enroll;
pub mod events;
pub mod explain;
pub mod findings;
pub mod outbound;
pub mod pcap;
pub mod pipeline;
pub mod procfs;
pub mod sockets;
pub mod spool;
pub mod state_file;
pub mod status;
pub mod tls;
pub mod uplink;

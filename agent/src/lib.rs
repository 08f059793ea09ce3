//! The doorwatch agent: watches this PC's network interface, detects scans
//! against it, and streams what it found to the campus collector.
//!
//! The pure core is [`decode`] (frame bytes to header fields) and
//! [`detect`] (header fields and timestamps to episode reports), with
//! [`explain`] for the plain-language text. The shells around it are
//! [`capture`] (pnet, blocking, on its own OS thread) and [`uplink`] (the
//! mutual-TLS gRPC stream). [`events`] turns reports into wire events.
//!
//! Privacy rule: payload bytes are never copied or stored. Capture asks the
//! kernel for the first [`capture::SNAPLEN`] bytes of each frame only, and
//! decoding keeps header fields only.

#![deny(unsafe_code)]

pub mod capture;
pub mod config;
pub mod decode;
pub mod detect;
pub mod enroll;
pub mod events;
pub mod explain;
pub mod outbound;
pub mod pcap;
pub mod procfs;
pub mod sockets;
pub mod spool;
pub mod state_file;
pub mod status;
pub mod tls;
pub mod uplink;

//! The flags and subcommands, as clap parses them. Definitions only: the
//! handlers are the sibling modules.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use doorwatch_process::logging::LogArgs;

/// Watches this PC's network interface for port scans against it and for
/// suspicious traffic from it (big uploads, scanning, spam), names the
/// program responsible, and reports to the campus doorwatch collector over
/// mutual TLS.
///
/// Needs the CAP_NET_RAW capability (not full root). Typical use:
///   doorwatch-agent check-config --config /etc/doorwatch/agent.toml
///   doorwatch-agent run --config /etc/doorwatch/agent.toml
/// With collector.token in agent.toml, `run` enrolls by itself on first
/// start. To enroll by hand instead (once per PC):
///   doorwatch-agent enroll --collector collector.campus.example:4443 --token dwt1-...
/// Help desk, on the PC (as root):
///   doorwatch-agent status        what the agent saw recently, in plain words
///   doorwatch-agent top           live upload and download rates per program
/// Offline analysis of a capture file:
///   doorwatch-agent replay --pcap scan.pcap --local-ip 192.0.2.10
#[derive(Debug, Parser)]
#[command(
    version,
    verbatim_doc_comment,
    mut_arg("log_level", |a| a.help(
        "Log filter, e.g. \"info\" or \"doorwatch_agent=debug\". \
         The RUST_LOG environment variable overrides it."
    ))
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture, detect and report until SIGTERM or Ctrl-C.
    Run {
        /// Path to agent.toml.
        #[arg(long, default_value = "/etc/doorwatch/agent.toml")]
        config: PathBuf,
    },
    /// Get this PC's identity: make a key pair (kept on this PC, mode
    /// 0600), send a signing request with the bootstrap token, and write the
    /// certificate the collector returns. Files go where agent.toml's
    /// [collector] cert and key say. Enrolling again makes a new agent.
    Enroll {
        /// Path to agent.toml (for the cert, key and CA file locations).
        #[arg(long, default_value = "/etc/doorwatch/agent.toml")]
        config: PathBuf,
        /// Collector host:port (default: collector.address from agent.toml).
        #[arg(long)]
        collector: Option<String>,
        /// Bootstrap token from `doorwatch-collector token create`
        /// (default: collector.token from agent.toml).
        #[arg(long)]
        token: Option<String>,
        /// CA bundle the collector's certificate must chain to (default:
        /// collector.ca from agent.toml).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Check a configuration file and the files it names, then exit.
    CheckConfig {
        /// Path to agent.toml.
        #[arg(long, default_value = "/etc/doorwatch/agent.toml")]
        config: PathBuf,
    },
    /// Show, refreshed every second, which programs on this PC send and
    /// receive how much, and to where (like bandwhich). Run it as root: it
    /// captures packets and reads other users' processes. Ctrl-C ends it.
    Top {
        /// Path to agent.toml (for the interface and this PC's addresses).
        #[arg(long, default_value = "/etc/doorwatch/agent.toml")]
        config: PathBuf,
        /// Measure for --seconds, print once and exit (for scripts).
        #[arg(long)]
        once: bool,
        /// With --once: how long to measure.
        #[arg(long, default_value_t = 6)]
        seconds: u64,
        /// table for people, json for scripts (one array).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Tell, in plain words, what the running agent saw recently: scans
    /// of this PC, suspicious traffic from it, risky open ports.
    Status {
        /// Path to agent.toml (the status file sits next to the spool).
        #[arg(long, default_value = "/etc/doorwatch/agent.toml")]
        config: PathBuf,
    },
    /// Run the detector over a pcap file, using the capture's timestamps.
    Replay {
        /// Capture file (classic pcap, Ethernet).
        #[arg(long)]
        pcap: PathBuf,
        /// This PC's address in the capture (repeatable).
        #[arg(long = "local-ip", required = true)]
        local_ips: Vec<IpAddr>,
        /// table for people, json for scripts (one object per line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

//! What the agent saw recently, kept in a small JSON file next to the
//! spool so that `doorwatch-agent status` can tell the PC's user in plain
//! words, without asking the running agent anything. Written atomically
//! (temporary file, then rename); readable by anyone who can read the
//! agent's state folder.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use doorwatch_process::text;
use serde::{Deserialize, Serialize};

/// Findings kept in the file.
const KEPT: usize = 20;

/// One thing the agent found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// "scan", "flood", "outbound", "listening".
    pub kind: String,
    pub explanation: String,
}

/// The status file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub started_ms: u64,
    pub updated_ms: u64,
    pub interface: String,
    pub packets_seen: u64,
    pub kernel_drops: u64,
    /// Events not yet stored by the collector.
    pub events_created: u64,
    pub events_dropped: u64,
    /// Newest last.
    pub findings: VecDeque<Finding>,
}

/// Where the status file of an agent whose spool is `spool_dir` lives:
/// beside it, named after it (`/var/lib/doorwatch/spool.status.json`), so
/// agents with different spools never share one.
pub fn path_for(spool_dir: &Path) -> PathBuf {
    crate::state_file::beside_spool(spool_dir, "status.json")
}

impl Status {
    /// Remembers a finding, forgetting the oldest beyond [`KEPT`].
    pub fn record(&mut self, at_ms: u64, kind: &str, explanation: &str) {
        self.findings.push_back(Finding {
            at_ms,
            kind: kind.to_owned(),
            explanation: explanation.to_owned(),
        });
        while self.findings.len() > KEPT {
            self.findings.pop_front();
        }
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::state_file::write(path, self)
    }

    pub fn read(path: &Path) -> std::io::Result<Self> {
        crate::state_file::read(path)
    }

    /// The plain-words report for the PC's user, as of `now_ms`.
    pub fn describe(&self, now_ms: u64) -> String {
        let mut out = String::new();
        let age = now_ms.saturating_sub(self.updated_ms) / 1000;
        if age > 60 {
            out.push_str(&format!(
                "The doorwatch agent last wrote its status {} ago: it may not be running.\n",
                crate::explain::seconds(age)
            ));
        } else {
            out.push_str(&format!(
                "The doorwatch agent is watching {} (running for {}).\n",
                text::printable(&self.interface),
                crate::explain::seconds(now_ms.saturating_sub(self.started_ms) / 1000)
            ));
        }
        out.push_str(&format!(
            "It has looked at {} packets",
            crate::explain::thousands(self.packets_seen)
        ));
        if self.kernel_drops > 0 {
            out.push_str(&format!(
                " ({} more came too fast to look at)",
                crate::explain::thousands(self.kernel_drops)
            ));
        }
        out.push_str(".\n");
        if self.findings.is_empty() {
            out.push_str("Nothing suspicious has been seen since it started.\n");
            return out;
        }
        out.push_str(&format!(
            "What it saw recently ({} findings, newest first):\n",
            self.findings.len()
        ));
        for f in self.findings.iter().rev() {
            out.push_str(&format!(
                "\n- {} ago, {}:\n  {}\n",
                crate::explain::seconds(now_ms.saturating_sub(f.at_ms) / 1000),
                text::printable(&f.kind),
                // Explanations name programs, and any local user names
                // their own: nothing in them may drive the terminal.
                text::printable(&f.explanation)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_spool_has_its_own_status_file() {
        assert_eq!(
            path_for(Path::new("/var/lib/doorwatch/spool")),
            Path::new("/var/lib/doorwatch/spool.status.json")
        );
        assert_ne!(
            path_for(Path::new("/tmp/t/pc-0-spool")),
            path_for(Path::new("/tmp/t/pc-1-spool"))
        );
    }

    #[test]
    fn keeps_the_newest_findings_and_round_trips() {
        let mut status = Status {
            started_ms: 1_000,
            updated_ms: 100_000,
            interface: "eth0".into(),
            packets_seen: 12_345,
            ..Status::default()
        };
        for i in 0..30 {
            status.record(50_000 + i, "scan", &format!("finding {i}"));
        }
        assert_eq!(status.findings.len(), KEPT);
        assert_eq!(status.findings[0].explanation, "finding 10");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("status.json");
        status.write(&path).expect("write");
        assert_eq!(Status::read(&path).expect("read"), status);
        let text = status.describe(110_000);
        assert!(text.contains("watching eth0"), "{text}");
        assert!(text.contains("12,345 packets"), "{text}");
        assert!(
            text.find("finding 29") < text.find("finding 28"),
            "newest first"
        );
    }

    #[test]
    fn program_names_cannot_drive_the_terminal() {
        let mut status = Status {
            started_ms: 1_000,
            updated_ms: 100_000,
            interface: "eth0".into(),
            ..Status::default()
        };
        status.record(
            50_000,
            "outbound",
            "\u{1b}[2J\u{1b}]0;owned\u{7} sent 2 GB to 198.18.0.9",
        );
        let text = status.describe(110_000);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(
            text.contains("\\u{1b}[2J\\u{1b}]0;owned\\u{7} sent 2 GB"),
            "{text}"
        );
    }
}

//! The README's first command end to end: `doorwatch-demo --no-wait` (what
//! `deploy/demo` runs after installing and building) must show a scan as
//! events, a campaign and a console page. Runs in a temporary folder, so
//! its `demo-data/` is thrown away. Needs root, nmap and clickhouse-server;
//! fails (never skips) without them.

use std::process::Command;

use doorwatch_e2e::require;

#[test]
fn the_demo_shows_a_scan_as_events_a_campaign_and_a_console_page() {
    require::root();
    require::tool("nmap", "nmap");
    require::tool("clickhouse-server", "clickhouse-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(require::binary("doorwatch-demo"))
        .arg("--no-wait")
        .current_dir(dir.path())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for words in [
        "doorwatch-collector campaigns list",
        "sweep",
        "overview lists the open campaign: 198.18.0.0/24",
        "Console:          http://127.0.0.1:",
    ] {
        assert!(
            stdout.contains(words),
            "the demo did not print {words:?}:\n{stdout}"
        );
    }
}

//! The agent's systemd unit grants the least the agent needs, and the
//! READMEs say the same. Each capability is shown needed with the kernel
//! operation the agent performs, run as an unprivileged user through
//! `setpriv` with exactly the unit's set, then with one taken away:
//! an AF_PACKET socket (capture; python3 stands in for the agent's
//! socket call) needs CAP_NET_RAW; listing another user's /proc/PID/fd
//! needs CAP_DAC_READ_SEARCH, and reading its links (which program owns a
//! socket, for outbound monitoring) needs CAP_SYS_PTRACE too.

use std::process::Command;

use doorwatch_e2e::require;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The capabilities a `Key=` line of the unit lists.
fn unit_caps(unit: &str, key: &str) -> Vec<String> {
    let mut caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing from the unit"))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    caps.sort();
    caps
}

/// Whether `script` (sh) succeeds as nobody with exactly `caps`.
fn as_nobody_with(caps: &[String], script: &str) -> bool {
    let list: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let list = list.join(",");
    let mut command = Command::new(require::tool("setpriv", "util-linux"));
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if !list.is_empty() {
        command.arg(format!("--inh-caps={list}"));
        command.arg(format!("--ambient-caps={list}"));
    }
    command.args(["sh", "-c", script]);
    command.status().expect("run setpriv").success()
}

#[test]
fn the_unit_grants_what_the_readmes_say() {
    let unit = read("deploy/doorwatch-agent.service");
    let ambient = unit_caps(&unit, "AmbientCapabilities");
    assert_eq!(ambient, unit_caps(&unit, "CapabilityBoundingSet"));
    assert_eq!(
        ambient,
        ["CAP_DAC_READ_SEARCH", "CAP_NET_RAW", "CAP_SYS_PTRACE"]
    );
    for readme in ["README.md", "deploy/README.md"] {
        let text = read(readme);
        for cap in &ambient {
            assert!(text.contains(cap.as_str()), "{readme} does not name {cap}");
        }
        assert!(
            !text.contains("needs only `CAP_NET_RAW`"),
            "{readme} still says the agent needs only CAP_NET_RAW"
        );
    }
}

#[test]
fn each_capability_of_the_unit_is_needed() {
    require::root();
    require::tool("python3", "python3");
    let unit = read("deploy/doorwatch-agent.service");
    let caps = unit_caps(&unit, "AmbientCapabilities");
    let without =
        |cap: &str| -> Vec<String> { caps.iter().filter(|c| c.as_str() != cap).cloned().collect() };
    // Capture: an AF_PACKET socket.
    let capture = "python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)'";
    assert!(as_nobody_with(&caps, capture), "the unit's set can capture");
    assert!(!as_nobody_with(&without("CAP_NET_RAW"), capture));

    // Naming programs: another user's open files (a root process's).
    let mut other = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("start a root process");
    let pid = other.id();
    let walk = format!("ls /proc/{pid}/fd >/dev/null && readlink /proc/{pid}/fd/0 >/dev/null");
    let outcomes = (
        as_nobody_with(&caps, &walk),
        as_nobody_with(&without("CAP_DAC_READ_SEARCH"), &walk),
        as_nobody_with(&without("CAP_SYS_PTRACE"), &walk),
    );
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(
        outcomes,
        (true, false, false),
        "naming programs: (the unit's set, without CAP_DAC_READ_SEARCH, without CAP_SYS_PTRACE)"
    );
}

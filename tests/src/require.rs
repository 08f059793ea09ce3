//! Preconditions. A missing precondition panics with what to install or
//! how to run; it never turns into a skipped test.

use std::path::PathBuf;
use std::process::Command;

/// Panics unless running as root (namespaces and capture need it).
pub fn root() {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "end-to-end tests need root (network namespaces, packet capture); run them with `sudo bash tests/run`"
    );
}

/// Panics unless `tool` is on PATH, naming the Debian package to install.
pub fn tool(tool: &str, package: &str) -> PathBuf {
    find(tool).unwrap_or_else(|| {
        panic!(
            "{tool} is missing: install it with `apt-get install {package}` (tests/run does this)"
        )
    })
}

fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// The directory holding this workspace's built binaries (the test
/// executable lives in its `deps/` subfolder).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let mut dir = exe.parent().expect("executable has a folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build --workspace --bins` (tests/run does this)",
        path.display()
    );
    path
}

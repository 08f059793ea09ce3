//! The binaries' command-line behaviour that needs no privileges: bad
//! configuration files are refused with the field named, and `--help`
//! works for every subcommand.

use std::process::Command;

use doorwatch_e2e::require;

fn check_config(binary: &str, text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write config");
    let output = Command::new(require::binary(binary))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn collector_names_the_bad_field() {
    let (ok, stderr) = check_config(
        "doorwatch-collector",
        "[listen]\naddress = \"nowhere\"\n[tls]\nclient_ca = \"a\"\nserver_cert = \"b\"\nserver_key = \"c\"\n[clickhouse]\nurl = \"http://127.0.0.1:8123\"\n",
    );
    assert!(!ok);
    assert!(stderr.contains("listen.address"), "{stderr}");

    let (ok, stderr) = check_config("doorwatch-collector", "[listen]\nadress = \"x\"\n");
    assert!(!ok);
    assert!(stderr.contains("adress"), "{stderr}");
}

#[test]
fn agent_names_the_bad_field() {
    let (ok, stderr) = check_config(
        "doorwatch-agent",
        "interface = \"eth0\"\n[collector]\naddress = \"collector\"\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
    );
    assert!(!ok);
    assert!(stderr.contains("collector.address"), "{stderr}");

    let (ok, stderr) = check_config("doorwatch-agent", "interface = 3\n");
    assert!(!ok);
    assert!(stderr.contains("interface"), "{stderr}");
}

#[test]
fn every_subcommand_has_help() {
    for (binary, subcommands) in [
        ("doorwatch-agent", vec!["run", "check-config", "replay"]),
        (
            "doorwatch-collector",
            vec!["serve", "events", "check-config", "pki"],
        ),
    ] {
        for sub in subcommands {
            let output = Command::new(require::binary(binary))
                .args([sub, "--help"])
                .output()
                .expect("run --help");
            assert!(output.status.success(), "{binary} {sub} --help failed");
            assert!(!output.stdout.is_empty());
        }
    }
}

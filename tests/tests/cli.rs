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
fn collector_refuses_a_bad_enrollment_table() {
    let base = "[listen]\naddress = \"127.0.0.1:4443\"\n[tls]\nclient_ca = \"a\"\nserver_cert = \"b\"\nserver_key = \"c\"\n[clickhouse]\nurl = \"http://127.0.0.1:8123\"\n";
    for (table, field) in [
        (
            "[enrollment]\nissuing_cert = \"i.pem\"\n",
            "enrollment.issuing_cert",
        ),
        (
            "[enrollment]\ncertificate_lifetime = \"10s\"\n",
            "enrollment.certificate_lifetime",
        ),
        (
            "[enrollment]\ncertificate_lifetime = \"a month\"\n",
            "enrollment.certificate_lifetime",
        ),
        (
            "[enrollment]\nrevocation_check_seconds = 0\n",
            "enrollment.revocation_check_seconds",
        ),
    ] {
        let (ok, stderr) = check_config("doorwatch-collector", &format!("{base}{table}"));
        assert!(!ok, "{table} must be refused");
        assert!(stderr.contains(field), "{table}: {stderr}");
    }
    // Valid syntax, but the files it names do not exist: said clearly.
    let (ok, stderr) = check_config("doorwatch-collector", base);
    assert!(!ok);
    assert!(stderr.contains("TLS files"), "{stderr}");
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

    let (ok, stderr) = check_config(
        "doorwatch-agent",
        "interface = \"eth0\"\n[collector]\naddress = \"c:4443\"\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\ntoken = \" \"\n",
    );
    assert!(!ok);
    assert!(stderr.contains("collector.token"), "{stderr}");
}

#[test]
fn every_subcommand_has_help() {
    for (binary, subcommands) in [
        (
            "doorwatch-agent",
            vec!["run", "enroll", "check-config", "replay", "top", "status"],
        ),
        (
            "doorwatch-collector",
            vec![
                "serve",
                "events",
                "check-config",
                "pki",
                "token",
                "agents",
                "policy",
                "campaigns",
                "outbound",
            ],
        ),
        (
            "doorwatch-console",
            vec!["serve", "check-config", "hash-password", "api-token"],
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

#[test]
fn replay_prints_one_json_object_per_episode() {
    let pcap = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agent/tests/fixtures/nmap-mixed.pcap"
    );
    let output = Command::new(require::binary("doorwatch-agent"))
        .args([
            "replay",
            "--pcap",
            pcap,
            "--local-ip",
            "198.18.0.10",
            "--local-ip",
            "fd00:d00::10",
        ])
        .args(["--format", "json"])
        .output()
        .expect("run replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    // One scan episode; the IPv6 scanner tried two closed ports only,
    // which is a report of knocks, not a scan.
    let (scans, others): (Vec<_>, Vec<_>) = lines.iter().partition(|l| l["kind"] == "scan");
    assert_eq!(scans.len(), 1, "{lines:?}");
    assert_eq!(others.len(), 1, "{lines:?}");
    assert_eq!(others[0]["kind"], "knocks");
    assert_eq!(others[0]["knocks"][0]["source"], "fd00:d00::2");
    let episode = scans[0];
    for field in [
        "kind",
        "scanner",
        "target",
        "scan_types",
        "ports_probed",
        "open_ports",
        "probes",
        "first_seen",
        "last_seen",
        "companions",
        "explanation",
    ] {
        assert!(episode.get(field).is_some(), "missing {field}: {episode}");
    }
    assert_eq!(episode["kind"], "scan");
    assert_eq!(episode["scanner"], "198.18.0.2");
    assert_eq!(episode["open_ports"], serde_json::json!([80]));
    assert!(
        episode["first_seen"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-11-25T"))
    );
}

#[test]
fn replay_refuses_a_file_that_is_not_pcap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("not.pcap");
    std::fs::write(&path, b"this is a text file, not a packet capture").expect("write");
    let output = Command::new(require::binary("doorwatch-agent"))
        .args(["replay", "--local-ip", "198.18.0.10", "--pcap"])
        .arg(&path)
        .output()
        .expect("run replay");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a pcap file"), "{stderr}");
}

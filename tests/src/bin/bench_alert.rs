//! `doorwatch-bench-alert`: time from the start of a scan to its campaign
//! alert, at the collector's default correlation and alert settings.
//!
//! Five PC namespaces run the release agent. Each round a new scanner
//! namespace, in a /24 of its own (so each round opens a new sweep
//! campaign), sweeps the PCs with nmap after a random pause of up to 3 s
//! (so rounds do not fall in step with the 2 s correlation cycle); the
//! clock runs from just before
//! nmap starts until a webhook receiver on loopback has the alert. Prints
//! p50, p90, p99 and max as a Markdown table for BENCHMARKS.md.
//!
//! Run (as root): cargo build --release --workspace --bins &&
//!   target/release/doorwatch-bench-alert [ROUNDS]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use doorwatch_e2e::netns::Campus;
use doorwatch_e2e::process::run;
use doorwatch_e2e::receivers::webhook_receiver;
use doorwatch_e2e::require;
use doorwatch_e2e::stack::Stack;

const PCS: usize = 5;

fn main() -> anyhow::Result<()> {
    require::root();
    require::tool("nmap", "nmap");
    require::tool("clickhouse-server", "clickhouse-server");
    let rounds: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("ROUNDS must be a number")?,
        None => 20,
    };
    if !(1..=200).contains(&rounds) {
        bail!("ROUNDS must be 1 to 200");
    }
    let mut campus = Campus::new();
    let (pcs, uplinks) = campus.linked_pcs(PCS);
    let collector_ip = uplinks[0].root_ip;
    let (webhook_port, webhook) = webhook_receiver();
    // Default correlation and alert settings; only where alerts go.
    let stack = Stack::start_with(IpAddr::V4(collector_ip), |_| {
        format!(
            "[correlation]\ncampus_networks = [\"198.18.0.0/24\"]\n\
             [alerts]\nwebhook_url = \"http://127.0.0.1:{webhook_port}/hook\"\n"
        )
    });
    let mut agents: Vec<_> = pcs
        .iter()
        .enumerate()
        .map(|(i, pc)| stack.agent(pc, &format!("pc-{i}"), ""))
        .collect();
    for agent in &mut agents {
        agent.wait_for_log("connected to collector", Duration::from_secs(30));
    }
    let targets: Vec<String> = pcs.iter().map(|pc| pc.ipv4().to_string()).collect();
    let mut latencies = Vec::new();
    for round in 1..=rounds {
        // 198.18.ROUND.5, on the campus LAN but in its own /24.
        let scanner = campus.add_host(&format!("s{round}"), &[&format!("198.18.{round}.5")]);
        run(scanner
            .command("ip")
            .args(["route", "add", "198.18.0.0/24", "dev", "eth0"]));
        for pc in &pcs {
            run(pc.command("ip").args([
                "route",
                "add",
                &format!("198.18.{round}.0/24"),
                "dev",
                "eth0",
            ]));
        }
        // Start at a random point of the correlator's and alerter's cycles,
        // as real scans do; otherwise rounds fall into lockstep with them.
        std::thread::sleep(Duration::from_millis(rand::random_range(0..3000)));
        let key = format!("198.18.{round}.0/24");
        let before = webhook.lock().map(|w| w.len()).unwrap_or(0);
        let started = Instant::now();
        run(scanner
            .command("timeout")
            .args([
                "60",
                "nmap",
                "-n",
                "-Pn",
                "-sS",
                "--max-retries",
                "1",
                "-p",
                "1-20",
            ])
            .args(&targets));
        let delivered = loop {
            let got = webhook
                .lock()
                .map(|w| w.iter().skip(before).any(|b| b.contains(&key)))
                .unwrap_or(false);
            if got {
                break started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("round {round}: no alert for {key} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        eprintln!("round {round}: alert {delivered:.2?} after the scan started");
        latencies.push(delivered);
    }
    latencies.sort();
    let pick = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "| scan start → alert delivered ({rounds} rounds, {PCS} PCs, default settings) | value |"
    );
    println!("|---|---:|");
    for (name, value) in [
        ("p50", pick(0.50)),
        ("p90", pick(0.90)),
        ("p99", pick(0.99)),
        ("max", pick(1.0)),
    ] {
        println!("| {name} | {:.2} s |", value.as_secs_f64());
    }
    drop(agents);
    drop(stack);
    Ok(())
}

//! `doorwatch-demo`: a local demo stack on this machine.
//!
//! It starts ClickHouse (data in `demo-data/`) and the collector, creates a
//! bootstrap token, enrolls an agent in each of three demo "PC" network
//! namespaces with it (the way campus IT rolls agents out), sweeps the PCs
//! with a real nmap SYN scan from a "scanner" namespace, and prints the
//! events the scan produced and the campus-wide campaign the collector
//! made of them, as stored in ClickHouse, and starts the console (local
//! admin sign-in) showing it. The stack stays up until you press Enter, then
//! everything is torn down (the ClickHouse data stays in `demo-data/`).
//!
//! Traffic stays inside namespaces on 198.18.0.0/15 with no default route.
//! Run it through `deploy/demo`, which installs what is missing first.

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use doorwatch_e2e::clickhouse::ClickHouse;
use doorwatch_e2e::console::{Console, hash_password};
use doorwatch_e2e::http::request;
use doorwatch_e2e::netns::Campus;
use doorwatch_e2e::process::{Process, free_port, run};
use doorwatch_e2e::{require, stack};

/// Demo PCs (198.18.0.10 and up): three, so a sweep makes a campaign.
const PCS: usize = 3;
/// The scanner, outside the demo campus (198.18.0.0/28).
const SCANNER: &str = "198.18.0.100";

fn main() -> anyhow::Result<()> {
    require::root();
    require::tool("nmap", "nmap");
    let no_wait = std::env::args().any(|a| a == "--no-wait");
    let data: PathBuf = std::env::current_dir()?.join("demo-data");
    std::fs::create_dir_all(&data).context("create demo-data")?;

    println!(
        "== starting ClickHouse (data in {})",
        data.join("clickhouse").display()
    );
    let clickhouse = ClickHouse::start(&data.join("clickhouse"), &data);

    println!("== building the demo campus: three PCs and a scanner in network namespaces");
    let mut campus = Campus::new();
    let (pcs, uplinks) = campus.linked_pcs(PCS);
    let uplink = &uplinks[0];
    let pc = &pcs[0];
    let scanner = campus.add_host("scanner", &[SCANNER]);

    let pki = data.join("pki");
    // The uplink's address can differ between runs: a fresh PKI each time.
    if pki.exists() {
        std::fs::remove_dir_all(&pki).context("remove the previous demo PKI")?;
    }
    println!(
        "== creating the campus PKI (root CA, issuing CA) in {}",
        pki.display()
    );
    stack::pki_init(&data, &[IpAddr::V4(uplink.root_ip)]);

    let address = SocketAddr::new(IpAddr::V4(uplink.root_ip), free_port());
    let collector_config = stack::collector_config(
        &data,
        address,
        &pki,
        &clickhouse,
        "doorwatch",
        &format!(
            "{}[correlation]\ncampus_networks = [\"198.18.0.0/28\"]\n",
            stack::enrollment_table(&pki, "30d")
        ),
    );
    println!("== starting the collector on {address} (mutual TLS)");
    let collector = stack::start_collector(&data, &collector_config);

    // A web server on the PC, so the scan finds an open door to report.
    let _web = Process::spawn(
        "demo-pc-web",
        {
            let mut c = pc.command("python3");
            c.args(["-m", "http.server", "80", "--bind", "198.18.0.10"]);
            c
        },
        &data,
    )
    .context("start a web server in the PC namespace (needs python3)")?;

    println!("== IT creates a bootstrap token for the demo group");
    let token = run(Command::new(require::binary("doorwatch-collector"))
        .args([
            "token",
            "create",
            "--group",
            "demo",
            "--expires",
            "1h",
            "--max-uses",
            "3",
        ])
        .arg("--config")
        .arg(&collector_config));
    let token = token.trim();
    println!("   {}…", &token[..token.len().min(22)]);

    println!("== each PC's agent enrolls with it (its key never leaves the PC), then starts");
    let mut agents = Vec::new();
    for (i, pc) in pcs.iter().enumerate() {
        let name = format!("demo-pc{i}");
        let agent_config = stack::agent_config(&data, pc, address, &pki, &name, "", "");
        let enrolled = run(pc
            .command(require::binary("doorwatch-agent"))
            .args(["enroll", "--token", token, "--config"])
            .arg(&agent_config));
        println!(
            "   {}: {}",
            pc.ipv4(),
            enrolled.lines().next().unwrap_or_default()
        );
        agents.push(stack::start_agent(&data, pc, &agent_config, &name));
    }
    for agent in &mut agents {
        agent.wait_for_log("connected to collector", Duration::from_secs(30));
    }

    let targets: Vec<String> = pcs.iter().map(|pc| pc.ipv4().to_string()).collect();
    println!(
        "== sweeping the PCs: nmap -sS -p1-1000 {} (from the scanner namespace)",
        targets.join(" ")
    );
    let started = Instant::now();
    let out = run(scanner
        .command("timeout")
        .args(["120", "nmap", "-n", "-Pn", "-sS", "-p1-1000"])
        .args(&targets));
    println!("{}", out.lines().last().unwrap_or_default());

    println!("== waiting for the event to reach ClickHouse");
    let query = format!(
        "SELECT max(ports_probed) FROM doorwatch.scan_events FINAL \
         WHERE target = {} AND received_at >= now() - 300",
        doorwatch_store::ip::sql_literal(pc.ipv4())
    );
    let result = clickhouse.poll(&query, Duration::from_secs(20), |r| {
        r.trim().parse::<u32>().is_ok_and(|n| n >= 900)
    });
    if !result.trim().parse::<u32>().is_ok_and(|n| n >= 900) {
        bail!(
            "the scan did not reach ClickHouse; see the logs in {}",
            data.display()
        );
    }
    println!(
        "   stored {:.1?} after the scan started\n",
        started.elapsed()
    );

    let events = run(Command::new(require::binary("doorwatch-collector"))
        .args(["events", "--since", "5m", "--config"])
        .arg(&collector_config));
    println!(
        "$ doorwatch-collector events --since 5m --config {}",
        collector_config.display()
    );
    println!("{events}");

    println!("== waiting for the collector to correlate the sweep into a campaign");
    // Until it covers every PC and has seen the open web port on the first.
    let complete = |r: &str| {
        let mut fields = r.split_whitespace().map(|f| f.parse::<u32>().unwrap_or(0));
        fields.next().unwrap_or(0) >= PCS as u32 && fields.next().unwrap_or(0) >= 1
    };
    let campaign = clickhouse.poll(
        "SELECT max(pcs), max(open_ports) FROM doorwatch.campaigns FINAL \
         WHERE kind = 'sweep' FORMAT TSV",
        Duration::from_secs(20),
        complete,
    );
    if !complete(&campaign) {
        bail!(
            "no sweep campaign over the {PCS} PCs; see the logs in {}",
            data.display()
        );
    }
    let campaigns = run(Command::new(require::binary("doorwatch-collector"))
        .args(["campaigns", "list", "--since", "1h", "--config"])
        .arg(&collector_config));
    println!(
        "$ doorwatch-collector campaigns list --since 1h --config {}",
        collector_config.display()
    );
    println!("{campaigns}");

    println!("== starting the console, with a local admin for the demo (no campus IdP here)");
    let password: String = (0..4)
        .map(|_| format!("{:04x}", rand::random::<u16>()))
        .collect::<Vec<_>>()
        .join("-");
    let console = Console::start(
        &data,
        "console",
        free_port(),
        &clickhouse,
        None,
        &format!(
            "[local_admin]\nusername = \"demo\"\npassword_hash = \"{}\"\n",
            hash_password(&password)
        ),
    );
    let session = console.local_session("demo", &password);
    let overview = request(console.port, "GET", "/", &[("Cookie", &session)], "");
    let shown = overview
        .body
        .split("class=\"campaign-link\"")
        .nth(1)
        .and_then(|rest| rest.split('>').nth(1))
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_default()
        .to_owned();
    if overview.status != 200 || shown.is_empty() {
        bail!(
            "the console's overview does not show the campaign (status {}); see {}",
            overview.status,
            data.join("console.log").display()
        );
    }
    println!("$ GET {}/  (signed in as demo)", console.url());
    println!("   overview lists the open campaign: {shown}");
    println!();
    println!(
        "Console:          {}  (user demo, password {password})",
        console.url()
    );
    println!(
        "ClickHouse HTTP:  {}  (database `doorwatch`)",
        clickhouse.url()
    );
    println!("Logs and configs: {}", data.display());
    if no_wait {
        return Ok(());
    }
    println!("Press Enter to stop the demo and remove its namespaces.");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(console);
    drop(agents);
    drop(collector);
    Ok(())
}

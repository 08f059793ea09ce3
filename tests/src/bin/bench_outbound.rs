//! `doorwatch-bench-outbound`: what the agent costs while its PC uploads
//! and downloads at full speed, next to tcpdump capturing the same
//! traffic in the same run.
//!
//! A PC namespace and a peer namespace share the campus LAN (veth and a
//! bridge). For --seconds, a python3 program on the PC sends to the peer
//! as fast as TCP goes while another receives from it. The release agent
//! (outbound accounting on, collector unreachable, so it also spools) and
//! `tcpdump -s 256 -w /dev/null` capture eth0 of the PC. Prints a Markdown
//! table for BENCHMARKS.md: CPU, resident and peak memory, packets seen
//! and kernel drops of both.
//!
//! Run (as root): cargo build --release --workspace --bins &&
//!   target/release/doorwatch-bench-outbound --seconds 20

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use doorwatch_e2e::netns::Campus;
use doorwatch_e2e::process::{Process, cpu_seconds, run, status_kib};
use doorwatch_e2e::{require, stack};

/// Measures the agent's CPU and memory while the PC moves data both ways
/// at full speed over veth, next to tcpdump on the same interface.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// How long the transfers run (each direction).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
}

/// Python on the peer: a sink on 5001 and a source on 5002, until killed.
const PEER: &str = r#"
import socket, threading
def sink(c):
    buf = bytearray(1 << 20)
    while c.recv_into(buf): pass
def source(c):
    buf = memoryview(bytes(1 << 20))
    try:
        while True: c.sendall(buf)
    except OSError: pass
def serve(port, work):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('198.18.0.20', port)); s.listen(4)
    while True:
        c, _ = s.accept(); threading.Thread(target=work, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(5001, sink), daemon=True).start()
print('listening', flush=True)
serve(5002, source)
"#;

/// Python on the PC: upload and download at once for SECONDS; prints the
/// bytes each way.
const PC: &str = r#"
import socket, sys, threading, time
end = time.time() + float(sys.argv[1])
moved = {}
def up():
    s = socket.create_connection(('198.18.0.20', 5001)); buf = memoryview(bytes(1 << 20)); n = 0
    while time.time() < end: n += s.send(buf)
    s.close(); moved['up'] = n
def down():
    s = socket.create_connection(('198.18.0.20', 5002)); buf = bytearray(1 << 20); n = 0
    while time.time() < end: n += s.recv_into(buf)
    s.close(); moved['down'] = n
ts = [threading.Thread(target=f) for f in (up, down)]
[t.start() for t in ts]; [t.join() for t in ts]
print(moved['up'], moved['down'])
"#;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    require::root();
    require::tool("tcpdump", "tcpdump");
    require::tool("python3", "python3");
    let dir = tempfile::tempdir()?;
    let mut campus = Campus::new();
    let pc = campus.add_host("bench-pc", &["198.18.0.10"]);
    let peer = campus.add_host("bench-peer", &["198.18.0.20"]);

    let (mut agent, mut tcpdump) = stack::offline_agent_and_tcpdump(dir.path(), &pc);
    let mut server = Process::spawn(
        "peer",
        {
            let mut c = peer.command("python3");
            c.args(["-u", "-c", PEER]);
            c
        },
        dir.path(),
    )?;
    server.wait_for_log("listening", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let (agent_cpu0, dump_cpu0) = (cpu_seconds(agent.pid()), cpu_seconds(tcpdump.pid()));
    let agent_rss0 = status_kib(agent.pid(), "VmRSS");

    let moved = run(pc
        .command("timeout")
        .arg((args.seconds + 30).to_string())
        .args(["python3", "-c", PC])
        .arg(args.seconds.to_string()));
    std::thread::sleep(Duration::from_secs(2));
    let (agent_cpu, dump_cpu) = (
        cpu_seconds(agent.pid()) - agent_cpu0,
        cpu_seconds(tcpdump.pid()) - dump_cpu0,
    );
    let memory = |pid| (status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"));
    let (agent_rss, agent_peak) = memory(agent.pid());
    let (dump_rss, dump_peak) = memory(tcpdump.pid());
    agent.stop(Duration::from_secs(10));
    tcpdump.stop(Duration::from_secs(10));
    server.kill();
    let mut bytes = moved.split_whitespace().map(str::parse::<u64>);
    let (up, down) = match (bytes.next(), bytes.next()) {
        (Some(Ok(up)), Some(Ok(down))) => (up, down),
        _ => anyhow::bail!("the transfer printed {moved:?}, not two byte counts"),
    };
    let agent_log = agent.log();
    let stats = agent_log
        .lines()
        .find(|l| l.contains("capture stopped"))
        .context("the agent did not log its capture counters")?;
    let dump_log = tcpdump.log();
    let dump_count = |what: &str| {
        dump_log
            .lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let secs = args.seconds as f64;
    println!(
        "transfer: {:.2} GB up and {:.2} GB down in {} s ({:.2} and {:.2} Gbit/s)",
        up as f64 / 1e9,
        down as f64 / 1e9,
        args.seconds,
        up as f64 * 8.0 / secs / 1e9,
        down as f64 * 8.0 / secs / 1e9
    );
    println!();
    println!(
        "| capturer | packets seen | kernel drops | CPU seconds | CPU % of one core | RSS MiB (start → end) | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "| doorwatch-agent (scan detection + outbound accounting) | {} | {} | {agent_cpu:.2} | {:.1} | {:.1} → {:.1} | {:.1} |",
        stack::log_field(stats, "packets_seen"),
        stack::log_field(stats, "kernel_drops"),
        agent_cpu * 100.0 / secs,
        mib(agent_rss0),
        mib(agent_rss),
        mib(agent_peak)
    );
    println!(
        "| tcpdump -s 256 -w /dev/null | {} | {} | {dump_cpu:.2} | {:.1} | {:.1} | {:.1} |",
        dump_count("packets captured"),
        dump_count("dropped by kernel"),
        dump_cpu * 100.0 / secs,
        mib(dump_rss),
        mib(dump_peak)
    );
    if dump_cpu > 0.0 {
        println!();
        println!("agent/tcpdump CPU ratio: {:.2}", agent_cpu / dump_cpu);
    }
    Ok(())
}

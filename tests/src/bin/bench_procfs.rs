//! `doorwatch-bench-procfs`: the cost of one socket-owner refresh
//! (`doorwatch_agent::procfs::read`) next to `ss -tanp`, which answers the
//! same question, on this machine with many open sockets.
//!
//! Opens PAIRS connected TCP pairs on loopback (default 1,000: 2,000
//! sockets plus their listener, a busy PC's worth), then times the refresh
//! and `ss -tanp` (spawned each time, as a monitor calling it would) and
//! prints a Markdown table for BENCHMARKS.md.
//!
//! Run: cargo run --release -p doorwatch-e2e --bin doorwatch-bench-procfs
//! (as root to also see other users' processes, like the agent).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use doorwatch_agent::procfs::{self, Protocol};
use doorwatch_e2e::require;

/// Times the agent's procfs refresh (socket tables plus every process's fd
/// table, joined by inode) against `ss -tanp`, with PAIRS connected TCP
/// pairs open on loopback so the tables are as full as on a busy PC.
///
/// For each reader it prints runs, sockets seen, and the median, p90 and
/// max wall time of one run in microseconds, then the ratio of the
/// medians. `ss` time includes starting the process, which is what a
/// monitor calling it would pay.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Connected TCP pairs to hold open (two sockets each).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pairs: usize,
    /// Timed procfs refreshes.
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    reads: u32,
    /// Timed `ss -tanp` runs.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    ss_runs: u32,
    /// The procfs mount.
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    proc: PathBuf,
    /// The passwd file for user names.
    #[arg(long, value_name = "FILE", default_value = "/etc/passwd")]
    passwd: PathBuf,
}

/// Median, p90 and max in microseconds (nearest rank).
fn summary(times: &mut [Duration]) -> (f64, f64, f64) {
    times.sort();
    let rank = |p: f64| {
        let index = ((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
        times[index].as_secs_f64() * 1e6
    };
    (rank(0.5), rank(0.9), rank(1.0))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    require::tool("ss", "iproute2");
    let nofile = rlimit::increase_nofile_limit(u64::MAX)
        .context("cannot raise the open-files limit (RLIMIT_NOFILE)")?;
    let needed = 2 * args.pairs as u64 + 64;
    if nofile < needed {
        bail!(
            "{} pairs need about {needed} open files, but the hard limit is {nofile}; \
             raise it (ulimit -Hn)",
            args.pairs
        );
    }

    let listener = TcpListener::bind("127.0.0.1:0").context("bind a loopback listener")?;
    let address = listener.local_addr()?;
    let mut held = Vec::with_capacity(2 * args.pairs);
    for _ in 0..args.pairs {
        held.push(TcpStream::connect(address).context("connect")?);
        held.push(listener.accept().context("accept")?.0);
    }

    // Warm up, and check the refresh sees and attributes our sockets.
    let snapshot = procfs::read(&args.proc, &args.passwd).context("procfs refresh")?;
    let me = std::process::id();
    let ours = snapshot
        .sockets
        .iter()
        .filter(|s| snapshot.owners.get(&s.inode).is_some_and(|p| p.pid == me))
        .count();
    let tcp = snapshot
        .sockets
        .iter()
        .filter(|s| s.protocol == Protocol::Tcp)
        .count();
    let processes = {
        let mut pids: Vec<u32> = snapshot.owners.values().map(|p| p.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len()
    };
    let fd_dirs = std::fs::read_dir(&args.proc)
        .with_context(|| format!("list {}", args.proc.display()))?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    eprintln!(
        "holding {} sockets; refresh sees {} sockets ({tcp} TCP), {} with an owner, \
         {ours} of them this process's; {processes} owning processes of {fd_dirs}; \
         {} raw-socket owners; {} skipped lines",
        held.len() + 1,
        snapshot.sockets.len(),
        snapshot.owners.len(),
        snapshot.raw_owners.len(),
        snapshot.skipped_lines,
    );
    if ours < held.len() + 1 {
        bail!(
            "the refresh attributed only {ours} of this process's {} sockets",
            held.len() + 1
        );
    }

    let mut read_times = Vec::with_capacity(args.reads as usize);
    let mut seen = 0;
    for _ in 0..args.reads {
        let began = Instant::now();
        let snapshot = procfs::read(&args.proc, &args.passwd).context("procfs refresh")?;
        read_times.push(began.elapsed());
        seen = snapshot.sockets.len();
        drop(snapshot);
    }

    let mut ss_times = Vec::with_capacity(args.ss_runs as usize);
    let mut ss_seen = 0;
    for _ in 0..args.ss_runs {
        let began = Instant::now();
        let output = Command::new("ss")
            .arg("-tanp")
            .output()
            .context("run ss -tanp")?;
        ss_times.push(began.elapsed());
        if !output.status.success() {
            bail!(
                "ss -tanp failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        // Lines minus the header.
        ss_seen = output
            .stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
            .saturating_sub(1);
    }

    let (read_p50, read_p90, read_max) = summary(&mut read_times);
    let (ss_p50, ss_p90, ss_max) = summary(&mut ss_times);
    println!("| reader | runs | sockets seen | median µs | p90 µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| `procfs::read` (TCP + UDP, owners, raw owners) | {} | {seen} | {read_p50:.0} | {read_p90:.0} | {read_max:.0} |",
        args.reads
    );
    println!(
        "| `ss -tanp` (TCP only, with processes) | {} | {ss_seen} | {ss_p50:.0} | {ss_p90:.0} | {ss_max:.0} |",
        args.ss_runs
    );
    println!();
    println!("ss -tanp / procfs::read median: {:.1}", ss_p50 / read_p50);
    drop(held);
    Ok(())
}

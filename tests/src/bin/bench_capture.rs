//! `doorwatch-bench-capture`: live capture cost of the agent next to
//! tcpdump, on the same traffic in the same run.
//!
//! A replayer namespace sends a synthetic capture with `tcpreplay
//! --topspeed` onto the campus LAN; inside the PC namespace the release
//! agent and `tcpdump -s 256 -w /dev/null` capture it at the same time.
//! Prints packets seen, kernel drops and CPU seconds for both, as a
//! Markdown table for BENCHMARKS.md.
//!
//! Run (as root): cargo build --release --workspace --bins &&
//!   target/release/doorwatch-bench-capture [FRAMES] [LOOPS]

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use doorwatch_e2e::netns::Campus;
use doorwatch_e2e::process::{cpu_seconds, run};
use doorwatch_e2e::{require, stack};

const PC: [u8; 4] = [198, 18, 0, 10];

/// A 54-byte Ethernet/IPv4/TCP frame.
fn frame(
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let mut f = vec![0u8; 54];
    f[..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[46] = 0x50;
    f[47] = flags;
    f[48..50].copy_from_slice(&1024u16.to_be_bytes());
    // The bridge (br_netfilter) drops IPv4 headers with a bad checksum.
    let sum: u32 = f[14..34]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xFFFF) + (sum >> 16);
    let checksum = !(((folded & 0xFFFF) + (folded >> 16)) as u16);
    f[24..26].copy_from_slice(&checksum.to_be_bytes());
    f
}

/// Writes `n` frames of a PC under attack: established traffic, a port
/// sweep, and a forged-source SYN flood, all towards 198.18.0.10.
fn write_pcap(path: &std::path::Path, n: usize, dst_mac: [u8; 6]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(&[
        0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0,
    ])?;
    let mut rng: u32 = 0x9E37_79B9;
    let mut scan_port: u16 = 0;
    for i in 0..n {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let f = match rng % 10 {
            0..=5 => frame(
                dst_mac,
                [198, 18, 9, (rng % 8) as u8],
                PC,
                443,
                40_000 + (rng % 2000) as u16,
                0x18,
            ),
            6 | 7 => {
                scan_port = scan_port.wrapping_add(1);
                frame(dst_mac, [198, 18, 100, 7], PC, 61_000, scan_port, 0x02)
            }
            _ => {
                let b = rng.to_be_bytes();
                frame(dst_mac, [100, b[1], b[2], b[3]], PC, 1024, 80, 0x02)
            }
        };
        let ts = i as u32;
        out.write_all(&(1_764_000_000 + ts / 1_000_000).to_le_bytes())?;
        out.write_all(&(ts % 1_000_000).to_le_bytes())?;
        out.write_all(&(f.len() as u32).to_le_bytes())?;
        out.write_all(&(f.len() as u32).to_le_bytes())?;
        out.write_all(&f)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    require::root();
    require::tool("tcpreplay", "tcpreplay");
    require::tool("tcpdump", "tcpdump");
    let args: Vec<String> = std::env::args().collect();
    let frames: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let loops: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir()?;

    let mut campus = Campus::new();
    let pc = campus.add_host("bench-pc", &["198.18.0.10"]);
    let replayer = campus.add_host("bench-replay", &["198.18.0.99"]);
    let mac_text = run(pc.command("cat").arg("/sys/class/net/eth0/address"));
    let mut mac = [0u8; 6];
    for (i, part) in mac_text.trim().split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16).context("PC MAC address")?;
    }
    let pcap = dir.path().join("mixed.pcap");
    write_pcap(&pcap, frames, mac)?;

    let (mut agent, mut tcpdump) = stack::offline_agent_and_tcpdump(dir.path(), &pc);
    std::thread::sleep(Duration::from_secs(1));
    let (agent_cpu0, dump_cpu0) = (cpu_seconds(agent.pid()), cpu_seconds(tcpdump.pid()));

    let replay = run(replayer
        .command("timeout")
        .args([
            "300",
            "tcpreplay",
            "--topspeed",
            "-i",
            "eth0",
            &format!("--loop={loops}"),
        ])
        .arg(&pcap));
    std::thread::sleep(Duration::from_secs(2));
    let (agent_cpu, dump_cpu) = (
        cpu_seconds(agent.pid()) - agent_cpu0,
        cpu_seconds(tcpdump.pid()) - dump_cpu0,
    );
    agent.stop(Duration::from_secs(10));
    tcpdump.stop(Duration::from_secs(10));
    let agent_log = agent.log();
    let dump_log = tcpdump.log();
    let stats_line = agent_log
        .lines()
        .find(|l| l.contains("capture stopped"))
        .unwrap_or_default();
    let dump_count = |what: &str| {
        dump_log
            .lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let sent = frames as u64 * u64::from(loops);
    let rate = replay
        .lines()
        .find(|l| l.trim_start().starts_with("Rated:"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    println!("tcpreplay: {sent} frames ({frames} × {loops}); {rate}");
    println!();
    println!("| capturer | packets seen | kernel drops | CPU seconds | CPU ns/packet sent |");
    println!("|---|---:|---:|---:|---:|");
    let seen = stack::log_field(stats_line, "packets_seen");
    println!(
        "| doorwatch-agent (TPACKET_V3 ring, decode + detect) | {seen} | {} | {agent_cpu:.2} | {:.0} |",
        stack::log_field(stats_line, "kernel_drops"),
        agent_cpu * 1e9 / sent as f64
    );
    println!(
        "| tcpdump -s 256 -w /dev/null (libpcap TPACKET_V3) | {} | {} | {dump_cpu:.2} | {:.0} |",
        dump_count("packets captured"),
        dump_count("dropped by kernel"),
        dump_cpu * 1e9 / sent as f64
    );
    if dump_cpu > 0.0 {
        println!();
        println!("agent/tcpdump CPU ratio: {:.2}", agent_cpu / dump_cpu);
    }
    Ok(())
}

//! Detector core throughput: decode + detect on one core, from a capture
//! held in memory (no I/O). The traffic mix is synthetic but shaped like a
//! PC under attack: established connections, a SYN scan with the PC's RST
//! answers, and a spoofed-source SYN flood.
//!
//! Run: `cargo bench -p doorwatch-agent --bench detector`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use doorwatch_agent::decode;
use doorwatch_agent::detect::{Detector, DetectorConfig};

const PC: [u8; 4] = [198, 18, 0, 10];

fn frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[12] = 0x08; // IPv4
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
    f
}

/// One million frames of mixed traffic.
fn capture() -> Vec<Vec<u8>> {
    let mut frames = Vec::with_capacity(1_000_000);
    let mut rng: u32 = 0x1234_5678;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let mut scan_port: u16 = 0;
    while frames.len() < 1_000_000 {
        match next() % 10 {
            // Established traffic with a few servers.
            0..=5 => {
                let server = [198, 18, 9, (next() % 8) as u8];
                let local = 40_000 + (next() % 2000) as u16;
                frames.push(frame(server, PC, 443, local, 0x18));
                frames.push(frame(PC, server, local, 443, 0x10));
            }
            // A scanner sweeping ports, answered RST.
            6 | 7 => {
                scan_port = scan_port.wrapping_add(1);
                frames.push(frame([198, 51, 100, 7], PC, 61000, scan_port, 0x02));
                frames.push(frame(PC, [198, 51, 100, 7], scan_port, 61000, 0x14));
            }
            // Forged sources flooding port 80.
            _ => {
                let spoofed = next().to_be_bytes();
                frames.push(frame(
                    [100, spoofed[1], spoofed[2], spoofed[3]],
                    PC,
                    1024,
                    80,
                    0x02,
                ));
            }
        }
    }
    frames
}

fn bench(c: &mut Criterion) {
    let frames = capture();
    let mut group = c.benchmark_group("detector");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.sample_size(10);
    group.bench_function("decode", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(decode::ethernet(f).ok());
            }
        })
    });
    group.bench_function("decode+detect", |b| {
        b.iter(|| {
            let mut d = Detector::new(DetectorConfig::default(), [PC.into()]);
            for (i, f) in frames.iter().enumerate() {
                if let Ok(Some(p)) = decode::ethernet(f) {
                    // 10 µs per frame: 100,000 packets per second of capture time.
                    let now = 1_764_000_000_000 + i as u64 / 100;
                    d.observe(&p, now);
                    if i % 20_000 == 0 {
                        d.tick(now);
                        d.drain_reports().for_each(drop);
                    }
                }
            }
            black_box(d.stats())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

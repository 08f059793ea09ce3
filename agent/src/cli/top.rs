//! `doorwatch-agent top`: live upload and download rates per program,
//! refreshed every second (or measured once, for scripts), and their
//! table.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use doorwatch_agent::capture::Capture;
use doorwatch_agent::config::ValidConfig;
use doorwatch_agent::outbound::{Monitor, ProcessRate};
use doorwatch_agent::{decode, explain, sockets};
use doorwatch_process::clock::unix_now_ms;
use doorwatch_process::shutdown::wait_for_signal;
use doorwatch_process::text;

use super::args::Format;

/// `doorwatch-agent top`: live rates per program, or one measurement with
/// `once = Some(seconds)`.
pub fn top(config: &ValidConfig, once: Option<u64>, format: Format) -> anyhow::Result<()> {
    let mut capture = Capture::open(&config.interface)?;
    let local_ips = if config.local_ips.is_empty() {
        capture.interface_ips()
    } else {
        config.local_ips.clone()
    };
    let mut monitor = Monitor::new(config.outbound.clone().unwrap_or_default(), local_ips);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Ctrl-C ends the loop; a failure to install the handler only
        // means Ctrl-C kills the process the usual way.
        let _ = on_signal(move || stop.store(true, Ordering::Relaxed));
    }
    let started = unix_now_ms();
    let mut last_refresh = 0;
    while !stop.load(Ordering::Relaxed) {
        capture.next_frames(&mut |frame, captured_ms| {
            if let Ok(Some(packet)) = decode::ethernet(frame) {
                monitor.observe(&packet, captured_ms);
            }
        })?;
        let now = unix_now_ms();
        if now.saturating_sub(last_refresh) < 1_000 {
            continue;
        }
        last_refresh = now;
        monitor.tick(now);
        match sockets::read() {
            Ok(snapshot) => {
                monitor.attribute(&snapshot);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the socket owners"),
        }
        monitor.drain_reports().for_each(drop);
        let rates = monitor.rates(now);
        match once {
            Some(seconds) if now.saturating_sub(started) < seconds * 1000 => {}
            Some(_) => {
                print_rates(&rates, format)?;
                return Ok(());
            }
            None => {
                // Clear the terminal and draw from the top left.
                print!("\x1b[2J\x1b[H");
                println!(
                    "doorwatch top: {} (rates over the last 5 seconds; Ctrl-C quits)\n",
                    config.interface
                );
                print_rates(&rates, format)?;
            }
        }
    }
    Ok(())
}

fn print_rates(rates: &[ProcessRate], format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string(rates)?);
        return Ok(());
    }
    println!(
        "{:<20} {:>8} {:<10} {:>12} {:>12} {:>6}  TOP DESTINATION",
        "PROGRAM", "PID", "USER", "SENT/s", "RECEIVED/s", "FLOWS"
    );
    for r in rates {
        println!(
            "{:<20} {:>8} {:<10} {:>12} {:>12} {:>6}  {}",
            // Any local user chooses their program's name.
            text::printable(&r.process),
            r.pid,
            text::printable(&r.user),
            explain::bytes(r.sent_per_sec),
            explain::bytes(r.received_per_sec),
            r.connections,
            text::printable(&r.top_destination)
        );
    }
    Ok(())
}

/// Runs `f` on SIGINT or SIGTERM, from a small runtime on its own thread
/// (the `top` loop itself is synchronous).
fn on_signal(f: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(wait_for_signal());
            f();
        })?;
    Ok(())
}

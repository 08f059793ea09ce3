//! The agent's packet decoder on any frame: an error or a packet, never a
//! panic. The same bytes as a bare IPv4 or IPv6 packet too.
#![no_main]

use doorwatch_agent::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    if let Ok(Some(packet)) = decode::ethernet(frame) {
        // A frame cannot carry more IP bytes than the capture held plus
        // what the header claims; the claim is at most 16 bits plus the
        // IPv6 header.
        assert!(packet.ip_len <= 65_535 + 40, "ip_len {}", packet.ip_len);
    }
    let _ = decode::ipv4(frame);
    let _ = decode::ipv6(frame);
});

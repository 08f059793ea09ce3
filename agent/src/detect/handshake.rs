//! Proof that a source's address is its own: it completed a TCP handshake
//! with this PC.
//!
//! Anyone can forge the source address of a SYN, so a SYN scan (or a
//! knock) may name an innocent address, and a blocklist built on it can be
//! poisoned. The third packet of a handshake cannot be forged that way: it
//! acknowledges the sequence number this PC chose for its SYN-ACK plus one,
//! and only a source that received that SYN-ACK knows it (a blind guess is
//! right once in 2³²). This table remembers the SYN-ACKs this PC sent to
//! sources it is watching, briefly, and checks the acknowledgments that
//! come back.
//!
//! It is bounded: at most [`CAPACITY`] SYN-ACKs wait, each for at most
//! [`WAIT_MS`]. When a flood fills it, new SYN-ACKs are not remembered, so
//! a proof can be missed but never made up.

use std::collections::HashMap;
use std::net::IpAddr;

/// SYN-ACKs waiting for their acknowledgment at once.
pub(super) const CAPACITY: usize = 1024;
/// How long a SYN-ACK waits: a handshake completes within a round trip,
/// and nmap's slowest timing retries within seconds.
pub(super) const WAIT_MS: u64 = 10_000;
/// Bytes one waiting SYN-ACK costs, for the detector's memory budget.
pub(super) const ENTRY_BYTES: usize = 64;

/// One TCP connection attempt: the remote source and port, this PC's
/// address and port.
pub(super) type Attempt = (IpAddr, u16, IpAddr, u16);

/// SYN-ACKs this PC sent to watched sources, by attempt: the
/// acknowledgment number that proves the handshake, and when it was sent.
#[derive(Debug, Default)]
pub(super) struct Handshakes {
    waiting: HashMap<Attempt, (u32, u64)>,
}

impl Handshakes {
    /// This PC answered `attempt` with a SYN-ACK whose sequence number is
    /// `seq`.
    pub(super) fn answered(&mut self, attempt: Attempt, seq: u32, now: u64) {
        if self.waiting.len() >= CAPACITY && !self.waiting.contains_key(&attempt) {
            self.waiting
                .retain(|_, (_, sent)| now.saturating_sub(*sent) < WAIT_MS);
            if self.waiting.len() >= CAPACITY {
                return;
            }
        }
        self.waiting.insert(attempt, (seq.wrapping_add(1), now));
    }

    /// A packet of `attempt` from the source acknowledges `ack`: true if
    /// that completes a handshake this PC answered (the proof is then
    /// used up).
    pub(super) fn acknowledged(&mut self, attempt: &Attempt, ack: u32, now: u64) -> bool {
        match self.waiting.get(attempt) {
            Some(&(expected, sent)) if now.saturating_sub(sent) < WAIT_MS => {
                if expected != ack {
                    return false;
                }
                self.waiting.remove(attempt);
                true
            }
            Some(_) => {
                self.waiting.remove(attempt);
                false
            }
            None => false,
        }
    }

    /// Whether any SYN-ACK is waiting: most packets need no lookup.
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Forgets SYN-ACKs that waited too long.
    pub(super) fn expire(&mut self, now: u64) {
        self.waiting
            .retain(|_, (_, sent)| now.saturating_sub(*sent) < WAIT_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(port: u16) -> Attempt {
        (
            "198.18.1.5".parse().expect("ip"),
            40_000,
            "198.18.0.10".parse().expect("ip"),
            port,
        )
    }

    #[test]
    fn only_the_right_acknowledgment_in_time_proves_a_handshake() {
        let mut handshakes = Handshakes::default();
        handshakes.answered(attempt(22), u32::MAX, 1_000);
        assert!(
            !handshakes.acknowledged(&attempt(23), 0, 1_001),
            "other port"
        );
        assert!(!handshakes.acknowledged(&attempt(22), 5, 1_001), "a guess");
        // The sequence number wraps.
        assert!(handshakes.acknowledged(&attempt(22), 0, 1_002));
        assert!(!handshakes.acknowledged(&attempt(22), 0, 1_003), "used up");

        handshakes.answered(attempt(80), 7, 2_000);
        assert!(
            !handshakes.acknowledged(&attempt(80), 8, 2_000 + WAIT_MS),
            "too late"
        );
        assert!(handshakes.is_empty());
    }

    #[test]
    fn a_flood_of_syn_acks_is_bounded_and_proves_nothing() {
        let mut handshakes = Handshakes::default();
        for port in 0..(CAPACITY as u16 + 100) {
            handshakes.answered(attempt(port), 100, 5_000);
        }
        assert_eq!(handshakes.len(), CAPACITY);
        let late = CAPACITY as u16 + 50;
        assert!(!handshakes.acknowledged(&attempt(late), 101, 5_001));
        // Once the old ones have expired, there is room again.
        handshakes.answered(attempt(late), 100, 5_000 + WAIT_MS);
        assert!(handshakes.acknowledged(&attempt(late), 101, 5_001 + WAIT_MS));
        handshakes.expire(5_000 + 2 * WAIT_MS);
        assert!(handshakes.is_empty());
    }
}

//! The cache of ACK and FIN+ACK packets that wait for this PC's possible
//! bare RST, which alone shows them to be probes. Fixed size, no
//! per-source state; it must not know about pairs or episodes.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;

/// Slots of the cache of ACK and FIN+ACK packets awaiting a possible RST.
const AMBIGUOUS_SLOTS: usize = 8192;

/// An ACK or FIN+ACK that reached a port with no connection shows itself
/// only by this PC's bare RST. Ordinary traffic sends these flags all the
/// time, so they wait in a fixed-size, direct-mapped cache (no allocation,
/// no per-source state) until a RST confirms one as a probe.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ambiguous {
    pub(super) remote: IpAddr,
    pub(super) remote_port: u16,
    pub(super) local: IpAddr,
    pub(super) local_port: u16,
    pub(super) flags: u8,
}

/// A direct-mapped cache of [`Ambiguous`] packets, hashed with a random
/// per-process seed.
#[derive(Debug)]
pub(super) struct AmbiguousCache {
    slots: Box<[Option<Ambiguous>]>,
    hasher: foldhash::fast::RandomState,
}

impl AmbiguousCache {
    pub(super) fn new() -> Self {
        Self {
            slots: vec![None; AMBIGUOUS_SLOTS].into_boxed_slice(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn slot(&self, remote: IpAddr, remote_port: u16, local: IpAddr, local_port: u16) -> usize {
        let mut h = self.hasher.build_hasher();
        (remote, remote_port, local, local_port).hash(&mut h);
        (std::hash::Hasher::finish(&h) as usize) % AMBIGUOUS_SLOTS
    }

    /// Keeps `a`, replacing whatever shared its slot.
    pub(super) fn remember(&mut self, a: Ambiguous) {
        let slot = self.slot(a.remote, a.remote_port, a.local, a.local_port);
        self.slots[slot] = Some(a);
    }

    /// The flags of the ACK or FIN+ACK that this PC's bare RST answers, if
    /// cached; it leaves the cache.
    pub(super) fn take(
        &mut self,
        remote: IpAddr,
        remote_port: u16,
        local: IpAddr,
        local_port: u16,
    ) -> Option<u8> {
        let slot = self.slot(remote, remote_port, local, local_port);
        let a = self.slots[slot]?;
        if (a.remote, a.remote_port, a.local, a.local_port)
            != (remote, remote_port, local, local_port)
        {
            return None;
        }
        self.slots[slot] = None;
        Some(a.flags)
    }
}

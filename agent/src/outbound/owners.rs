//! Who owns a socket: the [`Owners`] seam between the pure outbound
//! monitor and the procfs (or portable) socket reader. Tests use fakes.
//! It must not read procfs itself; the runtime hands it a snapshot.

use std::net::IpAddr;
use std::sync::Arc;

use crate::procfs::{Process, Snapshot};

/// Finds socket owners. Implemented by a procfs [`Snapshot`]; tests use
/// fakes.
pub trait Owners {
    /// The process owning this PC's socket `local_port` talking to
    /// `remote`:`remote_port` over `protocol` (6 or 17).
    fn owner(
        &self,
        protocol: u8,
        local: IpAddr,
        local_port: u16,
        remote: IpAddr,
        remote_port: u16,
    ) -> Option<Process>;
    /// The process sending raw packets (raw or packet sockets), if exactly
    /// one holds such sockets.
    fn raw_sender(&self) -> Option<Process>;
}

impl Owners for Snapshot {
    fn owner(
        &self,
        protocol: u8,
        local: IpAddr,
        local_port: u16,
        remote: IpAddr,
        remote_port: u16,
    ) -> Option<Process> {
        let protocol = match protocol {
            6 => crate::procfs::Protocol::Tcp,
            17 => crate::procfs::Protocol::Udp,
            _ => return None,
        };
        Snapshot::owner(
            self,
            protocol,
            std::net::SocketAddr::new(local, local_port),
            std::net::SocketAddr::new(remote, remote_port),
        )
        .cloned()
    }

    fn raw_sender(&self) -> Option<Process> {
        // The agent's own capture socket is a packet socket: never itself.
        let me = std::process::id();
        let mut names: Vec<&Process> = self.raw_owners.iter().filter(|p| p.pid != me).collect();
        names.sort_by_key(|p| p.pid);
        names.dedup_by_key(|p| p.pid);
        match names.as_slice() {
            [one] => Some((*one).clone()),
            _ => None,
        }
    }
}

/// A process shared between many flows.
pub type SharedProcess = Arc<Process>;

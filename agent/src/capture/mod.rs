//! Live capture: the blocking shell around the pure decoder. Runs on its
//! own OS thread (see `main.rs`).
//!
//! On Linux it reads a TPACKET_V3 ring ([`ring`]), which costs tens of
//! nanoseconds per frame; if the ring cannot be set up it falls back to
//! pnet's socket path ([`linux`] enlarges its buffer and reads its drop
//! counter). Other operating systems use pnet through the same functions.
//!
//! Only the first [`SNAPLEN`] bytes of each frame reach user space: the
//! kernel truncates them, so payloads are never copied in. That is enough
//! for Ethernet + VLAN + IPv6 with extension headers + a full TCP header,
//! and for ICMP error quotes.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pnet::datalink::{self, Channel, DataLinkReceiver, NetworkInterface};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod ring;

/// Bytes of each frame handed to user space.
pub const SNAPLEN: usize = 256;

/// Receive buffer requested for the pnet path, so bursts (a fast scan sends
/// tens of thousands of probes per second) queue instead of dropping.
pub const RECV_BUFFER: usize = 8 * 1024 * 1024;

/// How long one read waits before returning control (for timers, shutdown).
pub const READ_TIMEOUT: Duration = Duration::from_millis(200);

/// Why capture could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    #[error("no network interface named {name:?}; this PC has: {available}")]
    NoSuchInterface { name: String, available: String },
    #[error(
        "capturing on {interface} needs the CAP_NET_RAW capability. Grant it with \
         `setcap cap_net_raw=ep $(command -v doorwatch-agent)`, or run the agent from the \
         shipped systemd unit (AmbientCapabilities=CAP_NET_RAW); full root is not needed"
    )]
    NeedCapNetRaw { interface: String },
    #[error("cannot capture on {interface}: {source}")]
    Open {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("{interface} is not an Ethernet-like interface")]
    NotEthernet { interface: String },
    #[error("capture on {interface} failed: {source}")]
    Read {
        interface: String,
        #[source]
        source: io::Error,
    },
}

enum Backend {
    #[cfg(target_os = "linux")]
    Ring(ring::Ring),
    Pnet {
        rx: Box<dyn DataLinkReceiver>,
        /// The socket pnet reads from, for drop statistics (owned by `rx`).
        #[cfg(target_os = "linux")]
        socket: std::os::fd::RawFd,
    },
}

/// An open capture on one interface.
pub struct Capture {
    interface: NetworkInterface,
    backend: Backend,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.backend {
            #[cfg(target_os = "linux")]
            Backend::Ring(_) => "tpacket_v3 ring",
            Backend::Pnet { .. } => "pnet",
        };
        f.debug_struct("Capture")
            .field("interface", &self.interface.name)
            .field("backend", &backend)
            .finish()
    }
}

fn open_error(interface: &str, e: io::Error) -> CaptureError {
    if e.kind() == io::ErrorKind::PermissionDenied {
        CaptureError::NeedCapNetRaw {
            interface: interface.to_owned(),
        }
    } else {
        CaptureError::Open {
            interface: interface.to_owned(),
            source: e,
        }
    }
}

impl Capture {
    /// Opens `name` for receiving (both directions) with the header-only
    /// snapshot length.
    pub fn open(name: &str) -> Result<Self, CaptureError> {
        let interfaces = datalink::interfaces();
        let Some(interface) = interfaces.iter().find(|i| i.name == name).cloned() else {
            let available = interfaces
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(CaptureError::NoSuchInterface {
                name: name.to_owned(),
                available,
            });
        };
        #[cfg(target_os = "linux")]
        match ring::Ring::open(interface.index, SNAPLEN as u32) {
            Ok(ring) => {
                return Ok(Self {
                    interface,
                    backend: Backend::Ring(ring),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(open_error(name, e));
            }
            Err(e) => {
                tracing::warn!(error = %e, interface = name, "no TPACKET_V3 ring; capturing through the slower socket path");
            }
        }
        Self::open_pnet(interface)
    }

    fn open_pnet(interface: NetworkInterface) -> Result<Self, CaptureError> {
        let name = interface.name.clone();
        #[cfg(target_os = "linux")]
        let socket = linux::open_packet_socket(RECV_BUFFER).map_err(|e| open_error(&name, e))?;
        let config = datalink::Config {
            read_buffer_size: SNAPLEN,
            write_buffer_size: 64,
            read_timeout: Some(READ_TIMEOUT),
            // Only this PC's own traffic matters.
            promiscuous: false,
            #[cfg(target_os = "linux")]
            socket_fd: Some(socket),
            ..datalink::Config::default()
        };
        let rx = match datalink::channel(&interface, config) {
            Ok(Channel::Ethernet(_tx, rx)) => rx,
            Ok(_) => return Err(CaptureError::NotEthernet { interface: name }),
            Err(e) => return Err(open_error(&name, e)),
        };
        Ok(Self {
            interface,
            backend: Backend::Pnet {
                rx,
                #[cfg(target_os = "linux")]
                socket,
            },
        })
    }

    /// The interface's own addresses.
    pub fn interface_ips(&self) -> Vec<IpAddr> {
        self.interface.ips.iter().map(|net| net.ip()).collect()
    }

    /// Frames the kernel dropped since the last call, where the OS tells.
    pub fn take_kernel_drops(&self) -> u64 {
        match &self.backend {
            #[cfg(target_os = "linux")]
            Backend::Ring(ring) => ring.take_drops().unwrap_or(0),
            #[cfg(target_os = "linux")]
            Backend::Pnet { socket, .. } => linux::take_drops(*socket).unwrap_or(0),
            #[cfg(not(target_os = "linux"))]
            Backend::Pnet { .. } => 0,
        }
    }

    /// Waits up to [`READ_TIMEOUT`] for frames and hands each (at most
    /// [`SNAPLEN`] bytes) to `f` with its capture time in Unix
    /// milliseconds. Returns how many frames it handed over.
    pub fn next_frames(&mut self, f: &mut dyn FnMut(&[u8], u64)) -> Result<usize, CaptureError> {
        let result = match &mut self.backend {
            #[cfg(target_os = "linux")]
            Backend::Ring(ring) => ring.next_block(READ_TIMEOUT, f),
            Backend::Pnet { rx, .. } => match rx.next() {
                Ok(frame) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    f(frame, now);
                    Ok(1)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    Ok(0)
                }
                Err(e) => Err(e),
            },
        };
        result.map_err(|source| CaptureError::Read {
            interface: self.interface.name.clone(),
            source,
        })
    }
}

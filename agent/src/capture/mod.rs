//! Live capture with pnet: the blocking shell around the pure decoder.
//! Runs on its own OS thread (see `main.rs`). On Linux, [`linux`] opens
//! the socket so it gets a large buffer and reports kernel drops; other
//! OSes use pnet's defaults through the same functions.
//!
//! Only the first [`SNAPLEN`] bytes of each frame reach user space: the
//! kernel truncates into a receive buffer of that size, so payloads are
//! never even copied in. That is enough for Ethernet + VLAN + IPv6 with
//! extension headers + a full TCP header, and for ICMP error quotes.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use pnet::datalink::{self, Channel, DataLinkReceiver, NetworkInterface};

#[cfg(target_os = "linux")]
mod linux;

/// Bytes of each frame handed to user space.
pub const SNAPLEN: usize = 256;

/// Receive buffer requested from the kernel, so bursts (a fast scan sends
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

/// An open capture on one interface.
pub struct Capture {
    interface: NetworkInterface,
    rx: Box<dyn DataLinkReceiver>,
    /// The socket pnet reads from, for drop statistics (owned by `rx`).
    #[cfg(target_os = "linux")]
    socket: std::os::fd::RawFd,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("interface", &self.interface.name)
            .finish()
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
        let permission = |e: io::Error| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                CaptureError::NeedCapNetRaw {
                    interface: name.to_owned(),
                }
            } else {
                CaptureError::Open {
                    interface: name.to_owned(),
                    source: e,
                }
            }
        };
        #[cfg(target_os = "linux")]
        let socket = linux::open_packet_socket(RECV_BUFFER).map_err(permission)?;
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
            Ok(_) => {
                return Err(CaptureError::NotEthernet {
                    interface: name.to_owned(),
                });
            }
            Err(e) => return Err(permission(e)),
        };
        Ok(Self {
            interface,
            rx,
            #[cfg(target_os = "linux")]
            socket,
        })
    }

    /// The interface's own addresses.
    pub fn interface_ips(&self) -> Vec<IpAddr> {
        self.interface.ips.iter().map(|net| net.ip()).collect()
    }

    /// Frames the kernel dropped since the last call, where the OS tells.
    pub fn take_kernel_drops(&self) -> u64 {
        #[cfg(target_os = "linux")]
        {
            linux::take_drops(self.socket).unwrap_or(0)
        }
        #[cfg(not(target_os = "linux"))]
        {
            0
        }
    }

    /// The next frame (at most [`SNAPLEN`] bytes), or `None` when
    /// [`READ_TIMEOUT`] passed without one.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, CaptureError> {
        match self.rx.next() {
            Ok(frame) => Ok(Some(frame)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(source) => Err(CaptureError::Read {
                interface: self.interface.name.clone(),
                source,
            }),
        }
    }
}

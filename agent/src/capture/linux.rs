//! Linux-only socket handling for capture.
//!
//! pnet opens a packet socket with the kernel's default receive buffer
//! (about 200 KiB), which a fast scan overflows in milliseconds, and it
//! does not expose the kernel's drop counter. So on Linux we open the
//! AF_PACKET socket ourselves, enlarge its buffer, hand it to pnet, and
//! read `PACKET_STATISTICS` from it.
//!
//! This is the one place in the agent that needs `unsafe`: these are plain
//! libc socket calls that neither pnet nor the standard library wrap.
//! Each call is checked, and no pointer outlives the call it is passed to.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// Opens an `AF_PACKET`/`SOCK_RAW` socket for all protocols and asks for a
/// receive buffer of `recv_buffer` bytes (the kernel caps it at
/// `net.core.rmem_max`). pnet binds it to the interface and owns it after.
pub fn open_packet_socket(recv_buffer: usize) -> io::Result<RawFd> {
    let protocol = i32::from((libc::ETH_P_ALL as u16).to_be());
    // SAFETY: socket(2) takes integers only.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let size = libc::c_int::try_from(recv_buffer).unwrap_or(libc::c_int::MAX);
    // SAFETY: `size` lives across the call and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::from_ref(&size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        // Not fatal: capture works with the default buffer, only with
        // more drops under bursts, which heartbeats report.
        tracing::warn!(error = %io::Error::last_os_error(), "cannot enlarge the capture buffer");
    }
    Ok(fd)
}

/// Frames the kernel dropped on this socket since the last call (the
/// counter resets when read).
pub fn take_drops(fd: RawFd) -> io::Result<u64> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` and `len` are live, writable, and `len` holds the
    // exact size of `stats`; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            std::ptr::from_mut(&mut stats).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(stats.tp_drops))
}

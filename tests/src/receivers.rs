//! Alert receivers on loopback for tests and benchmarks: a webhook
//! endpoint and a syslog listener that keep what they get.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};

/// What a receiver on loopback got, one entry per alert.
pub type Received = Arc<Mutex<Vec<String>>>;

/// A webhook receiver on 127.0.0.1: answers 200 and keeps each body.
pub fn webhook_receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook receiver");
    let port = listener.local_addr().expect("address").port();
    let received = Received::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_ok() {
                keep.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (port, received)
}

/// A syslog listener on 127.0.0.1 (UDP): keeps each datagram.
pub fn syslog_listener() -> (u16, Received) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind syslog listener");
    let port = socket.local_addr().expect("address").port();
    let received = Received::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = socket.recv(&mut buf) {
            keep.lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    (port, received)
}

/// The entries of `received` that mention `needle`.
pub fn mentioning(received: &Received, needle: &str) -> Vec<String> {
    received
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e.contains(needle))
        .cloned()
        .collect()
}

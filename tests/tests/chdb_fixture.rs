//! The ClickHouse 26.9 test engine's HTTP front (`tests/chdb/clickhouse_http.py`)
//! behaves as ClickHouse's HTTP interface does where doorwatch relies on
//! it: `/ping`, errors with `X-ClickHouse-Exception-Code`, `database` and
//! settings from the URL, corrupted compressed blocks refused, and data
//! kept across a restart. The crate's LZ4 blocks and RowBinary inserts
//! are exercised by every store test on this engine.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use doorwatch_e2e::clickhouse::{ClickHouse, Engine};

/// One HTTP/1.0 request; returns (status line, headers, body).
fn request(port: u16, method: &str, target: &str, body: &[u8]) -> (String, String, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "{method} {target} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(body).expect("send body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, head, answer[split + 4..].to_vec())
}

#[test]
fn the_fixture_speaks_the_http_interface_doorwatch_uses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut engine = ClickHouse::start_engine(Engine::Chdb, &dir.path().join("data"), dir.path());
    let port = engine.http_port;

    let (status, _, body) = request(port, "GET", "/ping", b"");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, b"Ok.\n");

    let (status, head, body) = request(port, "POST", "/", b"SELECT nosuchfunction()");
    assert!(status.contains("500"), "{status}");
    assert!(head.contains("X-ClickHouse-Exception-Code: 46"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("UNKNOWN_FUNCTION"));

    engine.query_ok("CREATE DATABASE kept");
    engine.query_ok("CREATE TABLE kept.t (x UInt32) ENGINE = MergeTree ORDER BY x");
    let (status, _, _) = request(
        port,
        "POST",
        "/?database=kept&query=INSERT%20INTO%20t%20FORMAT%20TSV",
        b"7\n",
    );
    assert!(status.contains("200"), "{status}");
    // A setting from the URL applies to that request only.
    let (_, _, body) = request(
        port,
        "GET",
        "/?max_threads=3&query=SELECT%20getSetting('max_threads')",
        b"",
    );
    assert_eq!(body, b"3\n");
    assert_ne!(engine.query_ok("SELECT getSetting('max_threads')"), "3\n");

    // A compressed block whose checksum is wrong is refused, not stored.
    let mut block = vec![0u8; 16];
    block.push(0x02); // method: none
    let data = b"8\n";
    block.extend_from_slice(&(9 + data.len() as u32).to_le_bytes());
    block.extend_from_slice(&(data.len() as u32).to_le_bytes());
    block.extend_from_slice(data);
    let (status, head, _) = request(
        port,
        "POST",
        "/?database=kept&decompress=1&query=INSERT%20INTO%20t%20FORMAT%20TSV",
        &block,
    );
    assert!(status.contains("500"), "{status}");
    assert!(head.contains("X-ClickHouse-Exception-Code: 40"), "{head}");

    engine.stop();
    engine.restart();
    assert_eq!(
        engine.query_ok("SELECT sum(x), count() FROM kept.t FORMAT TSV"),
        "7\t1\n"
    );
}

#!/usr/bin/env python3
"""The ClickHouse 26.9 engine (PyPI's chdb-core, in-process) behind the part of
ClickHouse's HTTP interface that the Rust `clickhouse` crate uses.

It is a test fixture, not a server: see docs/clickhouse.md for what it does not
emulate (users and grants, concurrent queries, errors after a response has
started, sessions). It owns:

- the query, from the `query` URL parameter and/or the request body (ClickHouse
  joins them with a newline);
- `database` (each request runs in it), `default_format`, and every other URL
  parameter as a setting for that request only;
- INSERT bodies in any input format the engine reads (RowBinary and
  RowBinaryWithNamesAndTypes are what the crate sends), handed to the engine
  through a file, never through the query text;
- `decompress=1` bodies: ClickHouse's native blocks (CityHash128 checksum,
  method byte, sizes), LZ4 or uncompressed, checksums verified;
- `Accept-Encoding: lz4` (an LZ4 frame, as ClickHouse sends it) or `gzip`;
- errors as HTTP 500 with `X-ClickHouse-Exception-Code` and ClickHouse's text;
- `GET /ping` and `GET /?query=...`;
- data kept in the folder given with --path, across restarts.

Usage: clickhouse_http.py --path DIR --port PORT [--host 127.0.0.1]
It prints "listening on HOST:PORT" once it accepts requests.
"""

import argparse
import gzip
import os
import re
import signal
import struct
import sys
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import lz4.block
import lz4.frame
from chdb import session as chdb_session
from clickhouse_cityhash.cityhash import CityHash128

# URL parameters that steer the HTTP layer and are not settings.
NOT_SETTINGS = {
    "query", "database", "default_format", "decompress", "compress", "user",
    "password", "query_id", "session_id", "session_timeout", "session_check",
    "role", "enable_http_compression", "wait_end_of_query",
}
# Bodies bigger than this are refused: a fixture must not be made to eat memory.
MAX_BODY = 512 * 1024 * 1024
SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `INSERT INTO t (a, b) FORMAT RowBinary` with the data in the body.
INSERT_FORMAT = re.compile(
    r"^\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<format>[A-Za-z0-9_]+)\s*$",
    re.IGNORECASE | re.DOTALL,
)
ERROR_CODE = re.compile(r"Code:\s*(\d+)")
METHOD_NONE, METHOD_LZ4 = 0x02, 0x82


class BadRequest(Exception):
    """A request this fixture refuses, with ClickHouse's error code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def native_blocks(data):
    """Decodes ClickHouse's compressed native framing into the plain bytes."""
    out = bytearray()
    offset = 0
    while offset < len(data):
        if len(data) - offset < 25:
            raise BadRequest(432, "Code: 432. DB::Exception: truncated compressed block header. (UNKNOWN_CODEC)")
        checksum = data[offset:offset + 16]
        method = data[offset + 16]
        compressed, plain = struct.unpack_from("<II", data, offset + 17)
        if compressed < 9 or offset + 16 + compressed > len(data):
            raise BadRequest(271, "Code: 271. DB::Exception: compressed block size out of range. (CANNOT_DECOMPRESS)")
        block = data[offset + 16:offset + 16 + compressed]
        expected = CityHash128(bytes(block))
        # ClickHouse stores CityHash v1.0.2's 128 bits as two little-endian
        # u64s; this library returns them as one integer, first half high.
        if checksum != struct.pack("<QQ", expected >> 64, expected & (2**64 - 1)):
            raise BadRequest(40, "Code: 40. DB::Exception: Checksum doesn't match: corrupted data. (CHECKSUM_DOESNT_MATCH)")
        payload = block[9:]
        if method == METHOD_LZ4:
            out += lz4.block.decompress(bytes(payload), uncompressed_size=plain)
        elif method == METHOD_NONE:
            out += payload
        else:
            raise BadRequest(89, f"Code: 89. DB::Exception: Unknown compression method {method:#x}. (UNKNOWN_COMPRESSION_METHOD)")
        offset += 16 + compressed
    return bytes(out)


class Engine:
    """One chdb session; every statement runs under one lock (chdb's session
    is not for concurrent use), with the request's database and settings."""

    def __init__(self, path):
        self.session = chdb_session.Session(path)
        self.lock = threading.Lock()
        self.spill = tempfile.mkdtemp(prefix="chdb-http-")

    def run(self, sql, database, settings, output_format):
        with self.lock:
            applied = []
            try:
                if database:
                    if not IDENTIFIER.match(database):
                        raise BadRequest(81, f"Code: 81. DB::Exception: Database {database!r} does not exist. (UNKNOWN_DATABASE)")
                    self.session.query(f"USE `{database}`")
                else:
                    self.session.query("USE default")
                for name, value in settings:
                    self.session.query(f"SET {name} = {quote(value)}")
                    applied.append(name)
                result = self.session.query(sql, output_format)
                return result.bytes()
            finally:
                for name in applied:
                    try:
                        self.session.query(f"SET {name} = DEFAULT")
                    except Exception:  # noqa: BLE001 - restoring is best effort
                        pass


def quote(value):
    """A setting value as SQL: numbers as they are, anything else quoted."""
    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine = None  # set in main

    def log_message(self, fmt, *args):  # noqa: D102 - quiet unless asked
        if os.environ.get("CHDB_HTTP_LOG"):
            sys.stderr.write("chdb-http: " + fmt % args + "\n")

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                if len(body) + size > MAX_BODY:
                    raise BadRequest(241, "Code: 241. DB::Exception: request body too large. (MEMORY_LIMIT_EXCEEDED)")
                body += self.rfile.read(size)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise BadRequest(241, "Code: 241. DB::Exception: request body too large. (MEMORY_LIMIT_EXCEEDED)")
        return self.rfile.read(length) if length else b""

    def do_GET(self):  # noqa: N802 - http.server's naming
        url = urllib.parse.urlsplit(self.path)
        if url.path in ("/ping", "/"):
            if url.path == "/ping" or not url.query:
                return self.reply(200, b"Ok.\n")
        self.handle_query(b"")

    def do_POST(self):  # noqa: N802
        try:
            body = self.read_body()
        except BadRequest as e:
            return self.fail(e.code, str(e))
        except (ValueError, OSError) as e:
            return self.fail(33, f"Code: 33. DB::Exception: cannot read request body: {e}. (CANNOT_READ_ALL_DATA)")
        self.handle_query(body)

    def handle_query(self, body):
        params = urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query, keep_blank_values=True)
        values = dict(params)
        try:
            if values.get("decompress") == "1" and body:
                body = native_blocks(body)
            settings = []
            for name, value in params:
                if name in NOT_SETTINGS or name.startswith("param_"):
                    continue
                if not SETTING_NAME.match(name):
                    raise BadRequest(115, f"Code: 115. DB::Exception: Unknown setting {name!r}. (UNKNOWN_SETTING)")
                settings.append((name, value))
            query = values.get("query", "")
            output = values.get("default_format", "TabSeparated")
            insert = INSERT_FORMAT.match(query) if query else None
            if insert and body:
                # Data goes to the engine through a file: binary rows never
                # pass through the query text.
                with tempfile.NamedTemporaryFile(dir=self.engine.spill, delete=False) as f:
                    f.write(body)
                    spilled = f.name
                try:
                    statement = (f"INSERT INTO {insert['target']} FROM INFILE "
                                 f"'{spilled}' FORMAT {insert['format']}")
                    data = self.engine.run(statement, values.get("database"), settings, output)
                finally:
                    os.unlink(spilled)
            else:
                text = query
                if body:
                    try:
                        decoded = body.decode("utf-8")
                    except UnicodeDecodeError:
                        raise BadRequest(27, "Code: 27. DB::Exception: this fixture takes binary data only after INSERT … FORMAT. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)")
                    text = f"{query}\n{decoded}" if query else decoded
                if not text.strip():
                    raise BadRequest(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
                data = self.engine.run(text, values.get("database"), settings, output)
        except BadRequest as e:
            return self.fail(e.code, str(e))
        except Exception as e:  # noqa: BLE001 - the engine's errors become ClickHouse's
            message = str(e)
            match = ERROR_CODE.search(message)
            return self.fail(int(match.group(1)) if match else 1002, message)
        self.reply(200, data, compress=True)

    def fail(self, code, message):
        self.reply(500, (message.strip() + "\n").encode("utf-8", "replace"),
                   extra={"X-ClickHouse-Exception-Code": str(code)})

    def reply(self, status, data, compress=False, extra=None):
        encoding = None
        accept = self.headers.get("Accept-Encoding", "")
        if compress and data:
            wanted = [a.split(";")[0].strip().lower() for a in accept.split(",")]
            if "lz4" in wanted:
                data, encoding = lz4.frame.compress(data), "lz4"
            elif "gzip" in wanted:
                data, encoding = gzip.compress(data), "gzip"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-ClickHouse-Server-Display-Name", "chdb-http-fixture")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", required=True, help="folder that keeps the data")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    os.makedirs(args.path, exist_ok=True)
    Handler.engine = Engine(args.path)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    # SIGTERM stops serving and closes the engine, as a server's shutdown would.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening on {args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        Handler.engine.session.close()


if __name__ == "__main__":
    main()

"""A hostile registry for tests: a small HTTP server on 127.0.0.1 that misbehaves on purpose.

Each :data:`MODES` entry is one misbehaviour, chosen per server: drip a body, the status line or
the headers (its own or its token endpoint's) one byte at a time (below any read timeout), read an
upload a block at a time, redirect or send the token realm to another host, send conflicting
``Content-Length`` headers, answer with bytes that are not HTTP, promise more than it sends, or
announce a manifest larger than any limit. It never leaves 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("drip", "drip-chunked", "redirect-elsewhere", "realm-elsewhere", "conflicting-length", "not-http",
         "short-body", "huge-manifest", "endless-blob", "huge-header", "drip-status", "drip-headers",
         "slow-upload", "drip-token")
#: What a ``slow-upload`` server reads of a request body per :data:`DRIP_INTERVAL` (512 KiB/s, in
#: blocks big enough to reopen a loopback TCP window): each block the client sends still goes out
#: within its read timeout, so only a deadline stops it.
SLOW_READ = 256 * 1024
#: Seconds between two bytes of a drip: below the client's read timeout in the tests, so only a
#: deadline can stop it.
DRIP_INTERVAL = 0.5


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        mode, elsewhere = self.server.mode, f"127.0.0.1:{self.server.elsewhere}"
        if mode == "drip-token" and not self.path.startswith("/token"):
            realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
            self._send(401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}",service="hostile"'})
            return
        if mode == "drip-token":
            mode = "drip-headers"  # the token endpoint drips its head
        if self.path == "/v2/" and mode != "realm-elsewhere":
            self._send(200, b"{}", {"Content-Type": "application/json"})
            return
        if mode in ("drip-status", "drip-headers"):
            head = b"HTTP/1.1 200 OK\r\n" if mode == "drip-headers" else b""
            try:
                self.wfile.write(head)
                for byte in (b"HTTP/1.1 200 OK\r\nX-Slow: " if not head else b"X-Slow: ") + b"a" * 100_000:
                    if self.server.stopping.is_set():
                        break
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(DRIP_INTERVAL)
            except OSError:
                pass
            self.close_connection = True
        elif mode in ("drip", "drip-chunked"):
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            if mode == "drip":
                self.send_header("Content-Length", "1000")
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                while not self.server.stopping.is_set():
                    self.wfile.write(b"1\r\n \r\n" if mode == "drip-chunked" else b" ")
                    self.wfile.flush()
                    time.sleep(DRIP_INTERVAL)
            except OSError:
                pass  # the client gave up: what we want
        elif mode == "redirect-elsewhere":
            self._send(307, b"", {"Location": f"http://{elsewhere}/storage{self.path}"})
        elif mode == "realm-elsewhere":
            self._send(401, b"", {"WWW-Authenticate": f'Bearer realm="http://{elsewhere}/token",service="hostile"'})
        elif mode == "conflicting-length":
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.send_header("Content-Length", "20")
            self.end_headers()
            self.wfile.write(b"0123456789")
        elif mode == "not-http":
            self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            self.close_connection = True
        elif mode == "short-body":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
        elif mode == "huge-manifest":
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", str(64 * 1024 * 1024))
            self.end_headers()
            self.close_connection = True
        elif mode == "endless-blob":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(100_000):
                    self.wfile.write(b"10000\r\n" + b"A" * 0x10000 + b"\r\n")
            except OSError:
                pass
        elif mode == "slow-upload":  # no such blob yet: the client starts an upload
            self._send(404, b"", {})
        elif mode == "huge-header":
            self.send_response(200)
            self.send_header("X-Junk", "j" * 100_000)
            self.end_headers()

    def do_POST(self) -> None:
        if self.server.mode == "slow-upload":
            self._send(202, b"", {"Location": "/v2/rag/llm/blobs/uploads/slow"})
        else:
            self.do_GET()

    def do_PATCH(self) -> None:
        self.do_PUT()

    def do_PUT(self) -> None:
        if self.server.mode != "slow-upload":
            self.do_GET()
            return
        try:  # read the body a little at a time, forever: the client's sends keep progressing
            while not self.server.stopping.is_set() and self.rfile.read(SLOW_READ):
                time.sleep(DRIP_INTERVAL)
        except OSError:
            pass
        self.close_connection = True

    def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode, self.elsewhere, self.stopping = mode, closed_port(), threading.Event()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gives up on us mid-drip is the point, not an error


@contextmanager
def hostile_registry(mode: str) -> Iterator[_Server]:
    """A server in ``mode`` on 127.0.0.1; ``server.server_address[1]`` is its port."""
    assert mode in MODES
    server = _Server(mode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


__all__ = ["DRIP_INTERVAL", "MODES", "SLOW_READ", "closed_port", "hostile_registry"]

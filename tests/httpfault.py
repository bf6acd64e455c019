"""A loopback HTTP server with scripted faults, for testing downloads offline.

Binds 127.0.0.1 on a free port, serves in-memory files with ``Range: bytes=N-`` support, and plays
a per-path fault plan, one fault per request, in order (then normal service):

- ``Fault("reset", after=N)``: headers with the full Content-Length, N body bytes, then an abrupt
  close (RST);
- ``Fault("truncate", after=N)``: Content-Length says the full size, only N bytes are sent;
- ``Fault("status", status=500)``: an error status (any code, e.g. 404, 503);
- ``Fault("wrong")``: the right length, wrong bytes;
- ``Fault("stall", after=N, seconds=S)``: N bytes, then silence for S seconds, then a close;
- ``Fault("ignore_range")``: answers 200 with the whole body even when a Range was asked for.

``always=True`` on a fault repeats it forever. Every request is recorded (method, path, Range
header, status, body bytes sent). The number of requests is bounded (``max_requests``; later
requests get 503 and set ``overflow``) so a runaway retry loop cannot hang a test.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Fault:
    kind: str
    after: int = 0
    status: int = 500
    seconds: float = 0.0
    always: bool = False


@dataclass
class Record:
    method: str
    path: str
    range: str | None
    status: int
    sent: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # a silent client cannot hold a handler thread for long

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        srv: FaultServer = self.server.owner  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        fault = srv._next(self.path, head)
        rec = Record("HEAD" if head else "GET", self.path, rng, 0, 0)
        srv._record(rec)
        if srv.overflow and fault is not None and fault.kind == "overflow":
            return self._status(rec, 503)
        data = srv.files.get(self.path)
        if data is None:
            return self._status(rec, 404)
        if fault is not None and fault.kind == "status":
            return self._status(rec, fault.status)
        if fault is not None and fault.kind == "wrong":
            data = bytes((b ^ 0xFF) for b in data)
        start, code = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not (fault is not None and fault.kind == "ignore_range"):
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                rec.status = 416
                return
            code = 206
        body = data[start:]
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Connection", "close")
        self.end_headers()
        rec.status = code
        if head:
            return
        self.close_connection = True
        if fault is not None and fault.kind in ("reset", "truncate", "stall"):
            part = body[: fault.after]
            self.wfile.write(part)
            self.wfile.flush()
            rec.sent = len(part)
            if fault.kind == "stall":
                srv._stop.wait(min(fault.seconds, 30.0))
            if fault.kind == "reset":
                # SO_LINGER 0: close sends RST, as a dropped connection does
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        try:
            self.wfile.write(body)
            rec.sent = len(body)
        except OSError:
            pass

    def _status(self, rec: Record, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        rec.status = code


class FaultServer:
    """Context manager: ``with FaultServer() as srv: srv.add("/f", data, [Fault("reset", after=10)])``."""

    def __init__(self, max_requests: int = 200):
        self.files: dict[str, bytes] = {}
        self.plans: dict[str, list[Fault]] = {}
        self.log: list[Record] = []
        self.max_requests = max_requests
        self.overflow = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, path: str, data: bytes | None, faults=()) -> str:
        """Serve ``data`` at ``path`` (None: only the fault plan, e.g. a 404); return its URL."""
        if data is not None:
            self.files[path] = bytes(data)
        self.plans[path] = list(faults)
        return self.url(path)

    def url(self, path: str = "") -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def requests(self, path: str | None = None, method: str = "GET") -> list[Record]:
        with self._lock:
            return [r for r in self.log if (path is None or r.path == path) and r.method == method]

    def bytes_sent(self, path: str) -> int:
        return sum(r.sent for r in self.requests(path))

    def _next(self, path: str, head: bool) -> Fault | None:
        with self._lock:
            if len(self.log) >= self.max_requests:
                self.overflow = True
                return Fault("overflow")
            if head:  # probes do not consume the plan
                return None
            plan = self.plans.get(path, [])
            if not plan:
                return None
            return plan[0] if plan[0].always else plan.pop(0)

    def _record(self, rec: Record) -> None:
        with self._lock:
            self.log.append(rec)

    def __enter__(self) -> "FaultServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@pytest.fixture
def fault_server():
    """A started :class:`FaultServer`, stopped at teardown."""
    with FaultServer() as srv:
        yield srv

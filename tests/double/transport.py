"""HTTP as Go's net/http speaks it: the handler's plumbing (bodies, chunked streams,
dropped connections, waiting that notices a client leaving) and the threaded server."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import socketserver
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tests.double.names import InvalidName, ModelName, parse_name
from tests.double.state import Event, RecordedRequest
from tests.double.wire import go_json

if TYPE_CHECKING:
    from tests.double.server import OllamaTestServer

JSON_CT = "application/json; charset=utf-8"
PLAIN_JSON_CT = "application/json"  # /v1/* and `stream: false` answers (set before gin's)
NDJSON_CT = "application/x-ndjson"
TEXT_CT = "text/plain; charset=utf-8"
NOT_FOUND_TEXT = b"404 page not found"


class ApiError(Exception):
    """An answer `{"error": message}` with this status (what gin's AbortWithStatusJSON sends)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Dropped(Exception):
    """The connection was closed on purpose (fault)."""


class ClientGone(Exception):
    """The client went away."""


class Stopping(Exception):
    """The server is shutting down."""


class BaseHandler(BaseHTTPRequestHandler):
    """What every endpoint writes with: plain answers, NDJSON/SSE streams in chunked
    encoding, a dropped connection, silence. `rec` is the request being answered."""

    # Go's net/http (and so Ollama) sets TCP_NODELAY; without it small answers wait
    # ~40 ms for a delayed ACK (Nagle), which no real server shows.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: ThreadedServer
    rec: RecordedRequest
    _headers_sent: bool

    # ---- plumbing ----------------------------------------------------------------------
    @property
    def d(self) -> OllamaTestServer:
        return self.server.double

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.track(self.connection, add=False)

    def handle(self) -> None:
        with contextlib.suppress(OSError, Dropped, ClientGone, Stopping):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.d.verbose:
            super().log_message(format, *args)

    def version_string(self) -> str:
        return ""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # ---- writing ---------------------------------------------------------------------
    def _head(self, status: int, ctype: str | None, length: int | None = None,
              extra: dict[str, str] | None = None, chunked: bool = False) -> None:
        self.send_response_only(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Date", self.date_time_string())
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            self.send_header("Content-Length", str(length))
        self.rec.status = status  # before the client can see it
        self._headers_sent = True
        try:
            self.end_headers()
        except OSError:
            raise ClientGone() from None

    def _write(self, data: bytes) -> None:
        # Counted before sending: a client that has read everything sees the final count.
        self.rec.bytes_sent += len(data)
        self.d._count_bytes(self.rec.path, len(data))
        try:
            self.wfile.write(data)
        except OSError:
            self.rec.bytes_sent -= len(data)
            self.d._count_bytes(self.rec.path, -len(data))
            raise ClientGone() from None

    def send_bytes(self, status: int, data: bytes, ctype: str | None,
                   extra: dict[str, str] | None = None) -> None:
        self._head(status, ctype, len(data), extra)
        if self.command != "HEAD" and data:
            self._write(data)

    def send_json(self, status: int, obj: Any, extra: dict[str, str] | None = None,
                  ctype: str = JSON_CT) -> None:
        self.send_bytes(status, go_json(obj).encode(), ctype, extra)

    def send_not_found(self) -> None:
        self.send_bytes(404, NOT_FOUND_TEXT, "text/plain")

    def start_stream(self, ctype: str = NDJSON_CT) -> None:
        self._head(200, ctype, chunked=True)

    def chunk(self, data: bytes) -> None:
        if data:
            self._write(b"%x\r\n" % len(data) + data + b"\r\n")

    def line(self, obj: Any) -> None:
        self.chunk((go_json(obj) + "\n").encode())

    def end_stream(self) -> None:
        self._write(b"0\r\n\r\n")

    def drop(self) -> None:
        """Close the connection now: FIN, no final chunk, no further bytes."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        raise Dropped()

    def wait(self, seconds: float | None) -> None:
        """Send nothing for `seconds` (None: until the client goes); notice a client that
        disconnects and a server that stops."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if self.d._stopping.is_set():
                raise Stopping()
            remaining = 0.05 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return
            step = min(0.05, remaining)
            try:
                readable, _, _ = select.select([self.connection], [], [], step)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    raise ClientGone()
            except (OSError, ValueError):
                raise ClientGone() from None
            if readable:
                self.d._stopping.wait(step)


    # ---- reading -----------------------------------------------------------------------
    def _json(self) -> dict[str, Any]:
        body = self.rec.body
        if not body.strip():
            raise ApiError(400, "missing request body")
        if not isinstance(self.rec.json, dict):
            try:
                json.loads(body)
            except ValueError:
                first = body.strip()[:1].decode(errors="replace")
                raise ApiError(400, f"invalid character '{first}' looking for beginning of "
                                     "value") from None
            raise ApiError(400, "json: cannot unmarshal into Go value of type api.Request")
        return self.rec.json

    def _valid_name(self, raw: str) -> ModelName:
        try:
            return parse_name(raw)
        except InvalidName:
            raise ApiError(400, "invalid model name") from None

    def _request_name(self, req: dict[str, Any]) -> tuple[str, ModelName]:
        """The model a request names (`model`, or the older `name`), as given and parsed;
        HTTP 400 `invalid model name` when Ollama's rules refuse it."""
        raw = req.get("model") or req.get("name") or ""
        return raw, self._valid_name(raw)

    # ---- event streams (pull, push, create) ------------------------------------------------
    def _consume_events(self, events: Iterator[Event], stream: bool) -> str | None:
        """Write a pull-like event stream; return the error text if one came."""
        error = None
        try:
            for ev in events:
                if isinstance(ev, dict):
                    if "error" in ev:
                        error = ev["error"]
                    if stream:
                        self.line(ev)
                elif ev[0] == "garbage":
                    if stream:
                        self.chunk((ev[1] + "\n").encode())
                elif ev[0] == "stall":
                    self.wait(ev[1])
                elif ev[0] == "drop":
                    events.close()  # type: ignore[attr-defined]  # settle state first
                    self.drop()
        finally:
            events.close()  # type: ignore[attr-defined]
        return error

    def _stream_or_single(self, events: Iterator[Event], req: dict[str, Any]) -> None:
        stream = req.get("stream") is not False
        if stream:
            self.start_stream()
            self._consume_events(events, True)
            self.end_stream()
            return
        error = self._consume_events(events, False)
        if error:
            self.send_json(500, {"error": error}, ctype=PLAIN_JSON_CT)
        else:
            self.send_json(200, {"status": "success"}, ctype=PLAIN_JSON_CT)


class ThreadedServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    double: Any

    def server_bind(self) -> None:  # no reverse DNS lookup (HTTPServer calls getfqdn)
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def track(self, conn: socket.socket, add: bool) -> None:
        with self.double._lock:
            if add:
                self.double._connections.add(conn)
            else:
                self.double._connections.discard(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (OSError, Dropped, ClientGone, Stopping)):
            super().handle_error(request, client_address)


class ThreadedServer6(ThreadedServer):
    address_family = socket.AF_INET6


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on right now (for servers started later, or a
    closed port to connect to)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

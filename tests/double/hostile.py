"""A hostile server on loopback: it misbehaves on the paths it is told to, and passes
every other request to an upstream (an `OllamaTestServer`), relaying the answer.

So a test gets a real-looking Ollama (and registry) in which one endpoint is broken the
way a hostile or broken server breaks it::

    with OllamaTestServer() as ollama, HostileServer(ollama.url) as srv:
        srv.on("/api/tags", endless_json())
        run_cli("check", "--host", srv.url)

Behaviours (each a function `(handler) -> None` that answers one request):

- ``endless_json(prefix, item)``  200, chunked, `prefix` then `item` forever, as fast as
  the client reads (``/api/tags`` that never ends)
- ``many_models(count)``          200, a well-formed `/api/tags` listing `count` models
- ``gzip_bomb(prefix, decoded)``  200, ``Content-Encoding: gzip``: `prefix` then zeros,
  `decoded` bytes once decompressed (4 GiB by default), ~1 KB sent per MiB of it
- ``garbage_gzip()``              200, ``Content-Encoding: gzip``, a body that is not gzip
- ``deep_json(depth)``            200, ``[[[...]]]`` nested `depth` deep
- ``slow_headers(interval)``      the status line and headers one byte every `interval` s
- ``slow_body(body, interval)``   headers at once, then the body one byte per `interval` s
- ``endless_headers()``           a status line, then header lines forever
- ``ignore_range()``              passed upstream *without* its Range header: the whole
  blob comes back with 200, as from a registry or mirror that ignores Range
- ``answer(status, body, ctype)`` a fixed answer (HTML where JSON is expected, nonsense
  JSON, ...)
- ``after(seconds)``              wait, then pass upstream (a server that starts late:
  refuses connections meanwhile is `HostileServer(start_after=...)`)

What the tool does against it (exit code, output, wall time, peak memory) is measured
with `tests.tool.run_cli`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import http.client
import socketserver
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MIB, GIB = 1 << 20, 1 << 30
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-connection", "content-length", "host"}

Behaviour = Callable[["_Handler"], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def version_string(self) -> str:
        return "hostile"

    def handle(self) -> None:
        with contextlib.suppress(OSError):
            super().handle()

    def _any(self) -> None:
        self.close_connection = True
        self.body = self._read_body()
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        owner.hits.append((self.command, path))
        behaviour = next((b for pattern, b in owner.rules if fnmatch.fnmatchcase(path, pattern)),
                         None)
        (behaviour or relay)(self)

    do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _any

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- writing helpers ---------------------------------------------------------------
    def head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response_only(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.server.owner.count(self.path, len(data))

    def end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def alive(self) -> bool:
        return not self.server.owner.stopping.is_set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: HostileServer

    def server_bind(self) -> None:  # no reverse DNS lookup (HTTPServer calls getfqdn)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class HostileServer:
    def __init__(self, upstream: str | None = None, *, port: int = 0) -> None:
        self.upstream = upstream
        self.port = port
        self.rules: list[tuple[str, Behaviour]] = []
        self.hits: list[tuple[str, str]] = []
        self.sent: dict[str, int] = {}  # body bytes written per path (chunked answers)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd: _Server | None = None

    def on(self, pattern: str, behaviour: Behaviour) -> HostileServer:
        """Answer paths matching `pattern` (fnmatch) this way; the first rule wins."""
        self.rules.append((pattern, behaviour))
        return self

    def count(self, path: str, n: int) -> None:
        with self._lock:
            key = path.split("?", 1)[0]
            self.sent[key] = self.sent.get(key, 0) + n

    def sent_to(self, pattern: str) -> int:
        """Body bytes sent for paths matching `pattern` (what the client was made to read,
        at most: a client that hangs up stops it)."""
        with self._lock:
            return sum(n for path, n in self.sent.items() if fnmatch.fnmatchcase(path, pattern))

    def start(self) -> HostileServer:
        self._httpd = type("_Bound", (_Server,), {"owner": self})(("127.0.0.1", self.port),
                                                                  _Handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True, name=f"hostile:{self.port}").start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# --- behaviours ---------------------------------------------------------------------------


def relay(h: _Handler, *, drop_range: bool = False) -> None:
    """Pass the request upstream and stream the answer back (chunked)."""
    upstream = h.server.owner.upstream
    if upstream is None:
        h.head(404, {"Content-Type": "text/plain", "Content-Length": "9"})
        h.wfile.write(b"not found")
        return
    host, port = upstream.split("://", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
    if drop_range:
        headers = {k: v for k, v in headers.items() if k.lower() != "range"}
    try:
        conn.request(h.command, h.path, body=h.body or None, headers=headers)
        answer = conn.getresponse()
        passed = {k: v for k, v in answer.getheaders() if k.lower() not in _HOP}
        h.head(answer.status, {**passed, "Transfer-Encoding": "chunked"})
        if h.command == "HEAD":
            return
        while h.alive():
            data = answer.read1(64 * 1024)
            if not data:
                break
            h.chunk(data)
        h.end()
    finally:
        conn.close()


def ignore_range() -> Behaviour:
    return lambda h: relay(h, drop_range=True)


def answer(status: int, body: bytes | str, ctype: str = "application/json",
           headers: dict[str, str] | None = None) -> Behaviour:
    data = body.encode() if isinstance(body, str) else body

    def behave(h: _Handler) -> None:
        h.head(status, {"Content-Type": ctype, "Content-Length": str(len(data)),
                        **(headers or {})})
        h.wfile.write(data)
        h.server.owner.count(h.path, len(data))

    return behave


def endless_json(prefix: bytes = b'{"models":[', item: bytes | None = None) -> Behaviour:
    entry = item or (b'{"name":"m:latest","model":"m:latest","size":1,"digest":"'
                     + b"ab" * 32 + b'","details":{"family":"llama"}},')

    def behave(h: _Handler) -> None:
        h.head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        h.chunk(prefix)
        block = entry * max(1, (64 * 1024) // len(entry))
        while h.alive():
            h.chunk(block)

    return behave


def many_models(count: int = 1_000_000) -> Behaviour:
    """A well-formed `/api/tags` listing `count` models (~350 MB for a million)."""

    def behave(h: _Handler) -> None:
        h.head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        h.chunk(b'{"models":[')
        sent = 0
        while sent < count and h.alive():
            batch = min(1000, count - sent)
            h.chunk(b",".join(b'{"name":"m%d:latest","model":"m%d:latest","size":%d,'
                              b'"digest":"%s","details":{"family":"llama"}}'
                              % (i, i, i, b"ab" * 32) for i in range(sent, sent + batch))
                    + (b"," if sent + batch < count else b""))
            sent += batch
        h.chunk(b"]}")
        h.end()

    return behave


def gzip_bomb(prefix: bytes = b'{"version":"', decoded: int = 4 * GIB) -> Behaviour:
    def behave(h: _Handler) -> None:
        h.head(200, {"Content-Type": "application/json", "Content-Encoding": "gzip",
                     "Transfer-Encoding": "chunked"})
        packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        h.chunk(packer.compress(prefix))
        zeros = b"0" * MIB
        for _ in range(decoded // MIB):
            if not h.alive():
                return
            h.chunk(packer.compress(zeros))
        h.chunk(packer.flush())
        h.end()

    return behave


def garbage_gzip() -> Behaviour:
    return answer(200, b"\x1f\x8b\x08\x00garbage, not deflate at all" * 4,
                  headers={"Content-Encoding": "gzip"})


def deep_json(depth: int = 100_000) -> Behaviour:
    return answer(200, b"[" * depth + b"]" * depth)


def slow_headers(interval: float = 1.0, status: bytes = b"HTTP/1.1 200 OK\r\n") -> Behaviour:
    def behave(h: _Handler) -> None:
        _trickle(h, status + b"Content-Type: application/json\r\nX-Pad: " + b"a" * 4000,
                 interval)

    return behave


def slow_body(body: bytes = b'{"models":[]}', interval: float = 1.0) -> Behaviour:
    def behave(h: _Handler) -> None:
        padded = body + b" " * 100_000  # long enough to outlast any deadline
        h.head(200, {"Content-Type": "application/json", "Content-Length": str(len(padded))})
        _trickle(h, padded, interval)

    return behave


def _trickle(h: _Handler, data: bytes, interval: float) -> None:
    """One byte every `interval` seconds: each arrives well within any read timeout."""
    for byte in data:
        if not h.alive():
            return
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        time.sleep(interval)


def endless_headers() -> Behaviour:
    def behave(h: _Handler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
        while h.alive():
            h.wfile.write(line)

    return behave


def after(seconds: float) -> Behaviour:
    def behave(h: _Handler) -> None:
        time.sleep(seconds)
        relay(h)

    return behave



@contextlib.contextmanager
def hostile(upstream: str | None = None) -> Iterator[HostileServer]:
    with HostileServer(upstream) as srv:
        yield srv


__all__ = ["HostileServer", "relay", "ignore_range", "answer",
           "endless_json", "many_models", "gzip_bomb", "garbage_gzip", "deep_json", "slow_headers",
           "slow_body", "endless_headers", "after", "hostile"]

"""A bandwidth-limiting front for the real registry, so that a pull can be caught halfway.

It forwards every request to the registry's redirecting front (127.0.0.1:BACKEND) and
sends response bodies at most `rate` bytes per second (all connections together). The
registry redirects blob downloads to `http://localhost:BACKEND/...`; those `Location`
headers are rewritten to this front's port, so that the download itself comes through
here too. `blob_bytes` counts the blob bytes sent, to tell whether a server is still
downloading after its client went away.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailers", "transfer-encoding", "upgrade"}
CHUNK = 64 * 1024


class _Bucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.lock = threading.Lock()
        self.next_free = time.monotonic()

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + n / self.rate
        delay = start - now
        if delay > 0:
            time.sleep(delay)


class ThrottledFront:
    def __init__(self, backend_port: int, rate: float) -> None:
        self.backend_port = backend_port
        self.bucket = _Bucket(rate)
        self.blob_bytes = 0
        self._count_lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection("127.0.0.1", front.backend_port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    self.send_response_only(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() in _HOP:
                            continue
                        if key.lower() == "location":
                            value = value.replace(f":{front.backend_port}/",
                                                  f":{front.port}/", 1)
                        self.send_header(key, value)
                    blob = "/blobs/" in self.path and self.command == "GET"
                    if response.getheader("Content-Length") is None:
                        data = response.read()
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    while chunk := response.read(CHUNK):
                        if blob:
                            front.bucket.take(len(chunk))
                        self.wfile.write(chunk)
                        if blob:
                            with front._count_lock:
                                front.blob_bytes += len(chunk)
                except (OSError, http.client.HTTPException):
                    self.close_connection = True  # the client went away: so do we
                finally:
                    conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ThrottledFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

"""A bandwidth-limiting front, so that a transfer can be caught halfway.

It forwards every request to 127.0.0.1:BACKEND and slows one kind of body to at most
`rate` bytes per second (all connections together):

- downloads (the default), in front of the real registry's redirecting front: blob
  bodies it sends back. The registry redirects blob downloads to
  `http://localhost:BACKEND/...`; those `Location` headers are rewritten to this front's
  port, so that the download itself comes through here too. `blob_bytes` counts the blob
  bytes sent, to tell whether a server is still downloading after its client went away.
- uploads (`uploads=True`), in front of an Ollama server: the bodies of
  `POST /api/blobs/<digest>` it receives. Each upload is recorded in an `UploadLog`
  (shareable by several fronts): its digest, the bytes that came through, whether it
  arrived whole, and the most uploads in flight at once.

Answers without a length (Ollama's streams) are relayed chunk by chunk as they come.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass
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


@dataclass
class Upload:
    digest: str
    size: int  # the Content-Length announced
    received: int = 0  # bytes that came through to the server
    whole: bool = False  # all of them, and the server answered


class UploadLog:
    """Blob uploads seen by one or more fronts, in the order they started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uploads: list[Upload] = []
        self.active = 0
        self.most_at_once = 0

    def start(self, digest: str, size: int) -> Upload:
        with self.lock:
            upload = Upload(digest, size)
            self.uploads.append(upload)
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
            return upload

    def end(self) -> None:
        with self.lock:
            self.active -= 1

    def wait_idle(self, timeout: float = 30) -> None:
        """Until no upload is in flight: what a client had sent before it went away still
        drains through a front (socket buffers) before the server sees the cut."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.active, "an upload is still going through the front"

    def of(self, digest: str) -> list[Upload]:
        with self.lock:
            return [u for u in self.uploads if u.digest == digest]

    def snapshot(self) -> list[Upload]:
        with self.lock:
            return [Upload(u.digest, u.size, u.received, u.whole) for u in self.uploads]


class ThrottledFront:
    def __init__(self, backend_port: int, rate: float, *, uploads: bool = False,
                 log: UploadLog | None = None) -> None:
        self.backend_port = backend_port
        self.bucket = _Bucket(rate)
        self.uploads = uploads
        self.log = log or UploadLog()
        self.blob_bytes = 0
        self._count_lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                upload = front.uploads and self.command == "POST" \
                    and self.path.startswith("/api/blobs/")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection("127.0.0.1", front.backend_port, timeout=120)
                try:
                    if upload:
                        if not self._relay_upload(conn, length, headers):
                            return
                    else:
                        body = self.rfile.read(length) if length else None
                        conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    self._relay_answer(response)
                except (OSError, http.client.HTTPException):
                    self.close_connection = True  # the client went away: so do we
                finally:
                    conn.close()

            def _relay_upload(self, conn: http.client.HTTPConnection, length: int,
                              headers: dict[str, str]) -> bool:
                """Send the body on at the front's rate; False when the client stopped
                sending before its end (the server then sees the upload cut off)."""
                record = front.log.start(self.path.rsplit("/", 1)[-1], length)
                try:
                    conn.putrequest("POST", self.path, skip_host=True,
                                    skip_accept_encoding=True)
                    for key, value in headers.items():
                        conn.putheader(key, value)
                    conn.endheaders()
                    left = length
                    while left > 0:
                        data = self.rfile.read1(min(CHUNK, left))
                        if not data:
                            self.close_connection = True
                            return False
                        front.bucket.take(len(data))
                        conn.send(data)
                        left -= len(data)
                        record.received += len(data)
                    record.whole = True
                    return True
                finally:
                    front.log.end()

            def _relay_answer(self, response: http.client.HTTPResponse) -> None:
                self.send_response_only(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() in _HOP:
                        continue
                    if key.lower() == "location":
                        value = value.replace(f":{front.backend_port}/", f":{front.port}/", 1)
                    self.send_header(key, value)
                blob = "/blobs/" in self.path and self.command == "GET" and not front.uploads
                if self.command == "HEAD" or response.status in (204, 304):
                    self.end_headers()
                    return
                if response.getheader("Content-Length") is None:  # a stream: as it comes
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    while data := response.read1(CHUNK):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.end_headers()
                while chunk := response.read(CHUNK):
                    if blob:
                        front.bucket.take(len(chunk))
                    self.wfile.write(chunk)
                    if blob:
                        with front._count_lock:
                            front.blob_bytes += len(chunk)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if uploads:  # a small window: a client cannot get megabytes ahead of the server
            self.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def __enter__(self) -> ThrottledFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

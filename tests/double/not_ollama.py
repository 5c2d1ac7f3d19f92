"""Something else on the port: an nginx-like web server, a TCP service that sends a
banner and closes, or one that never answers."""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.double.transport import ThreadedServer, ThreadedServer6, url_for

NGINX_INDEX = b"""<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""


def _nginx_error(code: int, reason: str) -> bytes:
    return (f"<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>"
            f"{code} {reason}</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n</body>\r\n"
            f"</html>\r\n").encode()


class _NginxHandler(BaseHTTPRequestHandler):
    # Go's net/http (and so Ollama) sets TCP_NODELAY; without it small answers wait
    # ~40 ms for a delayed ACK (Nagle), which no real server shows.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "nginx/1.24.0"
    sys_version = ""
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def version_string(self) -> str:
        return "nginx/1.24.0"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.owner._lock:
            self.server.owner.requests.append((self.command, self.path, body))
        path = urlsplit(self.path).path
        if path in ("/", "/index.html") and self.command in ("GET", "HEAD"):
            status, data = 200, NGINX_INDEX
        elif path in ("/", "/index.html"):
            status, data = 405, _nginx_error(405, "Not Allowed")
        else:
            status, data = 404, _nginx_error(404, "Not Found")
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "keep-alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer


class NotOllamaServer:
    """Something else listening on a port.

    kind="nginx": a web server (`GET /` -> 200 `Welcome to nginx!` with `Server: nginx/1.24.0`,
    anything under /api -> 404 HTML). kind="raw": a TCP service that sends an SSH banner
    (`SSH-2.0-OpenSSH_9.2`) and closes. kind="silent": accepts connections and never answers
    (for timeouts)."""

    def __init__(self, kind: str = "nginx", host: str = "127.0.0.1", port: int = 0,
                 banner: bytes = b"SSH-2.0-OpenSSH_9.2\r\n") -> None:
        if kind not in ("nginx", "raw", "silent"):
            raise ValueError(f"unknown kind {kind!r}")
        self.kind, self.host, self.port, self.banner = kind, host, port, banner
        self.requests: list[Any] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._sock: socket.socket | None = None
        self._held: list[socket.socket] = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return url_for(self.host, self.port)

    def start(self) -> NotOllamaServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._stop.clear()
        if self.kind == "nginx":
            base = ThreadedServer6 if family == socket.AF_INET6 else ThreadedServer
            cls = type("_NginxServer", (base,), {"owner": self})
            self._httpd = cls((self.host, self.port), _NginxHandler)
            self.port = self._httpd.server_address[1]
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.05}, daemon=True)
        else:
            self._sock = socket.socket(family, socket.SOCK_STREAM)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((self.host, self.port))
            self._sock.listen(16)
            self._sock.settimeout(0.05)
            self.port = self._sock.getsockname()[1]
            self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self.connections += 1
            if self.kind == "raw":
                with contextlib.suppress(OSError):
                    conn.sendall(self.banner)
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            else:
                self._held.append(conn)

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for conn in self._held:
            with contextlib.suppress(OSError):
                conn.close()
        self._held.clear()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def __enter__(self) -> NotOllamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

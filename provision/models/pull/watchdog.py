"""The stall watchdog: one thread watches every pull stream in flight.

A stream that makes no progress for `stall_timeout` seconds (silence, or the same numbers
repeated, as Ollama does while a download is stuck) is dropped by shutting its socket
down, which wakes the reader blocked in recv(); so is every stream on Ctrl-C. Verifying
a finished download is silent on the server (it hashes every blob): that silence is
allowed for, at a hashing speed of at least VERIFY_BYTES_PER_S.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

# Verifying a finished download is silent on the server (it hashes every blob): allow
# at least this hashing speed before calling the silence a stall (a slow disk, a huge
# model) so that a 40 GB model is not retried in a loop while it is being verified.
VERIFY_BYTES_PER_S = 50e6


class Watch:
    """What the watchdog knows about one attempt; written by its reader thread."""

    __slots__ = ("sock", "last_line", "last_progress", "downloading", "verifying",
                 "expected_bytes", "stalled", "cancelled", "done")

    def __init__(self) -> None:
        now = time.monotonic()
        self.sock: socket.socket | None = None
        self.last_line = now  # any line (or the request start)
        self.last_progress = now  # bytes moved forward, a new blob, a new status
        self.downloading = False  # the current blob is incomplete: only bytes count
        self.verifying = False  # the server hashes blobs silently
        self.expected_bytes = 0
        self.stalled = False
        self.cancelled = False
        self.done = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore trace hook: keep the socket of every new connection (or TLS on it)."""
        if event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            stream = info.get("return_value")
            sock = getattr(stream, "get_extra_info", lambda _: None)("socket")
            if isinstance(sock, socket.socket):
                self.sock = sock
                if self.stalled or self.cancelled:
                    self.drop()

    def drop(self) -> None:
        """Wake a reader blocked in recv(): shutdown does, close from another thread doesn't."""
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing to wake
                sock.shutdown(socket.SHUT_RDWR)


class Watchdog:
    def __init__(self, stall_timeout: float, cancel: threading.Event) -> None:
        self.stall_timeout = stall_timeout
        self.cancel = cancel
        self._watches: set[Watch] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pull-watchdog", daemon=True)
        self._interval = max(0.02, min(0.25, stall_timeout / 4))

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.add(watch)

    def remove(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            with self._lock:
                watches = list(self._watches)
            for watch in watches:
                if watch.done:
                    continue
                if self.cancel.is_set():
                    watch.cancelled = True
                    watch.drop()
                elif not watch.stalled and self._stalled(watch, now):
                    watch.stalled = True
                    watch.drop()

    def _stalled(self, watch: Watch, now: float) -> bool:
        if watch.downloading:
            # Ollama repeats the same numbers every 60 ms while a download is stuck:
            # lines alone are no sign of life, bytes are.
            return now - watch.last_progress > self.stall_timeout
        limit = self.stall_timeout
        if watch.verifying:
            limit += watch.expected_bytes / VERIFY_BYTES_PER_S
        return now - watch.last_line > limit

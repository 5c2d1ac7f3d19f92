"""`OllamaTestServer`: the double's knobs, its lifecycle, and the parts put together."""

from __future__ import annotations

import contextlib
import fnmatch
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from tests.double.blobs import Blob
from tests.double.catalog import CATALOG, CatalogModel
from tests.double.create import CreateEngine
from tests.double.faults import Fault
from tests.double.handler import Handler
from tests.double.memory import MemoryModel
from tests.double.state import Download, Installed, Loaded, RecordedRequest
from tests.double.transport import ThreadedServer, ThreadedServer6, url_for
from tests.double.wire import GIB


class OllamaTestServer(CreateEngine, MemoryModel):
    """A threaded HTTP server on loopback speaking Ollama's API and its registry's."""

    def __init__(
        self,
        version: str = "0.13.5",
        installed: Iterable[str] | None = None,
        download_rate: float | None = 50e9,
        tick: float = 0.005,
        memory: int = 16 * GIB,
        vram: list[int] | None = None,
        registry_auth: bool = False,
        catalog: dict[str, CatalogModel] | Iterable[CatalogModel] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens_per_second: float | None = None,
        gpu_bandwidth: float = 300e9,
        cpu_bandwidth: float = 50e9,
        cached_lines: int = 1,
        blob_redirect: bool = False,
        load_delay: float = 0.0,
        token_delay: float = 0.0,
        num_parallel: int = 1,
        verbose: bool = False,
        upstream: OllamaTestServer | None = None,
    ) -> None:
        self.version = version
        self.download_rate = download_rate
        self.tick = tick
        self.memory = int(memory)
        self.vram = [8 * GIB] if vram is None else [int(v) for v in vram]
        self.registry_auth = registry_auth
        self.host = host
        self.port = port
        self.tokens_per_second = tokens_per_second
        self.gpu_bandwidth = gpu_bandwidth
        self.cpu_bandwidth = cpu_bandwidth
        self.cached_lines = cached_lines
        self.blob_redirect = blob_redirect
        self.load_delay = load_delay
        self.token_delay = token_delay
        self.num_parallel = num_parallel
        self.verbose = verbose

        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.partial: dict[str, int] = {}
        self.bytes_served = 0
        self.blob_bytes_served = 0

        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadedServer | None = None
        self._thread: threading.Thread | None = None
        self._catalog: dict[tuple[str, str, str, str], CatalogModel] = {}
        models = (CATALOG if catalog is None else catalog)
        for m in (models.values() if isinstance(models, dict) else models):
            self._catalog[m.key] = m
        self._revisions: dict[tuple[str, str, str, str], int] = {}
        if upstream is not None:
            # Added for the fleet tests: a host whose registry is another double shares
            # its catalog and revisions, so `upstream.update_model(name)` makes this
            # host's copy stale and its next pull fetch the new weights.
            self._catalog = upstream._catalog
            self._revisions = upstream._revisions
        self._models: dict[tuple[str, str, str, str], Installed] = {}
        self._present: set[str] = set()
        self._local: dict[str, Blob] = {}
        self._registry_index: dict[str, Blob] = {}
        self._downloads: dict[str, Download] = {}
        self._loaded: dict[tuple[str, str, str, str], Loaded] = {}
        self._tokens: dict[str, set[str]] = {}
        now = time.time_ns()
        names = list(installed or [])
        for i, raw in enumerate(names):
            self.install(raw, modified_ns=now - (len(names) - i) * 1_000_000_000)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> OllamaTestServer:
        if self._httpd is not None:
            return self
        cls = ThreadedServer6 if ":" in self.host else ThreadedServer
        cls_with = type("_BoundServer", (cls,), {"double": self})
        self._httpd = cls_with((self.host, self.port), Handler)
        self.port = self._httpd.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"ollama-double:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> OllamaTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (no trailing slash); `http://[::1]:PORT` for IPv6."""
        return url_for(self.host, self.port)

    @property
    def registry_url(self) -> str:
        """Base of the registry endpoints (`<registry_url>/v2/...`): the same server."""
        return self.url

    def add_fault(self, kind: str, **kwargs: Any) -> Fault:
        fault = Fault(kind, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if fnmatch.fnmatchcase(r.path, path)
                    and (method is None or r.method == method)]

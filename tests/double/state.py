"""What a double holds: recorded requests, installed and loaded models, downloads in
flight, and the bookkeeping every part of it shares (lock, faults, byte counts)."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Union

from tests.double.blobs import MT_MODEL, MT_PARAMS, Blob
from tests.double.catalog import CatalogModel
from tests.double.faults import Fault
from tests.double.names import ModelName
from tests.double.wire import version_tuple


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case keys
    body: bytes
    json: Any
    status: int = 0  # status sent (0: none, e.g. dropped)
    bytes_sent: int = 0  # body bytes sent
    time: float = field(default_factory=time.time)


Event = Union[dict, tuple]



@dataclass(eq=False)
class Installed:
    name: ModelName
    source: CatalogModel
    revision: int
    modified_ns: int
    layers: list[Blob] | None = None
    config: Blob | None = None
    manifest: bytes = b""
    digest: str = ""
    parent: str = ""

    @property
    def size(self) -> int:
        assert self.layers is not None and self.config is not None
        return sum(b.size for b in self.layers) + self.config.size

    @property
    def weights(self) -> Blob:
        assert self.layers is not None
        return next(b for b in self.layers if b.media_type == MT_MODEL)

    def layer_text(self, media_type: str) -> str:
        assert self.layers is not None
        return "\n".join(b.text() for b in self.layers if b.media_type == media_type)

    def params(self) -> dict[str, Any]:
        text = self.layer_text(MT_PARAMS)
        return json.loads(text) if text.strip() else {}

    def details(self, parent: bool = False) -> dict[str, Any]:
        return {
            "parent_model": self.parent if parent else "",
            "format": "gguf",
            "family": self.source.family,
            "families": [self.source.family],
            "parameter_size": self.source.param_size,
            "quantization_level": self.source.quant,
        }


@dataclass(eq=False)
class Loaded:
    key: tuple[str, str, str, str]
    name: str
    size: int
    size_vram: int
    context_length: int
    expires_ns: int
    digest: str
    details: dict[str, Any]
    tokens_per_second: float
    weights: str = ""  # the weights blob's digest: what the runner holds


@dataclass(eq=False)
class Download:
    digest: str
    total: int
    completed: float
    refs: int = 0
    last: float = 0.0
    hold: int = 0


@dataclass
class Placement:
    size: int  # weights + KV + graph
    size_vram: int
    cpu_bytes: int
    context_length: int
    tokens_per_second: float


class DoubleState:
    """The state every part of a double shares (set up by `OllamaTestServer.__init__`),
    the version it claims, and the bookkeeping of requests, bytes and faults."""

    version: str
    download_rate: float | None
    tick: float
    memory: int
    vram: list[int]
    registry_auth: bool
    tokens_per_second: float | None
    gpu_bandwidth: float
    cpu_bandwidth: float
    cached_lines: int
    blob_redirect: bool
    load_delay: float
    token_delay: float
    num_parallel: int
    verbose: bool
    url: str

    faults: list[Fault]
    requests: list[RecordedRequest]
    partial: dict[str, int]  # digest -> bytes of an interrupted download kept
    bytes_served: int
    blob_bytes_served: int

    _lock: threading.RLock
    _stopping: threading.Event
    _connections: set[socket.socket]
    _catalog: dict[tuple[str, str, str, str], CatalogModel]
    _revisions: dict[tuple[str, str, str, str], int]
    _models: dict[tuple[str, str, str, str], Installed]
    _present: set[str]  # digests of the blobs this server has
    _local: dict[str, Blob]
    _registry_index: dict[str, Blob]
    _downloads: dict[str, Download]
    _loaded: dict[tuple[str, str, str, str], Loaded]
    _tokens: dict[str, set[str]]

    # ---- the version claimed -------------------------------------------------------------
    def set_version(self, version: str) -> None:
        self.version = version

    @property
    def supports_responses(self) -> bool:
        return version_tuple(self.version) >= (0, 13, 4)

    @property
    def llama_server(self) -> bool:
        """Ollama 0.30+ (llama-server engine): the shapes seen on a real 0.32.15."""
        return version_tuple(self.version) >= (0, 30, 0)

    # ---- bookkeeping --------------------------------------------------------------
    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def _count_bytes(self, path: str, n: int) -> None:
        with self._lock:
            self.bytes_served += n
            if path.startswith(("/v2/", "/cdn/")):
                self.blob_bytes_served += n

    def _matching_faults(self, kinds: tuple[str, ...], path: str,
                         name: ModelName | None) -> list[Fault]:
        with self._lock:
            return [f for f in self.faults
                    if f.kind in kinds and not f.spent and f.matches(path, name)]

    def _consume(self, fault: Fault) -> bool:
        with self._lock:
            if fault.spent:
                return False
            fault.fired += 1
            return True

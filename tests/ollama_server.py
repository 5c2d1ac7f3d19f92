"""A faithful test double of an Ollama server *and* of its registry, on loopback.

Every test of the project talks real HTTP to it. It reproduces what a real Ollama
(0.12.9 raw captures in `/work/shared/reference/captures-0.12.9/`, facts in
`ollama-api.md` / `hardware.md`) puts on the wire: field names and order, fields left
out when zero, Go's JSON encoding (`<` written `\\u003c`, `10000` not `10000.0`),
`application/x-ndjson` streams in chunked transfer encoding, one progress line per blob
per tick, the error texts.

Usage::

    from tests.ollama_server import OllamaTestServer, Fault

    with OllamaTestServer(installed=["llama3.2:1b"]) as srv:
        httpx.get(srv.url + "/api/tags")
        srv.add_fault("drop", after_bytes=10**9)      # next pull drops mid-blob
        ...

    python -m tests.ollama_server --port 11434 --installed llama3.2:1b --rate 100e6

Sections of this module: helpers (Go-compatible JSON, times, sizes) - GGUF writer -
catalog - faults and recorded requests - server state - HTTP handler - servers - CLI.

Ollama endpoints (same port)
----------------------------
``GET|HEAD /``                 200 ``Ollama is running`` (text/plain; charset=utf-8)
``GET|HEAD /api/version``      ``{"version": ...}``
``GET|HEAD /api/tags``         installed models, newest first
``POST /api/show``             details, model_info (GGUF KVs), tensors, capabilities, ...
``GET /api/ps``                loaded models with size / size_vram (placement on `vram`)
``POST /api/pull``             NDJSON progress (see below); ``stream: false`` -> one object
``POST /api/push``             minimal NDJSON (installed models only)
``POST /api/generate``         load / unload / token stream with realistic durations
``POST /api/chat``, ``POST /api/embed``, ``POST /api/embeddings``   minimal
``POST /api/create``           from an installed model (+ template/system/parameters/license)
``DELETE /api/delete``, ``POST /api/copy``, ``HEAD|POST /api/blobs/sha256:<hex>``
``GET /v1/models``, ``GET /v1/models/<name>``, ``POST /v1/chat/completions`` (JSON or SSE)
``POST /v1/responses``         only when version >= 0.13.4 (else text ``404 page not found``)
anything else                  404 text ``404 page not found`` (also for a wrong method)

Registry endpoints (same port: the server is its own registry.ollama.ai)
-----------------------------------------------------------------------
``GET|HEAD /v2/``                                       200 ``{}`` (401 when auth is on)
``GET|HEAD /v2/<namespace>/<model>/manifests/<tag>``    manifest (also by ``sha256:`` digest)
``GET|HEAD /v2/<namespace>/<model>/blobs/sha256:<hex>``  blob, ``Range: bytes=a-b`` -> 206
``GET /token?service=test-registry&scope=repository:<ns>/<model>:pull``  bearer token
``GET /cdn/blobs/sha256/<xx>/<hex>/data``                where blobs redirect to when
                                                         ``blob_redirect=True`` (307)
The catalog's host part is ignored by the registry paths: ``<srv.url>/v2/library/llama3.1/
manifests/8b`` is what ``https://registry.ollama.ai/v2/library/llama3.1/manifests/8b`` is.
Model blobs are a real GGUF header (v3, real KVs, full tokenizer arrays, one tensor info
per tensor) followed by virtual zero bytes up to the declared size; bytes are computed per
range, never materialised. Bytes sent are counted per request (``RecordedRequest.
bytes_sent``) and in total (``srv.bytes_served``, ``srv.blob_bytes_served``).

Pull stream
-----------
``pulling manifest``; per blob (layers then config, manifest order) ``pulling <12 hex>`` lines
with ``digest``/``total``/``completed`` (``completed`` left out when 0) every ``tick`` real
seconds while virtual bytes arrive at ``download_rate``; a blob already present gives
``cached_lines`` lines with completed == total; then ``verifying sha256 digest``, ``writing
manifest``, ``removing unused layers`` (only when the model's older layers go), ``success``.
Unknown model: ``pulling manifest`` + ``{"error":"pull model manifest: file does not exist"}``
(HTTP 200; HTTP 500 with ``stream: false``); invalid name: HTTP 400 ``invalid model name``.
Interrupted blobs keep their bytes in ``srv.partial`` (resume); concurrent pulls of one
blob share one download; the download stops when no client is attached.

Faults (``srv.faults.append(Fault(...))`` or ``srv.add_fault(kind, **kw)``)
-------------------------------------------------------------------------
``Fault(kind, endpoint="/api/pull", times=1, after_bytes=None, model=None, blob=None,
seconds=None, message=None)``. ``endpoint`` is an fnmatch pattern on the path (None = any
path), ``model`` any spelling of a name, ``blob`` a digest or a prefix of its hex. A fault
fires at most ``times`` times (None = always), then is spent. In a pull, ``after_bytes`` is
a position inside a blob (blob=None: any downloaded blob larger than that); on a registry
blob GET it counts bytes of the response body (there ``model`` never matches: filter with
``blob`` and ``endpoint``, e.g. ``endpoint="/v2/*/blobs/*"``).

- ``drop``       pull: close the connection (FIN, no final chunk) once the blob reaches
                 ``after_bytes`` (partial kept). Registry blob GET: after ``after_bytes`` of
                 body. Other endpoints: close before answering.
- ``stall``      send nothing for ``seconds`` (None: until the client goes or the server
                 stops) at ``after_bytes``; the download does not advance meanwhile.
- ``error_line`` pull: ``{"error": message}`` under HTTP 200 at ``after_bytes``, stream ends,
                 partial kept (default ``max retries exceeded: unexpected EOF``). A message
                 starting ``digest mismatch`` fires after ``verifying sha256 digest`` instead
                 and discards the blob (as Ollama does); the bare text ``digest mismatch``
                 is expanded to the full Ollama text. ``{hex}``, ``{digest}``, ``{model}`` in a
                 message are replaced. On generate/chat/create streams: after the first line.
- ``http_500``   HTTP 500 ``{"error": message}`` instead of the answer (any endpoint).
- ``garbage``    a non-JSON line in the stream (at ``after_bytes`` of a blob, or right after
                 the first line), then the stream continues normally.
- ``backwards``  progress of a blob goes back by ``after_bytes`` (default total/4) once it
                 reaches max(after_bytes, total/2), then continues.
- ``slow_headers`` wait ``seconds`` (default 1) before the status line (any endpoint).
- ``registry_unreachable`` the pull fails after ``pulling manifest`` with ``pull model
                 manifest: Get "https://registry.ollama.ai/v2/library/<m>/manifests/<t>":
                 dial tcp: lookup registry.ollama.ai: no such host``.
- ``stuck``      (added for the pull tests) pull: at ``after_bytes`` the same progress line
                 repeats every ``tick`` for ``seconds`` (None: until the client goes), the
                 way a real Ollama shows a download that makes no progress.

Knobs (constructor)
-------------------
``version`` ("0.13.5"), ``installed`` (names from the catalog, oldest first), ``download_rate``
(virtual bytes per real second, None = instant), ``tick`` (0.005 s; real Ollama 0.06),
``memory`` (system RAM, 16 GiB), ``vram`` (list of GPU sizes, default [8 GiB]; [] = CPU),
``registry_auth``, ``catalog``, ``host``/``port``, ``tokens_per_second`` (None: from placement
and ``gpu_bandwidth``/``cpu_bandwidth``), ``cached_lines`` (lines per already-present blob;
the 0.12.9 capture shows 1), ``blob_redirect`` (registry blobs answer 307 to ``/cdn/...`` as
registry.ollama.ai does), ``load_delay`` / ``token_delay`` (real seconds), ``num_parallel``,
``upstream`` (another double this one pulls from: one catalog, one set of revisions).

Memory model (``/api/ps``, ``/api/generate``): size = weights + KV cache (f16, num_ctx x
num_parallel, capped at the trained context) + compute graph; it goes fully on the first GPU
that holds it plus 457 MiB, else layers are spread over the GPUs that hold at least two and
``size_vram`` is the proportional share; the rest must fit in ``memory`` or the load fails
with ``model requires more system memory (X GiB) than is available (Y GiB)``. Default
num_ctx: 2048 before 0.6.7, 4096 after, chosen by total VRAM from 0.15.5.

Cost: the first GGUF header of a tokenizer family (llama3, qwen2) takes ~0.5 s to build, once
per process (cached and shared by all servers and models); ``srv.manifest(name)`` warms it up
before a test with tight client timeouts.

Other helpers: ``make_catalog_model``, ``srv.update_model`` (the registry serves a new
version of a tag), ``srv.add_model``, ``srv.install``, ``srv.remove``, ``srv.load``,
``srv.loaded_names``, ``srv.installed_names``, ``srv.manifest``, ``srv.set_version``,
``srv.requests_to``. ``NotOllamaServer(kind="nginx"|"raw"|"silent")`` is something else
listening on a port.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import functools
import hashlib
import itertools
import json
import math
import re
import secrets
import select
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union
from urllib.parse import parse_qsl, urlsplit

from provision.errors import UsageError
from provision.names import ModelName, parse_name

__all__ = [
    "CATALOG",
    "CatalogModel",
    "Fault",
    "FAULT_KINDS",
    "NotOllamaServer",
    "OllamaTestServer",
    "RecordedRequest",
    "make_catalog_model",
    "go_json",
]

KIB, MIB, GIB = 1024, 1024**2, 1024**3

MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_MODEL = "application/vnd.ollama.image.model"
MT_TEMPLATE = "application/vnd.ollama.image.template"
MT_SYSTEM = "application/vnd.ollama.image.system"
MT_PARAMS = "application/vnd.ollama.image.params"
MT_LICENSE = "application/vnd.ollama.image.license"
BLOBS_DIR = "/root/.ollama/models/blobs"
JSON_CT = "application/json; charset=utf-8"
PLAIN_JSON_CT = "application/json"  # /v1/* and `stream: false` answers (set before gin's)
NDJSON_CT = "application/x-ndjson"
TEXT_CT = "text/plain; charset=utf-8"
NOT_FOUND_TEXT = b"404 page not found"
GPU_MINIMUM = 457 * MIB  # Ollama's per-GPU minimum (CUDA/ROCm)
REGISTRY_SERVICE = "test-registry"
DEFAULT_GARBAGE = "<html><body><h1>502 Bad Gateway</h1></body></html>"
DEFAULT_PULL_ERROR = "max retries exceeded: unexpected EOF"


# ======================================================================================
# Helpers: Go-compatible JSON, times, sizes, versions
# ======================================================================================


class F32(float):
    """A float that came from a GGUF f32: encoded with float32's shortest digits, as Go
    encodes a float32 (`1e-5` -> `0.00001`)."""


_HTML_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _f32_shortest(x: float) -> str:
    target = struct.unpack("<f", struct.pack("<f", x))[0]
    for precision in range(1, 10):
        text = f"{target:.{precision}g}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == target:
            return text
    return repr(target)


def _go_float(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"json: unsupported value: {x}")
    digits = _f32_shortest(x) if isinstance(x, F32) else repr(float(x))
    value = abs(float(digits))
    if value != 0 and (value < 1e-6 or value >= 1e21):
        mantissa, _, exp = f"{Decimal(digits):e}".partition("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        sign = "-" if int(exp) < 0 else "+"
        exp_digits = str(abs(int(exp)))
        if sign == "+" and len(exp_digits) < 2:
            exp_digits = exp_digits.zfill(2)
        return f"{mantissa}e{sign}{exp_digits}"
    text = format(Decimal(digits), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _go_json_into(obj: Any, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False).translate(_HTML_ESCAPES))
    elif isinstance(obj, int):
        out.append(str(int(obj)))
    elif isinstance(obj, float):
        out.append(_go_float(obj))
    elif isinstance(obj, dict):
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(key), ensure_ascii=False).translate(_HTML_ESCAPES))
            out.append(":")
            _go_json_into(value, out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        if obj and all(type(v) is str for v in obj):  # fast path: vocabularies
            text = json.dumps(list(obj), ensure_ascii=False, separators=(",", ":"))
            out.append(text.translate(_HTML_ESCAPES))
            return
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _go_json_into(value, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__}")


def go_json(obj: Any) -> str:
    """JSON as Go's encoding/json writes it (what Ollama sends): compact, `<>&` escaped,
    integral floats without `.0`, float32 values with their shortest digits."""
    out: list[str] = []
    _go_json_into(obj, out)
    return "".join(out)


def rfc3339(ns: int) -> str:
    """Go's RFC3339Nano in UTC (`2026-11-21T07:51:16.083532401Z`)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        stamp += "." + f"{frac:09d}".rstrip("0")
    return stamp + "Z"


def human_bytes2(n: int) -> str:
    """Ollama's format.HumanBytes2 (used in the memory error): `5.6 GiB`."""
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    if n >= KIB:
        return f"{n / KIB:.1f} KiB"
    return f"{n} B"


def human_number(n: int) -> str:
    """Ollama's format.HumanNumber (parameter_size): `8.0B`, `1.2B`, `38K`."""
    if n >= 1_000_000_000:
        value = n / 1_000_000_000
        return f"{value:.0f}B" if value == math.floor(value) else f"{value:.1f}B"
    if n >= 1_000_000:
        value = n / 1_000_000
        return f"{value:.0f}M" if value == math.floor(value) else f"{value:.2f}M"
    if n >= 1_000:
        return f"{n / 1_000:.0f}K"
    return str(n)


def version_tuple(version: str) -> tuple[int, ...]:
    """`0.13.5` -> (0, 13, 5); suffixes (`-rc1`) and a leading `v` ignored."""
    parts = []
    for piece in version.lstrip("v").split("-")[0].split(".")[:3]:
        digits = re.match(r"\d*", piece).group(0)  # type: ignore[union-attr]
        parts.append(int(digits or 0))
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse_duration(value: Any) -> float | None:
    """keep_alive as Ollama reads it: seconds (number), Go duration string, negative =
    forever (None)."""
    if value is None:
        return 300.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
            sign = -1 if text.startswith("-") else 1
            seconds = 0.0
            for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text):
                seconds += float(number) * units[unit]
            seconds *= sign
    return None if seconds < 0 else seconds


# ======================================================================================
# GGUF writer
# ======================================================================================

# ggml tensor types: name -> (id, elements per block, bytes per block). hardware.md.
GGML_TYPES: dict[str, tuple[int, int, int]] = {
    "F32": (0, 1, 4),
    "F16": (1, 1, 2),
    "Q4_0": (2, 32, 18),
    "Q4_1": (3, 32, 20),
    "Q5_0": (6, 32, 22),
    "Q5_1": (7, 32, 24),
    "Q8_0": (8, 32, 34),
    "Q2_K": (10, 256, 84),
    "Q3_K": (11, 256, 110),
    "Q4_K": (12, 256, 144),
    "Q5_K": (13, 256, 176),
    "Q6_K": (14, 256, 210),
    "IQ4_NL": (20, 32, 18),
    "IQ4_XS": (23, 256, 136),
    "BF16": (30, 1, 2),
    "MXFP4": (39, 32, 17),
}
# A k-quant cannot take rows that are not a multiple of 256: llama.cpp falls back.
_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
             "IQ4_XS": "IQ4_NL"}

# general.file_type values.
FILE_TYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
    "Q5_K_M": 17, "Q6_K": 18, "IQ4_XS": 30, "BF16": 32,
}

# GGUF metadata value types.
GGUF_U8, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32 = 0, 1, 2, 3, 4, 5, 6
GGUF_BOOL, GGUF_STRING, GGUF_ARRAY, GGUF_U64, GGUF_I64, GGUF_F64 = 7, 8, 9, 10, 11, 12
_SCALAR_FMT = {GGUF_U8: "B", GGUF_I8: "b", GGUF_U16: "H", GGUF_I16: "h", GGUF_U32: "I",
               GGUF_I32: "i", GGUF_F32: "f", GGUF_BOOL: "?", GGUF_U64: "Q", GGUF_I64: "q",
               GGUF_F64: "d"}
GGUF_ALIGNMENT = 32


def _gguf_str(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _gguf_value(vtype: int, value: Any, elem: int | None = None) -> bytes:
    if vtype == GGUF_STRING:
        return _gguf_str(value)
    if vtype == GGUF_ARRAY:
        assert elem is not None
        head = struct.pack("<IQ", elem, len(value))
        if elem == GGUF_STRING:
            return head + b"".join(_gguf_str(v) for v in value)
        return head + struct.pack(f"<{len(value)}{_SCALAR_FMT[elem]}", *value)
    return struct.pack("<" + _SCALAR_FMT[vtype], value)


def tensor_nbytes(shape: tuple[int, ...], ggml_type: str) -> int:
    """ceil(elements / block) x bytes per block, per row (ne0 is the row)."""
    _, block, size = GGML_TYPES[ggml_type]
    rows = math.prod(shape[1:]) if len(shape) > 1 else 1
    return rows * (-(-shape[0] // block)) * size


def _align(n: int, alignment: int = GGUF_ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


class GGUFWriter:
    """Builds a GGUF v3 header (little-endian) as a list of byte segments.

    KV pairs are added one by one or as a pre-encoded block (a shared tokenizer, so that
    100 models of one family keep one copy of their ~7 MiB vocabulary)."""

    def __init__(self, alignment: int = GGUF_ALIGNMENT) -> None:
        self.alignment = alignment
        self._segments: list[bytes] = []
        self._current = bytearray()
        self.kv_count = 0
        self.tensors: list[tuple[str, tuple[int, ...], str]] = []

    def add(self, key: str, vtype: int, value: Any, elem: int | None = None) -> None:
        self._current += _gguf_str(key) + struct.pack("<I", vtype)
        self._current += _gguf_value(vtype, value, elem)
        self.kv_count += 1

    def add_block(self, block: bytes, count: int) -> None:
        if self._current:
            self._segments.append(bytes(self._current))
            self._current = bytearray()
        self._segments.append(block)
        self.kv_count += count

    def add_tensor(self, name: str, shape: tuple[int, ...], ggml_type: str) -> None:
        self.tensors.append((name, shape, ggml_type))

    def build(self) -> tuple[list[bytes], int, int]:
        """(segments, padded header length, total file size)."""
        infos = bytearray()
        offset = 0
        for name, shape, ggml_type in self.tensors:
            infos += _gguf_str(name) + struct.pack("<I", len(shape))
            infos += struct.pack(f"<{len(shape)}Q", *shape)
            infos += struct.pack("<IQ", GGML_TYPES[ggml_type][0], offset)
            offset += _align(tensor_nbytes(shape, ggml_type), self.alignment)
        prefix = b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), self.kv_count)
        segments = [prefix, *self._segments, bytes(self._current), bytes(infos)]
        unpadded = sum(len(s) for s in segments)
        header = _align(unpadded, self.alignment)
        segments.append(bytes(header - unpadded))
        return [s for s in segments if s], header, header + offset


class Blob:
    """Content served by the registry / stored by the server, addressed by digest."""

    def __init__(self, digest: str, size: int, media_type: str) -> None:
        self.digest = digest
        self.size = size
        self.media_type = media_type

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def read(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def text(self) -> str:
        return self.read(0, self.size).decode()


class BytesBlob(Blob):
    def __init__(self, data: bytes, media_type: str) -> None:
        super().__init__("sha256:" + _sha256(data), len(data), media_type)
        self.data = data

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


class GGUFBlob(Blob):
    """A GGUF file whose header is real bytes and whose tensor data is virtual zeros."""

    def __init__(self, segments: list[bytes], header_size: int, size: int, seed: str) -> None:
        self.segments = segments
        self.starts = list(itertools.accumulate([0] + [len(s) for s in segments[:-1]]))
        self.header_size = header_size
        super().__init__("", size, MT_MODEL)
        if size <= 16 * MIB:  # small enough to hash honestly
            self.digest = "sha256:" + _sha256(self.read(0, size))
        else:  # deterministic fake digest: sha256 of something stable
            self.digest = "sha256:" + _sha256(f"ollama-test-double weights {seed}".encode())

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        out = bytearray()
        for start, seg in zip(self.starts, self.segments):
            seg_end = start + len(seg)
            if seg_end <= offset or start >= end:
                continue
            out += memoryview(seg)[max(offset, start) - start : min(end, seg_end) - start]
        out += bytes(end - offset - len(out))
        return bytes(out)


# ---- tokenizers ----------------------------------------------------------------------

_ALPHA = "etaoinshrdlcumwfgypbvkjxqz"


def _piece(i: int, mean_len: int) -> str:
    """A deterministic, mostly unique lower-case piece whose length averages mean_len."""
    chars = []
    n = i
    while True:
        chars.append(_ALPHA[n % 26])
        n //= 26
        if n == 0:
            break
    want = 1 + (i * 7919) % (2 * mean_len - 1)
    k = 0
    while len(chars) < want:
        chars.append(_ALPHA[(i + 3 * k) % 26])
        k += 1
    return "".join(chars)


@functools.cache
def _gpt2_byte_chars() -> tuple[str, ...]:
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + n))
            n += 1
    return tuple(chars)


@dataclass(frozen=True)
class _TokenizerSpec:
    model: str  # tokenizer.ggml.model
    pre: str | None  # tokenizer.ggml.pre
    size: int  # standard vocabulary size
    merges: int  # standard merge count (BPE)
    ids: tuple[tuple[str, int], ...]  # special token id keys


TOKENIZERS: dict[str, _TokenizerSpec] = {
    "llama3": _TokenizerSpec("gpt2", "llama-bpe", 128256, 280147,
                             (("bos_token_id", 128000), ("eos_token_id", 128009))),
    "qwen2": _TokenizerSpec("gpt2", "qwen2", 152064, 151387,
                            (("bos_token_id", 151643), ("eos_token_id", 151645),
                             ("padding_token_id", 151643))),
    "bert": _TokenizerSpec("bert", None, 30522, 0,
                           (("bos_token_id", 101), ("eos_token_id", 102),
                            ("unknown_token_id", 100), ("seperator_token_id", 102),
                            ("padding_token_id", 0), ("cls_token_id", 101),
                            ("mask_token_id", 103))),
    "llama-spm": _TokenizerSpec("llama", None, 32000, 0,
                                (("bos_token_id", 1), ("eos_token_id", 2),
                                 ("unknown_token_id", 0))),
}

_LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                    "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
                    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                  "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                  "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                  "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                  "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|repo_name|>", "<|file_sep|>"]


@dataclass(frozen=True)
class Vocabulary:
    tokens: list[str]
    token_type: list[int]
    merges: list[str] | None
    scores: list[float] | None


@functools.cache
def vocabulary(kind: str, size: int) -> Vocabulary:
    """The token arrays of a tokenizer family, sized like the real vocabulary."""
    spec = TOKENIZERS[kind]
    if kind in ("llama3", "qwen2"):
        specials = _LLAMA3_SPECIALS if kind == "llama3" else _QWEN_SPECIALS
        n_special = 256 if kind == "llama3" else 22 + (size - 151665 if size > 151665 else 0)
        n_normal = max(size - n_special, 256)
        byte_chars = _gpt2_byte_chars()
        tokens = list(byte_chars)
        g = byte_chars[32]  # 'Ġ', GPT-2's space
        tokens += [(g if i % 2 else "") + _piece(i, 6) for i in range(256, n_normal)]
        types = [1] * len(tokens)
        for j in range(size - len(tokens)):
            if j < len(specials):
                tokens.append(specials[j])
                types.append(3)
            elif kind == "llama3":
                tokens.append(f"<|reserved_special_token_{j - len(specials) + 3}|>")
                types.append(3)
            else:
                tokens.append(f"[PAD{len(tokens)}]")
                types.append(4)
        standard = spec.merges * size // spec.size
        merges = [
            ((g if j % 3 == 0 else "") + _piece(j, 3) + " " + _piece(j * 31 + 7, 4))
            for j in range(standard)
        ]
        return Vocabulary(tokens, types, merges, None)
    if kind == "bert":
        tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]",
                                                                   "[MASK]"]
        types = [3] * len(tokens)
        while len(tokens) < size:
            i = len(tokens)
            tokens.append(("##" if i % 3 == 0 else "") + _piece(i, 5))
            types.append(1)
        return Vocabulary(tokens[:size], types[:size], None, [0.0] * size)
    # sentencepiece (llama): <unk> <s> </s>, 256 byte tokens, pieces
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    while len(tokens) < size:
        i = len(tokens)
        tokens.append(("\u2581" if i % 2 else "") + _piece(i, 4))
        types.append(1)
        scores.append(-float(i - 259))
    return Vocabulary(tokens[:size], types[:size], None, scores[:size])


@functools.cache
def _tokenizer_block(kind: str, size: int) -> tuple[bytes, int]:
    """Pre-encoded KV pairs of a tokenizer (model, pre, tokens, token_type, merges or
    scores): shared by every model of the family."""
    spec = TOKENIZERS[kind]
    vocab = vocabulary(kind, size)
    w = GGUFWriter()
    w.add("tokenizer.ggml.model", GGUF_STRING, spec.model)
    if spec.pre:
        w.add("tokenizer.ggml.pre", GGUF_STRING, spec.pre)
    w.add("tokenizer.ggml.tokens", GGUF_ARRAY, vocab.tokens, GGUF_STRING)
    if vocab.scores is not None:
        w.add("tokenizer.ggml.scores", GGUF_ARRAY, vocab.scores, GGUF_F32)
    w.add("tokenizer.ggml.token_type", GGUF_ARRAY, vocab.token_type, GGUF_I32)
    if vocab.merges is not None:
        w.add("tokenizer.ggml.merges", GGUF_ARRAY, vocab.merges, GGUF_STRING)
    return bytes(w._current), w.kv_count


# ======================================================================================
# Catalog
# ======================================================================================

LLAMA3_TEMPLATE = """{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

Cutting Knowledge Date: December 2023

When you receive a tool call response, use the output to format an answer to the orginal \
user question.

You are a helpful assistant with tool calling capabilities.
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

Given the following functions, please respond with a JSON for a function call with its \
proper arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and \
its value}. Do not use variables.

{{ range $.Tools }}
{{- . }}
{{ end }}
Question: {{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}
{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

QWEN_TEMPLATE = """{{- if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""

LLAMA31_LICENSE = """LLAMA 3.1 COMMUNITY LICENSE AGREEMENT
Llama 3.1 Version Release Date: July 23, 2024

"Agreement" means the terms and conditions for use, reproduction, distribution and \
modification of the Llama Materials set forth herein.

"Documentation" means the specifications, manuals and documentation accompanying Llama 3.1
distributed by Meta at https://llama.meta.com/doc/overview.

"Licensee" or "you" means you, or your employer or any other person or entity (if you are
entering into this Agreement on such person or entity's behalf), of the age required under
applicable laws, rules or regulations to provide legal consent and that has legal authority
to bind your employer or such other person or entity if you are entering in this Agreement
on their behalf.
"""
LLAMA32_LICENSE = LLAMA31_LICENSE.replace("3.1", "3.2").replace("July 23", "September 25")
APACHE_LICENSE = """                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION

   1. Definitions.

      "License" shall mean the terms and conditions for use, reproduction,
      and distribution as defined by Sections 1 through 9 of this document.
"""
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
LLAMA3_PARAMS: dict[str, Any] = {"stop": ["<|start_header_id|>", "<|end_header_id|>",
                                          "<|eot_id|>"]}
QWEN_PARAMS: dict[str, Any] = {"stop": ["<|im_start|>", "<|im_end|>"]}
EMBEDDING_ARCHS = {"nomic-bert", "bert"}


def _use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: which layers a _M mix gives more bits."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass(frozen=True)
class _Mix:
    base: str
    output: str  # output.weight, or token_embd when the embeddings are tied
    embd: str  # token_embd when untied
    more_bits: str | None = None  # attn_v / ffn_down in use_more_bits layers
    attn_v: str | None = None
    ffn_down: str | None = None
    attn_output: str | None = None


QUANT_MIXES: dict[str, _Mix] = {
    "F32": _Mix("F32", "F32", "F32"),
    "F16": _Mix("F16", "F16", "F16"),
    "BF16": _Mix("BF16", "BF16", "BF16"),
    "Q8_0": _Mix("Q8_0", "Q8_0", "Q8_0"),
    "Q4_0": _Mix("Q4_0", "Q6_K", "Q4_0"),
    "Q4_1": _Mix("Q4_1", "Q6_K", "Q4_1"),
    "Q5_0": _Mix("Q5_0", "Q6_K", "Q5_0"),
    "Q5_1": _Mix("Q5_1", "Q6_K", "Q5_1"),
    "Q2_K": _Mix("Q2_K", "Q6_K", "Q2_K", attn_v="Q3_K", ffn_down="Q3_K"),
    "Q3_K_S": _Mix("Q3_K", "Q6_K", "Q3_K"),
    "Q3_K_M": _Mix("Q3_K", "Q6_K", "Q3_K", more_bits="Q5_K", attn_v="Q4_K", ffn_down="Q4_K",
                   attn_output="Q4_K"),
    "Q3_K_L": _Mix("Q3_K", "Q6_K", "Q3_K", attn_v="Q5_K", ffn_down="Q5_K", attn_output="Q5_K"),
    "Q4_K_S": _Mix("Q4_K", "Q6_K", "Q4_K"),
    "Q4_K_M": _Mix("Q4_K", "Q6_K", "Q4_K", more_bits="Q6_K"),
    "Q5_K_S": _Mix("Q5_K", "Q6_K", "Q5_K"),
    "Q5_K_M": _Mix("Q5_K", "Q6_K", "Q5_K", more_bits="Q6_K"),
    "Q6_K": _Mix("Q6_K", "Q6_K", "Q6_K"),
    "IQ4_XS": _Mix("IQ4_XS", "Q6_K", "IQ4_XS"),
}


def _fit(ggml_type: str, ne0: int) -> str:
    block = GGML_TYPES[ggml_type][1]
    return ggml_type if ne0 % block == 0 else _FALLBACK.get(ggml_type, "F16")


@dataclass(eq=False)
class CatalogModel:
    """A model the registry can serve: architecture, quantization, texts.

    `name` may be any spelling (`llama3.1:8b`); it is normalised with Ollama's rules. The
    weights blob (GGUF header + virtual tensor data), the small blobs, the config and the
    manifest are built lazily per revision and cached on the object (`artifacts`)."""

    name: str
    arch: str = "llama"
    block_count: int = 32
    context_length: int = 131072
    embedding_length: int = 4096
    feed_forward_length: int = 14336
    head_count: int = 32
    head_count_kv: int = 8
    vocab_size: int = 128256
    tokenizer: str = "llama3"
    quant: str = "Q4_K_M"
    key_length: int | None = None
    value_length: int | None = None
    tied_embeddings: bool = False
    rope_freqs: bool = False
    qkv_bias: bool = False
    rope_freq_base: float = 500000.0
    norm_eps: float = 1e-5
    title: str = ""  # general.name ("" = none, like the tiny capture)
    size_label: str = ""
    license_name: str = ""  # general.license
    template: str = "{{ .Prompt }}"
    system: str = ""
    license: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    capabilities: tuple[str, ...] | None = None  # None: derived from arch and template
    parameter_size: str | None = None  # None: human_number(parameter count)
    seed: str | None = None  # digest seed; aliases of one model share it
    gguf_parameter_count: bool = False  # real GGUFs have no general.parameter_count key
    extra_kv: list[tuple[str, int, Any]] = field(default_factory=list)
    modified: float = 0.0

    def __post_init__(self) -> None:
        self.model_name: ModelName = parse_name(self.name)
        self.name = self.model_name.full
        if self.quant not in QUANT_MIXES:
            raise ValueError(f"unknown quantization {self.quant!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {self.tokenizer!r}")
        self._artifacts: dict[int, Artifacts] = {}
        self._lock = threading.Lock()

    # ---- identity ------------------------------------------------------------------
    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.model_name.key

    @property
    def short(self) -> str:
        return self.model_name.short

    @property
    def family(self) -> str:
        return self.arch

    @property
    def head_dim_k(self) -> int:
        return self.key_length or self.embedding_length // self.head_count

    @property
    def head_dim_v(self) -> int:
        return self.value_length or self.embedding_length // self.head_count

    @property
    def is_embedding(self) -> bool:
        return self.arch in EMBEDDING_ARCHS

    def caps(self) -> list[str]:
        if self.capabilities is not None:
            return list(self.capabilities)
        if self.is_embedding:
            return ["embedding"]
        caps = ["completion"]
        if ".Tools" in self.template:
            caps.append("tools")
        if ".Thinking" in self.template or ".Think" in self.template:
            caps.append("thinking")
        return caps

    # ---- tensors -------------------------------------------------------------------
    @functools.cached_property
    def tensors(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape (ne0 first), ggml type) for every tensor, in file order."""
        mix = QUANT_MIXES[self.quant]
        e, f, v = self.embedding_length, self.feed_forward_length, self.vocab_size
        n = self.block_count
        out: list[tuple[str, tuple[int, ...], str]] = []

        def add(name: str, shape: tuple[int, ...], ggml_type: str) -> None:
            out.append((name, shape, ggml_type if len(shape) == 1 else _fit(ggml_type, shape[0])))

        if self.is_embedding:  # nomic-bert layout
            add("token_embd.weight", (e, v), mix.embd)
            add("token_types.weight", (e, 2), "F32")
            add("token_embd_norm.weight", (e,), "F32")
            add("token_embd_norm.bias", (e,), "F32")
            for i in range(n):
                p = f"blk.{i}."
                add(p + "attn_qkv.weight", (e, 3 * e), mix.base)
                add(p + "attn_output.weight", (e, e), mix.base)
                add(p + "attn_output_norm.weight", (e,), "F32")
                add(p + "attn_output_norm.bias", (e,), "F32")
                add(p + "ffn_up.weight", (e, f), mix.base)
                add(p + "ffn_gate.weight", (e, f), mix.base)
                add(p + "ffn_down.weight", (f, e), mix.base)
                add(p + "layer_output_norm.weight", (e,), "F32")
                add(p + "layer_output_norm.bias", (e,), "F32")
            return out
        q_dim = self.head_count * self.head_dim_k
        k_dim = self.head_count_kv * self.head_dim_k
        v_dim = self.head_count_kv * self.head_dim_v
        o_in = self.head_count * self.head_dim_v
        if self.rope_freqs:
            add("rope_freqs.weight", (self.head_dim_k // 2,), "F32")
        add("token_embd.weight", (e, v), mix.output if self.tied_embeddings else mix.embd)
        add("output_norm.weight", (e,), "F32")
        if not self.tied_embeddings:
            add("output.weight", (e, v), mix.output)
        for i in range(n):
            p = f"blk.{i}."
            more = mix.more_bits if (mix.more_bits and _use_more_bits(i, n)) else None
            add(p + "attn_norm.weight", (e,), "F32")
            add(p + "attn_q.weight", (e, q_dim), mix.base)
            add(p + "attn_k.weight", (e, k_dim), mix.base)
            add(p + "attn_v.weight", (e, v_dim), more or mix.attn_v or mix.base)
            if self.qkv_bias:
                add(p + "attn_q.bias", (q_dim,), "F32")
                add(p + "attn_k.bias", (k_dim,), "F32")
                add(p + "attn_v.bias", (v_dim,), "F32")
            add(p + "attn_output.weight", (o_in, e), mix.attn_output or mix.base)
            add(p + "ffn_norm.weight", (e,), "F32")
            add(p + "ffn_gate.weight", (e, f), mix.base)
            add(p + "ffn_up.weight", (e, f), mix.base)
            add(p + "ffn_down.weight", (f, e), more or mix.ffn_down or mix.base)
        return out

    @functools.cached_property
    def parameter_count(self) -> int:
        return sum(math.prod(shape) for _, shape, _ in self.tensors)

    @property
    def param_size(self) -> str:
        return self.parameter_size or human_number(self.parameter_count)

    @functools.cached_property
    def embd_out_bytes(self) -> int:
        """Bytes of token_embd + output (not part of the repeating layers)."""
        return sum(tensor_nbytes(s, t) for n, s, t in self.tensors
                   if n.startswith(("token_embd.", "output.")))

    # ---- GGUF metadata ---------------------------------------------------------------
    def kv_items(self, revision: int = 0) -> tuple[list[tuple[str, int, Any]],
                                                   list[tuple[str, int, Any]]]:
        """KV pairs before and after the shared tokenizer block: (key, type, value)."""
        a = self.arch
        before: list[tuple[str, int, Any]] = [("general.architecture", GGUF_STRING, a)]
        title = self.title + (f" (revision {revision})" if revision else "")
        if title:
            before.append(("general.type", GGUF_STRING, "model"))
            before.append(("general.name", GGUF_STRING, title))
        if self.size_label:
            before.append(("general.size_label", GGUF_STRING, self.size_label))
        if self.license_name:
            before.append(("general.license", GGUF_STRING, self.license_name))
        if self.gguf_parameter_count:
            before.append(("general.parameter_count", GGUF_U64, self.parameter_count))
        before += [
            (f"{a}.block_count", GGUF_U32, self.block_count),
            (f"{a}.context_length", GGUF_U32, self.context_length),
            (f"{a}.embedding_length", GGUF_U32, self.embedding_length),
            (f"{a}.feed_forward_length", GGUF_U32, self.feed_forward_length),
            (f"{a}.attention.head_count", GGUF_U32, self.head_count),
        ]
        if self.is_embedding:
            before += [
                (f"{a}.attention.layer_norm_epsilon", GGUF_F32, F32(self.norm_eps)),
                (f"{a}.attention.causal", GGUF_BOOL, False),
                (f"{a}.pooling_type", GGUF_U32, 1),
                (f"{a}.rope.freq_base", GGUF_F32, F32(self.rope_freq_base)),
                ("general.file_type", GGUF_U32, FILE_TYPES[self.quant]),
            ]
        else:
            before += [
                (f"{a}.attention.head_count_kv", GGUF_U32, self.head_count_kv),
                (f"{a}.rope.freq_base", GGUF_F32, F32(self.rope_freq_base)),
                (f"{a}.attention.layer_norm_rms_epsilon", GGUF_F32, F32(self.norm_eps)),
            ]
            if self.key_length:
                before.append((f"{a}.attention.key_length", GGUF_U32, self.key_length))
            if self.value_length:
                before.append((f"{a}.attention.value_length", GGUF_U32, self.value_length))
            before += [
                ("general.file_type", GGUF_U32, FILE_TYPES[self.quant]),
                (f"{a}.vocab_size", GGUF_U32, self.vocab_size),
                (f"{a}.rope.dimension_count", GGUF_U32, self.head_dim_k),
            ]
        before += list(self.extra_kv)
        spec = TOKENIZERS[self.tokenizer]
        after: list[tuple[str, int, Any]] = []
        if self.tokenizer == "bert":
            after.append(("tokenizer.ggml.token_type_count", GGUF_U32, 2))
        after += [(f"tokenizer.ggml.{k}", GGUF_U32, v) for k, v in spec.ids]
        if self.tokenizer == "llama-spm":
            after += [("tokenizer.ggml.add_bos_token", GGUF_BOOL, True),
                      ("tokenizer.ggml.add_eos_token", GGUF_BOOL, False)]
        if self.tokenizer in ("llama3", "qwen2"):
            after.append(("tokenizer.chat_template", GGUF_STRING, _CHAT_TEMPLATES[self.tokenizer]))
        if self.title:
            after.append(("general.quantization_version", GGUF_U32, 2))
        return before, after

    def model_info(self, revision: int = 0, *, verbose: bool = False,
                   empty: list[Any] | None = None) -> dict[str, Any]:
        """`/api/show` model_info: the GGUF KVs (sorted), arrays longer than 5 emptied
        unless verbose, general.parameter_count added as Ollama does."""
        before, after = self.kv_items(revision)
        info: dict[str, Any] = {k: v for k, _, v in before + after}
        spec = TOKENIZERS[self.tokenizer]
        info["tokenizer.ggml.model"] = spec.model
        if spec.pre:
            info["tokenizer.ggml.pre"] = spec.pre
        vocab = vocabulary(self.tokenizer, self.vocab_size) if verbose else None
        arrays = {"tokenizer.ggml.tokens": vocab.tokens if vocab else None,
                  "tokenizer.ggml.token_type": vocab.token_type if vocab else None}
        if self.tokenizer in ("llama3", "qwen2"):
            arrays["tokenizer.ggml.merges"] = vocab.merges if vocab else None
        else:
            arrays["tokenizer.ggml.scores"] = (
                [F32(s) for s in vocab.scores or []] if vocab else None)
        for key, value in arrays.items():
            info[key] = value if verbose else empty
        info["general.parameter_count"] = self.parameter_count
        return dict(sorted(info.items()))

    # ---- blobs, config, manifest -----------------------------------------------------
    def artifacts(self, revision: int = 0) -> Artifacts:
        with self._lock:
            arts = self._artifacts.get(revision)
            if arts is None:
                arts = self._artifacts[revision] = Artifacts.build(self, revision)
            return arts


_CHAT_TEMPLATES = {
    "llama3": (
        "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools "
        "%}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set "
        "tools_in_user_message = true %}\n{%- endif %}\n{%- for message in messages %}\n    "
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
        "message['content'] | trim + '<|eot_id|>' }}\n{%- endfor %}\n{%- if "
        "add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n'"
        " }}\n{%- endif %}\n"
    ),
    "qwen2": (
        "{%- for message in messages %}\n    {{- '<|im_start|>' + message.role + '\\n' + "
        "message.content + '<|im_end|>' + '\\n' }}\n{%- endfor %}\n{%- if add_generation_prompt"
        " %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
    ),
}


@dataclass(eq=False)
class Artifacts:
    """What the registry serves for one revision of a catalog model."""

    model: CatalogModel
    revision: int
    weights: GGUFBlob
    layers: list[Blob]
    config: BytesBlob
    manifest: bytes
    digest: str  # sha256 hex of the manifest bytes (what /api/tags shows)

    @property
    def blobs(self) -> dict[str, Blob]:
        return {b.digest: b for b in [*self.layers, self.config]}

    @property
    def size(self) -> int:
        return sum(b.size for b in self.layers) + self.config.size

    @staticmethod
    def build(m: CatalogModel, revision: int) -> Artifacts:
        w = GGUFWriter()
        before, after = m.kv_items(revision)
        for key, vtype, value in before:
            w.add(key, vtype, value)
        block, count = _tokenizer_block(m.tokenizer, m.vocab_size)
        w.add_block(block, count)
        for key, vtype, value in after:
            w.add(key, vtype, value)
        for name, shape, ggml_type in m.tensors:
            w.add_tensor(name, shape, ggml_type)
        segments, header, size = w.build()
        seed = f"{m.seed or m.name}:{m.quant}:rev{revision}"
        weights = GGUFBlob(segments, header, size, seed)
        layers: list[Blob] = [weights]
        if m.template:
            layers.append(BytesBlob(m.template.encode(), MT_TEMPLATE))
        if m.system:
            layers.append(BytesBlob(m.system.encode(), MT_SYSTEM))
        if m.license:
            layers.append(BytesBlob(m.license.encode(), MT_LICENSE))
        if m.params:
            layers.append(BytesBlob((go_json(m.params) + "\n").encode(), MT_PARAMS))
        config = make_config_blob(m, layers)
        manifest = manifest_bytes(config, layers)
        return Artifacts(m, revision, weights, layers, config, manifest, _sha256(manifest))


def make_config_blob(m: CatalogModel, layers: list[Blob]) -> BytesBlob:
    config = {
        "model_format": "gguf",
        "model_family": m.family,
        "model_families": [m.family],
        "model_type": m.param_size,
        "file_type": m.quant,
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]},
    }
    return BytesBlob(go_json(config).encode(), MT_CONFIG)


def manifest_bytes(config: Blob, layers: list[Blob]) -> bytes:
    return go_json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": b.media_type, "digest": b.digest, "size": b.size}
                   for b in layers],
    }).encode()


# Shapes of real model families, by (arch, size label).
_PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("llama", "1B"): dict(block_count=16, embedding_length=2048, feed_forward_length=8192,
                          head_count=32, head_count_kv=8, key_length=64, value_length=64,
                          tied_embeddings=True, rope_freqs=True),
    ("llama", "3B"): dict(block_count=28, embedding_length=3072, feed_forward_length=8192,
                          head_count=24, head_count_kv=8, key_length=128, value_length=128,
                          tied_embeddings=True, rope_freqs=True),
    ("llama", "8B"): dict(block_count=32, embedding_length=4096, feed_forward_length=14336,
                          head_count=32, head_count_kv=8, rope_freqs=True),
    ("llama", "70B"): dict(block_count=80, embedding_length=8192, feed_forward_length=28672,
                           head_count=64, head_count_kv=8, rope_freqs=True),
    ("qwen2", "0.5B"): dict(block_count=24, embedding_length=896, feed_forward_length=4864,
                            head_count=14, head_count_kv=2, tied_embeddings=True),
    ("qwen2", "7B"): dict(block_count=28, embedding_length=3584, feed_forward_length=18944,
                          head_count=28, head_count_kv=4),
    ("qwen2", "14B"): dict(block_count=48, embedding_length=5120, feed_forward_length=13824,
                           head_count=40, head_count_kv=8),
    ("qwen2", "32B"): dict(block_count=64, embedding_length=5120, feed_forward_length=27648,
                           head_count=40, head_count_kv=8),
    ("nomic-bert", "137M"): dict(block_count=12, embedding_length=768, feed_forward_length=3072,
                                 head_count=12, head_count_kv=12),
}
_ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(tokenizer="llama3", vocab_size=128256, context_length=131072,
                  rope_freq_base=500000.0, norm_eps=1e-5, template=LLAMA3_TEMPLATE,
                  params=LLAMA3_PARAMS),
    "qwen2": dict(tokenizer="qwen2", vocab_size=152064, context_length=32768, qkv_bias=True,
                  rope_freq_base=1000000.0, norm_eps=1e-6, template=QWEN_TEMPLATE,
                  params=QWEN_PARAMS),
    "nomic-bert": dict(tokenizer="bert", vocab_size=30522, context_length=2048,
                       rope_freq_base=1000.0, norm_eps=1e-12, template="{{ .Prompt }}",
                       params={"num_ctx": 8192}, quant="F16"),
}


def _label_value(label: str) -> float:
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}
    return float(label[:-1]) * scale[label[-1].upper()]


def make_catalog_model(name: str, *, arch: str = "llama", params: str | float = "8B",
                       quant: str = "Q4_K_M", **overrides: Any) -> CatalogModel:
    """A catalog model with the shape of the real family closest to `params` ("8B", 8e9)
    for `arch` (llama, qwen2, nomic-bert; other names use the llama layout). Any
    CatalogModel field can be overridden (block_count=..., vocab_size=..., ...)."""
    layout = arch if arch in _ARCH_DEFAULTS else "llama"
    target = _label_value(params) if isinstance(params, str) else float(params)
    labels = [label for (a, label) in _PRESETS if a == layout]
    label = min(labels, key=lambda lb: abs(math.log(_label_value(lb) / target)))
    fields: dict[str, Any] = dict(_ARCH_DEFAULTS[layout])
    fields.update(_PRESETS[(layout, label)])
    fields.update(arch=arch, quant=quant, size_label=label, title=f"{name} (test double)")
    if layout == "nomic-bert" and "quant" not in overrides:
        fields["quant"] = quant if quant != "Q4_K_M" else "F16"
    fields.update(overrides)
    fields["params"] = dict(fields.get("params") or {})
    return CatalogModel(name=name, **fields)


def _builtin_catalog() -> dict[str, CatalogModel]:
    llama = _ARCH_DEFAULTS["llama"]
    models = [
        CatalogModel("llama3.2:1b", quant="Q8_0", title="Llama 3.2 1B Instruct", size_label="1B",
                     license_name="llama3.2", license=LLAMA32_LICENSE, **_PRESETS["llama", "1B"],
                     **{k: v for k, v in llama.items()}),
        CatalogModel("llama3.2:3b", quant="Q4_K_M", title="Llama 3.2 3B Instruct",
                     size_label="3B", license_name="llama3.2", license=LLAMA32_LICENSE,
                     **_PRESETS["llama", "3B"], **llama),
        CatalogModel("llama3.2:latest", quant="Q4_K_M", title="Llama 3.2 3B Instruct",
                     size_label="3B", license_name="llama3.2", license=LLAMA32_LICENSE,
                     seed="registry.ollama.ai/library/llama3.2:3b", **_PRESETS["llama", "3B"],
                     **llama),
        CatalogModel("llama3.1:8b", quant="Q4_K_M", title="Meta Llama 3.1 8B Instruct",
                     size_label="8B", license_name="llama3.1", license=LLAMA31_LICENSE,
                     **_PRESETS["llama", "8B"], **llama),
        CatalogModel("llama3.1:latest", quant="Q4_K_M", title="Meta Llama 3.1 8B Instruct",
                     size_label="8B", license_name="llama3.1", license=LLAMA31_LICENSE,
                     seed="registry.ollama.ai/library/llama3.1:8b", **_PRESETS["llama", "8B"],
                     **llama),
        CatalogModel("llama3.1:70b", quant="Q4_K_M", title="Meta Llama 3.1 70B Instruct",
                     size_label="70B", license_name="llama3.1", license=LLAMA31_LICENSE,
                     **_PRESETS["llama", "70B"], **llama),
        CatalogModel("qwen2.5:14b", arch="qwen2", quant="Q4_K_M", title="Qwen2.5 14B Instruct",
                     size_label="14B", license_name="apache-2.0", license=APACHE_LICENSE,
                     system=QWEN_SYSTEM, **_PRESETS["qwen2", "14B"], **_ARCH_DEFAULTS["qwen2"]),
        CatalogModel("qwen2.5:0.5b", arch="qwen2", quant="Q4_K_M", title="Qwen2.5 0.5B Instruct",
                     size_label="0.5B", license_name="apache-2.0", license=APACHE_LICENSE,
                     system=QWEN_SYSTEM, **_PRESETS["qwen2", "0.5B"],
                     **_ARCH_DEFAULTS["qwen2"]),
        CatalogModel("nomic-embed-text:latest", arch="nomic-bert", title="nomic-embed-text-v1.5",
                     size_label="137M", license_name="apache-2.0", license=APACHE_LICENSE,
                     parameter_size="137M", **_PRESETS["nomic-bert", "137M"],
                     **_ARCH_DEFAULTS["nomic-bert"]),
        CatalogModel("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", quant="Q4_K_M",
                     title="Llama 3.2 1B Instruct", size_label="1B", license_name="llama3.2",
                     **_PRESETS["llama", "1B"], **llama),
        # The 2-layer model of the 0.12.9 captures (38240 parameters, F16).
        CatalogModel("tiny:latest", arch="llama", block_count=2, context_length=256,
                     embedding_length=32, feed_forward_length=64, head_count=4,
                     head_count_kv=4, vocab_size=275, tokenizer="llama-spm", quant="F16",
                     rope_freq_base=10000.0, template="", params={"num_ctx": 256}),
    ]
    return {m.name: m for m in models}


#: The built-in catalog: full name -> CatalogModel.
CATALOG: dict[str, CatalogModel] = _builtin_catalog()


# ======================================================================================
# Faults and recorded requests
# ======================================================================================

FAULT_KINDS = ("drop", "stall", "error_line", "http_500", "garbage", "backwards",
               "slow_headers", "registry_unreachable",
               "stuck")  # added for the pull tests (issue 3)
_POSITIONAL = ("drop", "stall", "error_line", "backwards", "garbage", "stuck")


@dataclass(eq=False)
class Fault:
    """One injected failure; see the module docstring for the kinds."""

    kind: str
    endpoint: str | None = "/api/pull"
    times: int | None = 1
    after_bytes: int | None = None
    model: str | None = None
    blob: str | None = None
    seconds: float | None = None
    message: str | None = None
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {FAULT_KINDS}")
        self._model_key = parse_name(self.model).key if self.model else None

    @property
    def spent(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matches(self, path: str, name: ModelName | None) -> bool:
        if self.endpoint is not None and not fnmatch.fnmatchcase(path, self.endpoint):
            return False
        return self._model_key is None or (name is not None and name.key == self._model_key)

    def matches_blob(self, digest: str) -> bool:
        if not self.blob:
            return True
        want = self.blob.lower().removeprefix("sha256:").removeprefix("sha256-")
        return digest.split(":", 1)[-1].startswith(want)

    def is_digest_mismatch(self) -> bool:
        return self.kind == "error_line" and (self.message or "").startswith("digest mismatch")


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


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Dropped(Exception):
    """The connection was closed on purpose (fault)."""


class _ClientGone(Exception):
    """The client went away."""


class _Stopping(Exception):
    """The server is shutting down."""


Event = Union[dict, tuple]


# ======================================================================================
# Server state
# ======================================================================================


@dataclass(eq=False)
class _Installed:
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
class _Loaded:
    key: tuple[str, str, str, str]
    name: str
    size: int
    size_vram: int
    context_length: int
    expires_ns: int
    digest: str
    details: dict[str, Any]
    tokens_per_second: float


@dataclass(eq=False)
class _Download:
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


# ======================================================================================
# HTTP handler
# ======================================================================================

_REGISTRY_RE = re.compile(r"^/v2/(?P<repo>.+)/(?P<what>manifests|blobs)/(?P<ref>[^/]+)$")
_CDN_RE = re.compile(r"^/cdn/blobs/sha256/[0-9a-f]{2}/(?P<hex>[0-9a-f]{64})/data$")
_BLOBS_API_RE = re.compile(r"^/api/blobs/(?P<digest>sha256[:-][0-9a-f]{64})$")
_V1_MODEL_RE = re.compile(r"^/v1/models/(?P<name>.+)$")
_WORDS = ("The", " sky", " is", " blue", " because", " molecules", " in", " the", " air",
          " scatter", " blue", " light", " from", " the", " sun", " more", " than", " red",
          " light", ".")


class _Handler(BaseHTTPRequestHandler):
    # Go's net/http (and so Ollama) sets TCP_NODELAY; without it small answers wait
    # ~40 ms for a delayed ACK (Nagle), which no real server shows.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

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
        with contextlib.suppress(OSError, _Dropped, _ClientGone, _Stopping):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.d.verbose:
            super().log_message(format, *args)

    def version_string(self) -> str:
        return ""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

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

    def _dispatch(self, method: str) -> None:
        d = self.d
        self._headers_sent = False
        url = urlsplit(self.path)
        path = url.path or "/"
        body = self._read_body()
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        self.rec = RecordedRequest(
            method=method, path=path, query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()}, body=body, json=parsed)
        d._record(self.rec)
        try:
            if d._stopping.is_set():
                raise _Stopping()
            if self._faults_before(method, path, parsed):
                return
            self._route(method, path, body, parsed)
        except _ApiError as e:
            self.send_json(e.status, {"error": e.message})
        except _Dropped:
            self.close_connection = True
            raise
        except (_ClientGone, _Stopping):
            self.close_connection = True
            raise
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            raise _ClientGone() from None
        except Exception as e:  # a bug in the double: say so loudly, answer 500
            traceback.print_exc(file=sys.stderr)
            if not self._headers_sent:
                self.send_json(500, {"error": f"test double bug: {e!r}"})
            self.close_connection = True

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
            raise _ClientGone() from None

    def _write(self, data: bytes) -> None:
        # Counted before sending: a client that has read everything sees the final count.
        self.rec.bytes_sent += len(data)
        self.d._count_bytes(self.rec.path, len(data))
        try:
            self.wfile.write(data)
        except OSError:
            self.rec.bytes_sent -= len(data)
            self.d._count_bytes(self.rec.path, -len(data))
            raise _ClientGone() from None

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
        raise _Dropped()

    def wait(self, seconds: float | None) -> None:
        """Send nothing for `seconds` (None: until the client goes); notice a client that
        disconnects and a server that stops."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if self.d._stopping.is_set():
                raise _Stopping()
            remaining = 0.05 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return
            step = min(0.05, remaining)
            try:
                readable, _, _ = select.select([self.connection], [], [], step)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    raise _ClientGone()
            except (OSError, ValueError):
                raise _ClientGone() from None
            if readable:
                self.d._stopping.wait(step)

    # ---- faults before routing ----------------------------------------------------------
    def _request_model(self, path: str, parsed: Any) -> ModelName | None:
        raw = None
        if isinstance(parsed, dict):
            raw = parsed.get("model") or parsed.get("name") or parsed.get("source")
        match = _REGISTRY_RE.match(path)
        if match and raw is None and match["what"] == "manifests":
            parts = match["repo"].split("/")
            ref = match["ref"]
            raw = f"{'/'.join(parts[-2:])}:{ref}" if not ref.startswith("sha256:") else None
        if not isinstance(raw, str):
            return None
        try:
            return parse_name(raw)
        except UsageError:
            return None

    def _faults_before(self, method: str, path: str, parsed: Any) -> bool:
        d = self.d
        name = self._request_model(path, parsed)
        for f in d._matching_faults(("slow_headers",), path, name):
            if d._consume(f):
                self.wait(1.0 if f.seconds is None else f.seconds)
        for f in d._matching_faults(("http_500",), path, name):
            if d._consume(f):
                self.send_json(500, {"error": f.message or "internal server error"})
                return True
        # In a pull and on a blob GET, drop/stall fire at a byte position (later).
        positional_here = path == "/api/pull" or (
            method == "GET" and (("/blobs/" in path and path.startswith("/v2/"))
                                 or path.startswith("/cdn/")))
        if positional_here:
            return False
        for f in d._matching_faults(("drop", "stall"), path, name):
            if d._consume(f):
                if f.kind == "drop":
                    self.drop()
                self.wait(f.seconds)
        return False

    # ---- routing -----------------------------------------------------------------------
    def _route(self, method: str, path: str, body: bytes, parsed: Any) -> None:
        d = self.d
        get = method in ("GET", "HEAD")
        if path.startswith(("/v2/", "/v2")) and get and (path in ("/v2", "/v2/")
                                                         or _REGISTRY_RE.match(path)):
            self.registry(path)
            return
        if path.startswith("/cdn/") and get and _CDN_RE.match(path):
            self.cdn(path)
            return
        if path == "/token" and method == "GET":
            self.token()
            return
        simple: dict[tuple[str, str], Callable[[], None]] = {
            ("GET", "/"): self.root,
            ("HEAD", "/"): self.root,
            ("GET", "/api/version"): self.api_version,
            ("HEAD", "/api/version"): self.api_version,
            ("GET", "/api/tags"): self.api_tags,
            ("HEAD", "/api/tags"): self.api_tags,
            ("GET", "/api/ps"): self.api_ps,
            ("POST", "/api/show"): self.api_show,
            ("POST", "/api/pull"): self.api_pull,
            ("POST", "/api/push"): self.api_push,
            ("POST", "/api/generate"): self.api_generate,
            ("POST", "/api/chat"): self.api_chat,
            ("POST", "/api/embed"): self.api_embed,
            ("POST", "/api/embeddings"): self.api_embeddings,
            ("POST", "/api/create"): self.api_create,
            ("DELETE", "/api/delete"): self.api_delete,
            ("POST", "/api/copy"): self.api_copy,
            ("GET", "/v1/models"): self.v1_models,
            ("POST", "/v1/chat/completions"): self.v1_chat,
        }
        handler = simple.get((method, path))
        if handler is not None:
            if path not in ("/", "/api/version"):
                d._materialize_all()
            handler()
            return
        if method == "POST" and path == "/v1/responses" and d.supports_responses:
            d._materialize_all()
            self.v1_responses()
            return
        match = _BLOBS_API_RE.match(path)
        if match and method in ("HEAD", "POST"):
            self.api_blobs(method, match["digest"].replace("-", ":"), body)
            return
        match = _V1_MODEL_RE.match(path)
        if match and method == "GET":
            d._materialize_all()
            self.v1_model(match["name"])
            return
        self.send_not_found()

    def _json(self) -> dict[str, Any]:
        body = self.rec.body
        if not body.strip():
            raise _ApiError(400, "missing request body")
        if not isinstance(self.rec.json, dict):
            try:
                json.loads(body)
            except ValueError:
                first = body.strip()[:1].decode(errors="replace")
                raise _ApiError(400, f"invalid character '{first}' looking for beginning of "
                                     "value") from None
            raise _ApiError(400, "json: cannot unmarshal into Go value of type api.Request")
        return self.rec.json

    # ---- Ollama: basics ------------------------------------------------------------------
    def root(self) -> None:
        self.send_bytes(200, b"Ollama is running", TEXT_CT)

    def api_version(self) -> None:
        self.send_json(200, {"version": self.d.version})

    def api_tags(self) -> None:
        models = []
        for m in self.d._installed_sorted():
            entry = {"name": m.name.short, "model": m.name.short,
                     "modified_at": rfc3339(m.modified_ns), "size": m.size, "digest": m.digest,
                     "details": m.details()}
            if self.d.llama_server:  # 0.30 added these (a real 0.32.15 sends them)
                entry["details"].update(context_length=m.source.context_length,
                                        embedding_length=m.source.embedding_length)
                entry["capabilities"] = self.d._caps(m)
            models.append(entry)
        self.send_json(200, {"models": models})

    def api_ps(self) -> None:
        self.send_json(200, {"models": [{
            "name": m.name,
            "model": m.name,
            "size": m.size,
            "digest": m.digest,
            "details": m.details,
            "expires_at": rfc3339(m.expires_ns),
            "size_vram": m.size_vram,
            "context_length": m.context_length,
        } for m in self.d._loaded_sorted()]})

    def api_show(self) -> None:
        d = self.d
        req = self._json()
        raw = req.get("model") or req.get("name") or ""
        if not raw:
            raise _ApiError(400, "model is required")
        try:
            name = parse_name(raw)
        except UsageError:
            raise _ApiError(400, "invalid model name") from None
        inst = d._get_installed(name)
        if inst is None:
            raise _ApiError(404, f"model '{name.short if d.llama_server else raw}' not found")
        self.send_json(200, d._show(inst, verbose=bool(req.get("verbose"))))

    # ---- Ollama: pull / push ----------------------------------------------------------------
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

    def api_pull(self) -> None:
        req = self._json()
        raw = req.get("model") or req.get("name") or ""
        try:
            name = parse_name(raw)
        except UsageError:
            raise _ApiError(400, "invalid model name") from None
        self._stream_or_single(self.d._pull_events(name, self.rec.path), req)

    def api_push(self) -> None:
        d = self.d
        req = self._json()
        raw = req.get("model") or req.get("name") or ""
        try:
            name = parse_name(raw)
        except UsageError:
            raise _ApiError(400, "invalid model name") from None
        inst = d._get_installed(name)

        def events() -> Iterator[Event]:
            yield {"status": "retrieving manifest"}
            if inst is None:
                yield {"status": "couldn't retrieve manifest"}
                yield {"error": f"open {BLOBS_DIR[:-6]}/manifests/{name.host}/{name.namespace}/"
                                f"{name.model}/{name.tag}: no such file or directory"}
                return
            assert inst.layers is not None and inst.config is not None
            for b in [*inst.layers, inst.config]:
                yield {"status": f"pushing {b.hex[:12]}", "digest": b.digest, "total": b.size,
                       "completed": b.size}
            yield {"status": "pushing manifest"}
            yield {"status": "success"}

        self._stream_or_single(events(), req)

    # ---- Ollama: generate / chat / embed -------------------------------------------------
    def _model_for_run(self, req: dict[str, Any], *,
                       embed: bool = False) -> tuple[str, _Installed]:
        raw = req.get("model") or ""
        if not raw:
            raise _ApiError(400, "model is required")
        try:
            name = parse_name(raw)
        except UsageError:
            raise _ApiError(404, f"model '{raw}' not found") from None
        inst = self.d._get_installed(name)
        if inst is None and self.d.llama_server:  # the texts of a real 0.32.15
            raise _ApiError(404, f"model {json.dumps(raw)} not found, try pulling it first"
                            if embed else f"model '{raw}' not found")
        if inst is None:
            raise _ApiError(404, f"model '{raw}' not found, try pulling it first")
        return raw, inst

    def api_generate(self) -> None:
        d = self.d
        req = self._json()
        raw, inst = self._model_for_run(req)
        prompt = req.get("prompt") or ""
        keep_alive = _parse_duration(req.get("keep_alive"))
        if not prompt and not req.get("images") and keep_alive == 0:
            d._unload(inst)
            self.send_json(200, {"model": raw, "created_at": rfc3339(time.time_ns()),
                                 "response": "", "done": True, "done_reason": "unload"})
            return
        if "completion" not in d._caps(inst):
            raise _ApiError(400, f'"{raw}" does not support generate')
        loaded, load_ns = d._load(inst, req.get("options") or {}, req.get("keep_alive"))
        if not prompt:
            self.send_json(200, {"model": raw, "created_at": rfc3339(time.time_ns()),
                                 "response": "", "done": True, "done_reason": "load"})
            return
        self._generate_stream(raw, req, loaded, load_ns, prompt, chat=False)
        if keep_alive == 0:
            d._unload(inst)

    def api_chat(self) -> None:
        d = self.d
        req = self._json()
        raw, inst = self._model_for_run(req)
        messages = req.get("messages") or []
        keep_alive = _parse_duration(req.get("keep_alive"))
        if not messages and keep_alive == 0:
            d._unload(inst)
            self.send_json(200, {"model": raw, "created_at": rfc3339(time.time_ns()),
                                 "message": {"role": "assistant", "content": ""},
                                 "done_reason": "unload", "done": True})
            return
        if "completion" not in d._caps(inst):
            raise _ApiError(400, f'"{raw}" does not support chat')
        loaded, load_ns = d._load(inst, req.get("options") or {}, req.get("keep_alive"))
        if not messages:
            self.send_json(200, {"model": raw, "created_at": rfc3339(time.time_ns()),
                                 "message": {"role": "assistant", "content": ""},
                                 "done_reason": "load", "done": True})
            return
        prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        self._generate_stream(raw, req, loaded, load_ns, prompt, chat=True)

    def _generate_stream(self, raw: str, req: dict[str, Any], loaded: _Loaded, load_ns: int,
                         prompt: str, chat: bool) -> None:
        d = self.d
        plan = d._completion(loaded, load_ns, prompt, req.get("options") or {})
        stream = req.get("stream") is not False
        name = loaded.key
        faults = d._matching_faults(("error_line", "garbage"), self.rec.path,
                                    ModelName(*name) if name else None)

        def obj(text: str, ts: int) -> dict[str, Any]:
            if chat:
                return {"model": raw, "created_at": rfc3339(ts),
                        "message": {"role": "assistant", "content": text}, "done": False}
            return {"model": raw, "created_at": rfc3339(ts), "response": text, "done": False}

        final: dict[str, Any] = {"model": raw, "created_at": rfc3339(plan["end_ns"])}
        if chat:
            final["message"] = {"role": "assistant", "content": "" if stream else plan["text"]}
            final["done_reason"] = plan["done_reason"]
            final["done"] = True
        else:
            final["response"] = "" if stream else plan["text"]
            final["done"] = True
            final["done_reason"] = plan["done_reason"]
            final["context"] = plan["context"]
        for key in ("total_duration", "load_duration", "prompt_eval_count",
                    "prompt_eval_duration", "eval_count", "eval_duration"):
            final[key] = plan[key]
        if not stream:
            self.send_json(200, final)
            return
        self.start_stream()
        for i, (text, ts) in enumerate(zip(plan["tokens"], plan["times"])):
            self.line(obj(text, ts))
            if i == 0:
                for f in faults:
                    if d._consume(f):
                        if f.kind == "garbage":
                            self.chunk(((f.message or DEFAULT_GARBAGE) + "\n").encode())
                        else:
                            self.line({"error": f.message or "an error was encountered while "
                                                             "running the model"})
                            self.end_stream()
                            return
            if d.token_delay and d._stopping.wait(d.token_delay):
                raise _Stopping()
        self.line(final)
        self.end_stream()

    def api_embed(self) -> None:
        d = self.d
        req = self._json()
        raw, inst = self._model_for_run(req, embed=True)
        if d.llama_server and "embedding" not in d._caps(inst):
            # 0.30+: llama-server runs a completion model without --embeddings.
            raise _ApiError(501, "This server does not support embeddings. Start it with "
                                 "`--embeddings`")
        inputs = req.get("input")
        items = inputs if isinstance(inputs, list) else [inputs or ""]
        loaded, load_ns = d._load(inst, req.get("options") or {}, req.get("keep_alive"))
        dim = inst.source.embedding_length
        vectors = [d._embedding(str(text), dim) for text in items]
        count = sum(max(1, len(str(t).split())) for t in items)
        total = load_ns + int(count / (loaded.tokens_per_second * 20) * 1e9) + 1_000_000
        self.send_json(200, {"model": raw, "embeddings": vectors, "total_duration": total,
                             "load_duration": load_ns, "prompt_eval_count": count})

    def api_embeddings(self) -> None:
        d = self.d
        req = self._json()
        _, inst = self._model_for_run(req, embed=True)
        d._load(inst, req.get("options") or {}, req.get("keep_alive"))
        vector = d._embedding(str(req.get("prompt") or ""), inst.source.embedding_length)
        self.send_json(200, {"embedding": [float(x) for x in vector]})

    # ---- Ollama: create / delete / copy / blobs -----------------------------------------
    def api_create(self) -> None:
        req = self._json()
        raw = req.get("model") or req.get("name") or ""
        try:
            name = parse_name(raw)
        except UsageError:
            raise _ApiError(400, "invalid model name") from None
        if not req.get("from") and not req.get("files"):
            raise _ApiError(400, "neither 'from' or 'files' was specified")
        if req.get("files") and not req.get("from"):
            raise _ApiError(400, "creating from 'files' is not supported by the test double")
        self._stream_or_single(self.d._create_events(name, req, self.rec.path), req)

    def api_delete(self) -> None:
        req = self._json()
        raw = req.get("model") or req.get("name") or ""
        try:
            name = parse_name(raw)
        except UsageError:
            raise _ApiError(400, "invalid model name") from None
        if not self.d.remove(name.full):
            raise _ApiError(404, f"model '{raw}' not found")
        self.send_bytes(200, b"", None)

    def api_copy(self) -> None:
        d = self.d
        req = self._json()
        source, dest = req.get("source") or "", req.get("destination") or ""
        try:
            src_name, dst_name = parse_name(source), parse_name(dest)
        except UsageError:
            raise _ApiError(400, "invalid model name") from None
        if not d._copy(src_name, dst_name):
            raise _ApiError(404, f"model {json.dumps(source)} not found")
        self.send_bytes(200, b"", None)

    def api_blobs(self, method: str, digest: str, body: bytes) -> None:
        d = self.d
        if method == "HEAD":
            self.send_bytes(200 if d._has_blob(digest) else 404, b"", None)
            return
        if "sha256:" + _sha256(body) != digest:
            raise _ApiError(400, "digest mismatch")
        d._store_blob(BytesBlob(body, "application/octet-stream"))
        self.send_bytes(201, b"", None)

    # ---- OpenAI compatibility ------------------------------------------------------------
    def _openai_error(self, status: int, message: str) -> None:
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        self.send_json(status, {"error": {"message": message, "type": kind, "param": None,
                                          "code": None}}, ctype=PLAIN_JSON_CT)

    def v1_models(self) -> None:
        data = [{"id": m.name.short, "object": "model", "created": m.modified_ns // 10**9,
                 "owned_by": m.name.namespace} for m in self.d._installed_sorted()]
        self.send_json(200, {"object": "list", "data": data}, ctype=PLAIN_JSON_CT)

    def v1_model(self, raw: str) -> None:
        try:
            name: ModelName | None = parse_name(raw)
        except UsageError:
            name = None
        inst = self.d._get_installed(name) if name is not None else None
        if inst is None:
            shown = name.short if name is not None and self.d.llama_server else raw
            self._openai_error(404, f"model '{shown}' not found")
            return
        self.send_json(200, {"id": raw, "object": "model", "created": inst.modified_ns // 10**9,
                             "owned_by": inst.name.namespace}, ctype=PLAIN_JSON_CT)

    def _openai_run(self) -> tuple[dict[str, Any], str, _Loaded, int] | None:
        try:
            req = self._json()
            raw, inst = self._model_for_run(req)
            if "completion" not in self.d._caps(inst):
                raise _ApiError(400, f'"{raw}" does not support chat')
            loaded, load_ns = self.d._load(inst, {}, None)
        except _ApiError as e:
            self._openai_error(e.status, e.message)
            return None
        return req, raw, loaded, load_ns

    def _sse(self, data: str, event: str | None = None) -> None:
        prefix = f"event: {event}\n" if event else ""
        self.chunk(f"{prefix}data: {data}\n\n".encode())

    def v1_chat(self) -> None:
        run = self._openai_run()
        if run is None:
            return
        req, raw, loaded, load_ns = run
        messages = req.get("messages") or []
        prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        max_tokens = req.get("max_tokens") or req.get("max_completion_tokens")
        plan = self.d._completion(loaded, load_ns, prompt,
                                  {"num_predict": max_tokens} if max_tokens else {})
        ident = f"chatcmpl-{secrets.randbelow(1000)}"
        created = int(time.time())
        finish = "length" if plan["done_reason"] == "length" else "stop"
        if req.get("stream"):
            self.start_stream("text/event-stream")
            new = self.d.llama_server  # 0.30+: as a real 0.32.15 streams
            for i, text in enumerate(plan["tokens"]):
                delta = {"content": text} if new and i else {"role": "assistant",
                                                             "content": text}
                self._sse(go_json({
                    "id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": raw, "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
            self._sse(go_json({
                "id": ident, "object": "chat.completion.chunk", "created": created,
                "model": raw, "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "delta": {} if new else {"role": "assistant",
                                                                  "content": ""},
                             "finish_reason": finish}]}))
            self._sse("[DONE]")
            self.end_stream()
            return
        self.send_json(200, {
            "id": ident, "object": "chat.completion", "created": created, "model": raw,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": plan["text"]},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": plan["prompt_eval_count"],
                      "completion_tokens": plan["eval_count"],
                      "total_tokens": plan["prompt_eval_count"] + plan["eval_count"]}},
            ctype=PLAIN_JSON_CT)

    def v1_responses(self) -> None:
        run = self._openai_run()
        if run is None:
            return
        req, raw, loaded, load_ns = run
        given = req.get("input")
        if isinstance(given, list):
            texts = []
            for item in given:
                content = item.get("content") if isinstance(item, dict) else item
                if isinstance(content, list):
                    texts += [str(c.get("text", "")) for c in content if isinstance(c, dict)]
                else:
                    texts.append(str(content or ""))
            prompt = " ".join(texts)
        else:
            prompt = str(given or "")
        max_tokens = req.get("max_output_tokens")
        plan = self.d._completion(loaded, load_ns, prompt,
                                  {"num_predict": max_tokens} if max_tokens else {})
        rid = f"resp_{secrets.token_hex(12)}"
        mid = f"msg_{secrets.token_hex(12)}"
        created = int(time.time())
        usage = {"input_tokens": plan["prompt_eval_count"], "output_tokens": plan["eval_count"],
                 "total_tokens": plan["prompt_eval_count"] + plan["eval_count"]}

        rich = self.d.llama_server  # 0.30+: the fuller object a real 0.32.15 sends
        if rich:
            usage.update(input_tokens_details={"cached_tokens": 0},
                         output_tokens_details={"reasoning_tokens": 0})

        def response(status: str, output: list[Any], with_usage: bool) -> dict[str, Any]:
            if rich:
                return {
                    "id": rid, "object": "response", "created_at": created,
                    "completed_at": created if status == "completed" else None,
                    "status": status, "incomplete_details": None, "model": raw,
                    "previous_response_id": None, "instructions": req.get("instructions"),
                    "output": output, "error": None, "tools": req.get("tools") or [],
                    "tool_choice": req.get("tool_choice", "auto"), "truncation": "disabled",
                    "parallel_tool_calls": True, "text": {"format": {"type": "text"}},
                    "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0,
                    "top_logprobs": 0, "temperature": 1, "reasoning": None,
                    "usage": usage if with_usage else None, "max_output_tokens": max_tokens,
                    "max_tool_calls": None, "store": False, "background": False,
                    "service_tier": "default", "metadata": {}, "safety_identifier": None,
                    "prompt_cache_key": None}
            return {"id": rid, "object": "response", "created_at": created, "status": status,
                    "error": None, "incomplete_details": None,
                    "instructions": req.get("instructions"), "model": raw, "output": output,
                    "parallel_tool_calls": True, "previous_response_id": None,
                    "tool_choice": req.get("tool_choice", "auto"),
                    "tools": req.get("tools") or [],
                    "usage": usage if with_usage else None}

        logprobs: dict[str, Any] = {"logprobs": []} if rich else {}
        part = {"type": "output_text", "text": plan["text"], "annotations": [], **logprobs}
        message = {"id": mid, "type": "message", "status": "completed", "role": "assistant",
                   "content": [part]}
        if not req.get("stream"):
            self.send_json(200, response("completed", [message], True), ctype=PLAIN_JSON_CT)
            return
        self.start_stream("text/event-stream")
        seq = itertools.count()

        def event(kind: str, **payload: Any) -> None:
            data = {"type": kind, "sequence_number": next(seq), **payload}
            # 0.30+ encodes the events from maps: every object's keys come sorted.
            self._sse(go_json(_sorted_keys(data) if rich else data), kind)

        event("response.created", response=response("in_progress", [], False))
        event("response.in_progress", response=response("in_progress", [], False))
        event("response.output_item.added", output_index=0,
              item={**message, "status": "in_progress", "content": []})
        event("response.content_part.added", item_id=mid, output_index=0, content_index=0,
              part={"type": "output_text", "text": "", "annotations": [], **logprobs})
        for text in plan["tokens"]:
            event("response.output_text.delta", item_id=mid, output_index=0, content_index=0,
                  delta=text, **logprobs)
        event("response.output_text.done", item_id=mid, output_index=0, content_index=0,
              text=plan["text"], **logprobs)
        event("response.content_part.done", item_id=mid, output_index=0, content_index=0,
              part=part)
        event("response.output_item.done", output_index=0, item=message)
        event("response.completed", response=response("completed", [message], True))
        self.end_stream()

    # ---- registry ------------------------------------------------------------------------
    def _registry_error(self, status: int, code: str, message: str, detail: Any = None,
                        extra: dict[str, str] | None = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if detail is not None:
            error["detail"] = detail
        self.send_json(status, {"errors": [error]}, extra)

    def registry(self, path: str) -> None:
        d = self.d
        match = _REGISTRY_RE.match(path)
        repo = None
        if match:
            parts = match["repo"].split("/")
            repo = "/".join(parts[-2:]) if len(parts) > 1 else f"library/{parts[0]}"
        if d.registry_auth and not d._token_ok(self.headers.get("Authorization"), repo):
            scope = f',scope="repository:{repo}:pull"' if repo else ""
            challenge = f'Bearer realm="{d.url}/token",service="{REGISTRY_SERVICE}"{scope}'
            detail = [{"Type": "repository", "Name": repo, "Action": "pull"}] if repo else None
            self._registry_error(401, "UNAUTHORIZED", "authentication required", detail,
                                 {"WWW-Authenticate": challenge})
            return
        if match is None:
            self.send_json(200, {}, {"Docker-Distribution-Api-Version": "registry/2.0"})
            return
        assert repo is not None
        namespace, model = repo.split("/")
        ref = match["ref"]
        if match["what"] == "manifests":
            arts = d._registry_manifest(namespace, model, ref)
            if arts is None:
                self._registry_error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Tag": ref})
                return
            digest = "sha256:" + arts.digest
            self.send_bytes(200, arts.manifest, MT_MANIFEST,
                            {"Docker-Content-Digest": digest, "Etag": f'"{digest}"'})
            return
        blob = d._registry_blob(namespace, model, ref)
        if blob is None:
            self._registry_error(404, "BLOB_UNKNOWN", "blob unknown to registry", ref)
            return
        if d.blob_redirect:
            hexd = blob.hex
            location = f"{d.url}/cdn/blobs/sha256/{hexd[:2]}/{hexd}/data?X-Amz-Expires=1200"
            self.send_bytes(307, b"", None, {"Location": location})
            return
        self._serve_blob(blob)

    def cdn(self, path: str) -> None:
        match = _CDN_RE.match(path)
        assert match is not None
        blob = self.d._find_blob("sha256:" + match["hex"])
        if blob is None:
            self.send_bytes(404, b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey"
                                 b"</Code></Error>", "application/xml")
            return
        self._serve_blob(blob)

    def _serve_blob(self, blob: Blob) -> None:
        d = self.d
        size = blob.size
        start, end, status = 0, size, 200
        extra = {"Accept-Ranges": "bytes", "Docker-Content-Digest": blob.digest,
                 "Etag": f'"{blob.digest}"'}
        header = self.headers.get("Range")
        if header:
            match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
            if match and (match[1] or match[2]):
                if match[1]:
                    start = int(match[1])
                    end = min(int(match[2]) + 1, size) if match[2] else size
                else:
                    start, end = max(0, size - int(match[2])), size
                if start >= size or start >= end:
                    self.send_bytes(416, b"", None, {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
                extra["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        self._head(status, "application/octet-stream", end - start, extra)
        if self.command == "HEAD":
            return
        name = self._request_model(self.rec.path, None)
        faults = [f for f in d._matching_faults(("drop", "stall"), self.rec.path, name)
                  if f.matches_blob(blob.digest)]
        fired: set[int] = set()
        pos = start
        while pos < end:
            sent = pos - start
            n = min(MIB, end - pos)
            for f in faults:
                point = f.after_bytes or 0
                if id(f) in fired or f.spent:
                    continue
                if sent >= point:
                    if not d._consume(f):
                        continue
                    fired.add(id(f))
                    if f.kind == "drop":
                        self.drop()
                    self.wait(f.seconds)
                elif sent + n > point:
                    n = point - sent
            self._write(blob.read(pos, n))
            pos += n

    def token(self) -> None:
        d = self.d
        scopes = [v for k, v in parse_qsl(urlsplit(self.path).query) if k == "scope"]
        repos: set[str] = set()
        for scope in " ".join(scopes).split():
            kind, _, rest = scope.partition(":")
            if kind == "repository" and ":" in rest:
                repos.add(rest.rsplit(":", 1)[0].lower())
        token = d._issue_token(repos)
        self.send_json(200, {"token": token, "access_token": token, "expires_in": 300,
                             "issued_at": rfc3339(time.time_ns())})


class _HTTPServer(ThreadingHTTPServer):
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
        if not isinstance(sys.exc_info()[1], (OSError, _Dropped, _ClientGone, _Stopping)):
            super().handle_error(request, client_address)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on right now (for servers started later, or a
    closed port to connect to)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# ======================================================================================
# The servers
# ======================================================================================


class OllamaTestServer:
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
        self._httpd: _HTTPServer | None = None
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
        self._models: dict[tuple[str, str, str, str], _Installed] = {}
        self._present: set[str] = set()
        self._local: dict[str, Blob] = {}
        self._registry_index: dict[str, Blob] = {}
        self._downloads: dict[str, _Download] = {}
        self._loaded: dict[tuple[str, str, str, str], _Loaded] = {}
        self._tokens: dict[str, set[str]] = {}
        now = time.time_ns()
        names = list(installed or [])
        for i, raw in enumerate(names):
            self.install(raw, modified_ns=now - (len(names) - i) * 1_000_000_000)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> OllamaTestServer:
        if self._httpd is not None:
            return self
        cls = _HTTPServer6 if ":" in self.host else _HTTPServer
        cls_with = type("_BoundServer", (cls,), {"double": self})
        self._httpd = cls_with((self.host, self.port), _Handler)
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
        return _url(self.host, self.port)

    @property
    def registry_url(self) -> str:
        """Base of the registry endpoints (`<registry_url>/v2/...`): the same server."""
        return self.url

    # ---- knobs and helpers ---------------------------------------------------------------
    def set_version(self, version: str) -> None:
        self.version = version

    @property
    def supports_responses(self) -> bool:
        return version_tuple(self.version) >= (0, 13, 4)

    @property
    def llama_server(self) -> bool:
        """Ollama 0.30+ (llama-server engine): the shapes seen on a real 0.32.15."""
        return version_tuple(self.version) >= (0, 30, 0)

    def add_fault(self, kind: str, **kwargs: Any) -> Fault:
        fault = Fault(kind, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def add_model(self, model: CatalogModel, installed: bool = False) -> CatalogModel:
        """Make the registry of this server serve `model` (and install it)."""
        with self._lock:
            self._catalog[model.key] = model
        if installed:
            self.install(model.name)
        return model

    def catalog_model(self, name: str) -> CatalogModel:
        model = self._catalog.get(parse_name(name).key)
        if model is None:
            raise KeyError(f"{name} is not in this server's catalog")
        return model

    def update_model(self, name: str) -> str:
        """The registry now serves a new version of this tag (new weights digest). Returns
        the new weights digest; an installed copy keeps the old one until pulled again."""
        model = self.catalog_model(name)
        with self._lock:
            self._revisions[model.key] = self._revisions.get(model.key, 0) + 1
            revision = self._revisions[model.key]
        return model.artifacts(revision).weights.digest

    def manifest(self, name: str) -> dict[str, Any]:
        """The manifest the registry serves now for `name` (a dict)."""
        model = self.catalog_model(name)
        return json.loads(model.artifacts(self._revisions.get(model.key, 0)).manifest)

    def install(self, name: str, modified_ns: int | None = None) -> None:
        """Put a catalog model on the server as if pulled (lazily materialised)."""
        parsed = parse_name(name)
        model = self._catalog.get(parsed.key)
        if model is None:
            raise ValueError(f"{name!r} is not in the catalog of this test server")
        with self._lock:
            self._models[parsed.key] = _Installed(
                name=model.model_name, source=model,
                revision=self._revisions.get(model.key, 0),
                modified_ns=modified_ns or time.time_ns())

    def remove(self, name: str) -> bool:
        """Delete an installed model (and its blobs no other model uses)."""
        key = parse_name(name).key
        with self._lock:
            self._materialize_all()
            inst = self._models.pop(key, None)
            if inst is None:
                return False
            self._loaded.pop(key, None)
            digests = {b.digest for b in inst.layers or []}
            if inst.config is not None:
                digests.add(inst.config.digest)
            self._prune(digests)
            return True

    def load(self, name: str, keep_alive: Any = None, num_ctx: int | None = None) -> None:
        """Load an installed model as /api/generate would (raises on memory errors)."""
        inst = self._get_installed(parse_name(name))
        if inst is None:
            raise KeyError(name)
        self._load(inst, {"num_ctx": num_ctx} if num_ctx else {}, keep_alive)

    def installed_names(self) -> list[str]:
        """Short names of the installed models, newest first (as /api/tags lists them)."""
        with self._lock:
            models = sorted(self._models.values(), key=lambda m: m.modified_ns, reverse=True)
            return [m.name.short for m in models]

    def loaded_names(self) -> list[str]:
        return [m.name for m in self._loaded_sorted()]

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if fnmatch.fnmatchcase(r.path, path)
                    and (method is None or r.method == method)]

    def placement(self, name: str, num_ctx: int | None = None) -> Placement:
        """Where a model would run (size, size_vram, cpu_bytes, tokens/s); a load fails
        when cpu_bytes > memory."""
        inst = self._get_installed(parse_name(name))
        model = inst.source if inst else self.catalog_model(name)
        weights = inst.weights.size if inst else model.artifacts(
            self._revisions.get(model.key, 0)).weights.size
        return self._placement(model, weights, num_ctx)

    # ---- internals: bookkeeping --------------------------------------------------------------
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

    def _issue_token(self, repos: set[str]) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = repos
        return token

    def _token_ok(self, header: str | None, repo: str | None) -> bool:
        if not header or not header.lower().startswith("bearer "):
            return False
        with self._lock:
            repos = self._tokens.get(header.split(None, 1)[1].strip())
        if repos is None:
            return False
        return repo is None or repo.lower() in repos

    # ---- internals: models and blobs ---------------------------------------------------------
    def _materialize(self, inst: _Installed) -> None:
        if inst.layers is not None:
            return
        arts = inst.source.artifacts(inst.revision)
        inst.layers, inst.config = list(arts.layers), arts.config
        inst.manifest, inst.digest = arts.manifest, arts.digest
        for blob in [*arts.layers, arts.config]:
            self._present.add(blob.digest)
            self._local[blob.digest] = blob

    def _materialize_all(self) -> None:
        with self._lock:
            for inst in list(self._models.values()):
                self._materialize(inst)

    def _installed_sorted(self) -> list[_Installed]:
        with self._lock:
            self._materialize_all()
            return sorted(self._models.values(), key=lambda m: m.modified_ns, reverse=True)

    def _get_installed(self, name: ModelName) -> _Installed | None:
        with self._lock:
            inst = self._models.get(name.key)
            if inst is not None:
                self._materialize(inst)
            return inst

    def _caps(self, inst: _Installed) -> list[str]:
        model = inst.source
        if model.capabilities is not None or model.is_embedding:
            return model.caps()
        template = inst.layer_text(MT_TEMPLATE)
        caps = ["completion"]
        if ".Tools" in template:
            caps.append("tools")
        if ".Thinking" in template or ".Think" in template:
            caps.append("thinking")
        return caps

    def _has_blob(self, digest: str) -> bool:
        with self._lock:
            return digest in self._present

    def _store_blob(self, blob: Blob) -> None:
        with self._lock:
            self._present.add(blob.digest)
            self._local[blob.digest] = blob

    def _find_blob(self, digest: str) -> Blob | None:
        with self._lock:
            return self._registry_index.get(digest) or self._local.get(digest)

    def _prune(self, candidates: set[str]) -> set[str]:
        """Remove blobs in `candidates` that no installed model uses; return them."""
        used: set[str] = set()
        for m in self._models.values():
            self._materialize(m)
            used |= {b.digest for b in [*(m.layers or []), *([m.config] if m.config else [])]}
        removed = candidates - used
        self._present -= removed
        for digest in removed:
            self._local.pop(digest, None)
        return removed

    def _catalog_for_repo(self, namespace: str, model: str) -> list[CatalogModel]:
        ns, mo = namespace.lower(), model.lower()
        with self._lock:
            found = [m for m in self._catalog.values()
                     if m.model_name.namespace.lower() == ns and m.model_name.model.lower() == mo]
        found.sort(key=lambda m: m.model_name.host.lower() != "registry.ollama.ai")
        return found

    def _registry_manifest(self, namespace: str, model: str, ref: str) -> Artifacts | None:
        for m in self._catalog_for_repo(namespace, model):
            current = self._revisions.get(m.key, 0)
            if ref.startswith("sha256:"):
                for revision in range(current, -1, -1):
                    arts = m.artifacts(revision)
                    if "sha256:" + arts.digest == ref:
                        self._index(arts)
                        return arts
            elif m.model_name.tag.lower() == ref.lower():
                arts = m.artifacts(current)
                self._index(arts)
                return arts
        return None

    def _index(self, arts: Artifacts) -> None:
        with self._lock:
            self._registry_index.update(arts.blobs)

    def _registry_blob(self, namespace: str, model: str, digest: str) -> Blob | None:
        for m in self._catalog_for_repo(namespace, model):
            for revision in range(self._revisions.get(m.key, 0), -1, -1):
                arts = m.artifacts(revision)
                blob = arts.blobs.get(digest)
                if blob is not None:
                    self._index(arts)
                    return blob
        return None

    # ---- internals: pull ---------------------------------------------------------------------
    def _unreachable(self, name: ModelName) -> str:
        hostname = name.host.split(":")[0] if not name.host.startswith("[") else name.host
        return (f'pull model manifest: Get "https://{name.host}/v2/{name.namespace}/{name.model}'
                f'/manifests/{name.tag}": dial tcp: lookup {hostname}: no such host')

    def _pull_events(self, name: ModelName, path: str) -> Iterator[Event]:
        yield {"status": "pulling manifest"}
        for f in self._matching_faults(("registry_unreachable",), path, name):
            if self._consume(f):
                yield {"error": f.message or self._unreachable(name)}
                return
        for f in self._matching_faults(("garbage",), path, name):
            if f.after_bytes is None and self._consume(f):
                yield ("garbage", f.message or DEFAULT_GARBAGE)
        with self._lock:
            model = self._catalog.get(name.key)
            revision = self._revisions.get(model.key, 0) if model else 0
        if model is None:
            yield {"error": "pull model manifest: file does not exist"}
            return
        arts = model.artifacts(revision)
        self._index(arts)
        self._materialize_all()
        downloaded: list[Blob] = []
        for blob in [*arts.layers, arts.config]:
            result = yield from self._pull_blob(blob, name, path)
            if result is None:
                return
            if result:
                downloaded.append(blob)
        yield {"status": "verifying sha256 digest"}
        for f in self._matching_faults(("error_line",), path, name):
            if not f.is_digest_mismatch():
                continue
            targets = [b for b in downloaded if f.blob and f.matches_blob(b.digest)] or (
                [] if f.blob else [b for b in downloaded if b.media_type == MT_MODEL])
            if targets and self._consume(f):
                bad = targets[0]
                with self._lock:
                    self._present.discard(bad.digest)
                    self._local.pop(bad.digest, None)
                    self.partial.pop(bad.digest, None)
                message = f.message or "digest mismatch"
                if message.strip() == "digest mismatch":
                    got = _sha256(f"corrupt {bad.digest}".encode())
                    message = (f"digest mismatch, file must be downloaded again: want "
                               f"{bad.digest}, got sha256:{got}")
                yield {"error": self._fmt(message, bad, name)}
                return
        yield {"status": "writing manifest"}
        removed = self._install_artifacts(name, model, revision, arts)
        if removed:
            yield {"status": "removing unused layers"}
        yield {"status": "success"}

    def _install_artifacts(self, name: ModelName, model: CatalogModel, revision: int,
                           arts: Artifacts) -> bool:
        with self._lock:
            old = self._models.get(name.key)
            display = old.name if old else name
            self._models[name.key] = _Installed(
                name=display, source=model, revision=revision, modified_ns=time.time_ns(),
                layers=list(arts.layers), config=arts.config, manifest=arts.manifest,
                digest=arts.digest)
            for blob in [*arts.layers, arts.config]:
                self._present.add(blob.digest)
                self._local[blob.digest] = blob
            if old is None or old.layers is None:
                return False
            old_digests = {b.digest for b in old.layers} | ({old.config.digest} if old.config
                                                            else set())
            stale = old_digests - set(arts.blobs)
            if stale:
                self._loaded.pop(name.key, None)
                self._prune(stale)
            return bool(stale)

    def _fmt(self, message: str, blob: Blob, name: ModelName) -> str:
        return (message.replace("{hex}", blob.hex).replace("{digest}", blob.digest)
                .replace("{model}", name.short))

    def _position_faults(self, path: str, name: ModelName, blob: Blob,
                         fired: set[int]) -> list[tuple[Fault, int]]:
        out = []
        for f in self._matching_faults(_POSITIONAL, path, name):
            if id(f) in fired or f.is_digest_mismatch():
                continue
            if f.kind == "garbage" and f.after_bytes is None:
                continue
            if not f.matches_blob(blob.digest):
                continue
            if f.kind == "backwards":
                back = f.after_bytes or blob.size // 4
                point = max(back, blob.size // 2)
            else:
                point = f.after_bytes or 0
            if not f.blob and point and blob.size <= point:
                continue
            out.append((f, point))
        return out

    def _advance(self, dl: _Download, limit: float) -> None:
        now = time.monotonic()
        if dl.hold:
            dl.last = now
            return
        if self.download_rate is None:
            dl.completed = max(dl.completed, limit)
        else:
            dl.completed = min(limit, dl.completed + self.download_rate * (now - dl.last))
        dl.last = now
        if dl.completed < dl.total:
            self.partial[dl.digest] = int(dl.completed)

    def _pull_blob(self, blob: Blob, name: ModelName,
                   path: str) -> Iterator[Event]:  # returns True/False/None via StopIteration
        digest, total = blob.digest, blob.size
        status = f"pulling {blob.hex[:12]}"

        def line(completed: int) -> dict[str, Any]:
            obj: dict[str, Any] = {"status": status, "digest": digest, "total": total}
            if completed:
                obj["completed"] = completed
            return obj

        with self._lock:
            present = digest in self._present
        if present:
            for _ in range(max(1, self.cached_lines)):
                yield line(total)
            return False
        with self._lock:
            dl = self._downloads.get(digest)
            if dl is None:
                dl = self._downloads[digest] = _Download(digest, total,
                                                         float(self.partial.get(digest, 0)))
            if dl.refs == 0:
                dl.last = time.monotonic()
            dl.refs += 1
        fired: set[int] = set()
        # 0.30+ reports a download only on its 60 ms tick, and not once it has finished:
        # a blob that arrives between two ticks has no line at all (a real 0.32.15).
        ticked = self.llama_server
        try:
            if not ticked:
                yield line(int(dl.completed))
            while True:
                for f, point in self._position_faults(path, name, blob, fired):
                    if dl.completed < point or not self._consume(f):
                        continue
                    fired.add(id(f))
                    if f.kind == "backwards":
                        back = f.after_bytes or total // 4
                        with self._lock:
                            dl.completed = max(0.0, dl.completed - back)
                            self.partial[digest] = int(dl.completed)
                        yield line(int(dl.completed))
                    elif f.kind == "garbage":
                        yield ("garbage", f.message or DEFAULT_GARBAGE)
                    elif f.kind == "stall":
                        with self._lock:
                            dl.hold += 1
                        try:
                            yield ("stall", f.seconds)
                        finally:
                            with self._lock:
                                dl.hold -= 1
                                dl.last = time.monotonic()
                    elif f.kind == "stuck":
                        # --- added for the pull tests (issue 3): a stuck download as real
                        # Ollama shows it, the same numbers every tick, no silence.
                        until = None if f.seconds is None else time.monotonic() + f.seconds
                        with self._lock:
                            dl.hold += 1
                        try:
                            while until is None or time.monotonic() < until:
                                if self._stopping.wait(self.tick):
                                    raise _Stopping()
                                yield line(int(dl.completed))
                        finally:
                            with self._lock:
                                dl.hold -= 1
                                dl.last = time.monotonic()
                        # --- end of the addition
                    elif f.kind == "error_line":
                        yield {"error": self._fmt(f.message or DEFAULT_PULL_ERROR, blob, name)}
                        return None
                    elif f.kind == "drop":
                        yield ("drop",)
                        return None
                if dl.completed >= total:
                    break
                if self.download_rate is not None and self._stopping.wait(self.tick):
                    raise _Stopping()
                points = [p for _, p in self._position_faults(path, name, blob, fired)
                          if p > dl.completed]
                with self._lock:
                    self._advance(dl, min([total, *points]))
                if not ticked or dl.completed < total:
                    yield line(int(dl.completed))
        finally:
            with self._lock:
                dl.refs -= 1
                if dl.completed >= total:
                    self._present.add(digest)
                    self._local[digest] = blob
                    self.partial.pop(digest, None)
                    self._downloads.pop(digest, None)
                else:
                    self.partial[digest] = int(dl.completed)
                    if dl.refs <= 0:
                        self._downloads.pop(digest, None)
        return True

    # ---- internals: create / copy ----------------------------------------------------------------
    def _create_events(self, name: ModelName, req: dict[str, Any], path: str) -> Iterator[Event]:
        raw_from = str(req.get("from") or "")
        try:
            from_name = parse_name(raw_from)
        except UsageError:
            yield {"error": "invalid model name"}
            return
        base = self._get_installed(from_name)
        if base is None:
            with self._lock:
                pullable = from_name.key in self._catalog
            if not pullable:
                yield {"status": "pulling manifest"}
                yield {"error": "pull model manifest: file does not exist"}
                return
            for ev in self._pull_events(from_name, path):
                if isinstance(ev, dict) and ev.get("status") == "success":
                    continue
                yield ev
                if isinstance(ev, dict) and "error" in ev:
                    return
            base = self._get_installed(from_name)
            assert base is not None
        assert base.layers is not None
        layers = list(base.layers)
        new_blobs: list[Blob] = []

        def replace(media_type: str, texts: list[str]) -> None:
            nonlocal layers
            layers = [b for b in layers if b.media_type != media_type]
            for text in texts:
                blob = BytesBlob(text.encode(), media_type)
                layers.append(blob)
                new_blobs.append(blob)

        if req.get("template") is not None:
            replace(MT_TEMPLATE, [str(req["template"])] if req["template"] else [])
        if req.get("system") is not None:
            replace(MT_SYSTEM, [str(req["system"])] if req["system"] else [])
        if req.get("license") is not None:
            lic = req["license"]
            replace(MT_LICENSE, [str(x) for x in lic] if isinstance(lic, list) else [str(lic)])
        if req.get("parameters") or any(b.media_type == MT_PARAMS for b in layers):
            # Ollama merges and writes the parameters again, after the other layers.
            params = base.params()
            params.update(req.get("parameters") or {})
            replace(MT_PARAMS, [go_json(params) + "\n"])
        faults = self._matching_faults(("error_line", "garbage"), path, name)
        first = True
        for blob in layers:
            with self._lock:
                exists = blob.digest in self._present
            verb = "using existing layer" if exists else "creating new layer"
            yield {"status": f"{verb} {blob.digest}"}
            if first:
                first = False
                for f in faults:
                    if self._consume(f):
                        if f.kind == "garbage":
                            yield ("garbage", f.message or DEFAULT_GARBAGE)
                        else:
                            yield {"error": f.message or "create failed"}
                            return
        config = make_config_blob(base.source, layers)
        manifest = manifest_bytes(config, layers)
        yield {"status": "writing manifest"}
        with self._lock:
            for blob in [*new_blobs, config]:
                self._present.add(blob.digest)
                self._local[blob.digest] = blob
            old = self._models.get(name.key)
            self._models[name.key] = _Installed(
                name=name, source=base.source, revision=base.revision,
                modified_ns=time.time_ns(), layers=layers, config=config, manifest=manifest,
                digest=_sha256(manifest), parent=base.name.short)
            if old is not None and old.layers is not None:
                self._loaded.pop(name.key, None)
                self._prune({b.digest for b in old.layers} - {b.digest for b in layers})
        yield {"status": "success"}

    def _copy(self, src: ModelName, dst: ModelName) -> bool:
        inst = self._get_installed(src)
        if inst is None:
            return False
        with self._lock:
            self._models[dst.key] = _Installed(
                name=dst, source=inst.source, revision=inst.revision,
                modified_ns=time.time_ns(), layers=list(inst.layers or []), config=inst.config,
                manifest=inst.manifest, digest=inst.digest, parent=inst.parent)
        return True

    # ---- internals: show ---------------------------------------------------------------------
    def _show(self, inst: _Installed, verbose: bool) -> dict[str, Any]:
        model = inst.source
        template = inst.layer_text(MT_TEMPLATE) or "{{ .Prompt }}"
        system = inst.layer_text(MT_SYSTEM)
        assert inst.layers is not None
        licenses = [b.text() for b in inst.layers if b.media_type == MT_LICENSE]
        params = inst.params()
        lines = ['# Modelfile generated by "ollama show"',
                 "# To build a new Modelfile based on this, replace FROM with:",
                 f"# FROM {inst.name.short}", "",
                 f"FROM {BLOBS_DIR}/sha256-{inst.weights.hex}",
                 f"TEMPLATE {_modelfile_quote(template)}"]
        if system:
            lines.append(f"SYSTEM {_modelfile_quote(system)}")
        param_lines = []
        for key in sorted(params):
            values = params[key] if isinstance(params[key], list) else [params[key]]
            for value in values:
                lines.append(f"PARAMETER {key} {_go_v(value)}")
                shown = json.dumps(value) if isinstance(value, str) else _go_v(value)
                param_lines.append(f"{key:<30} {shown}")
        lines += [f"LICENSE {_modelfile_quote(text)}" for text in licenses]
        resp: dict[str, Any] = {}
        if licenses:
            resp["license"] = "\n".join(licenses)
        resp["modelfile"] = "\n".join(lines) + "\n"
        if param_lines:
            resp["parameters"] = "\n".join(param_lines)
        resp["template"] = template
        if system:
            resp["system"] = system
        resp["details"] = inst.details(parent=True)
        info = model.model_info(inst.revision, verbose=verbose)
        if self.llama_server:  # 0.30+ lists it although the file may not have it
            info = dict(sorted({**info, "general.quantization_version": 2}.items()))
        resp["model_info"] = info
        resp["tensors"] = [{"name": n, "type": t, "shape": list(s)} for n, s, t in model.tensors]
        resp["capabilities"] = self._caps(inst)
        resp["modified_at"] = rfc3339(inst.modified_ns)
        return resp

    # ---- internals: memory, placement, load --------------------------------------------------
    def _default_ctx(self) -> int:
        version = version_tuple(self.version)
        if version < (0, 6, 7):
            return 2048
        if version < (0, 15, 5):
            return 4096
        total = sum(self.vram)
        return 262144 if total >= 47 * GIB else 32768 if total >= 23 * GIB else 4096

    def _placement(self, model: CatalogModel, weights: int, num_ctx: int | None,
                   params: dict[str, Any] | None = None) -> Placement:
        ctx = int(num_ctx or (params or {}).get("num_ctx") or self._default_ctx())
        ctx = min(ctx * self.num_parallel, model.context_length)
        blocks = model.block_count
        kv = ctx * blocks * model.head_count_kv * (model.head_dim_k + model.head_dim_v) * 2
        e, h, v = model.embedding_length, model.head_count, model.vocab_size
        graph = 4 * 512 * max(1 + 4 * e + ctx * (1 + h), e + v)
        total = weights + kv + graph
        if not self.vram:
            vram_bytes = 0
        elif any(total + GPU_MINIMUM <= g for g in self.vram):
            vram_bytes = total
        else:
            per_layer = (weights + kv) / (blocks + 1)
            layers = 0
            for g in self.vram:
                room = g - GPU_MINIMUM - graph
                if room >= 2 * per_layer:
                    layers += int(room // per_layer)
            layers = min(layers, blocks + 1)
            vram_bytes = total if layers >= blocks + 1 else int(total * layers / (blocks + 1))
        cpu = total - vram_bytes
        if self.tokens_per_second:
            tps = float(self.tokens_per_second)
        else:
            gpu_w = weights * vram_bytes / total
            seconds = (gpu_w / self.gpu_bandwidth + (weights - gpu_w) / self.cpu_bandwidth) / 0.7
            tps = 1.0 / seconds if seconds > 0 else 1000.0
        return Placement(total, vram_bytes, cpu, ctx, tps)

    def _load(self, inst: _Installed, options: dict[str, Any],
              keep_alive: Any) -> tuple[_Loaded, int]:
        """Load (or refresh) a model; returns it and the load duration in ns."""
        params = inst.params()
        num_ctx = options.get("num_ctx") or params.get("num_ctx")
        place = self._placement(inst.source, inst.weights.size, num_ctx)
        if place.cpu_bytes > self.memory:
            raise _ApiError(500, f"model requires more system memory "
                                 f"({human_bytes2(place.cpu_bytes)}) than is available "
                                 f"({human_bytes2(self.memory)})")
        seconds = _parse_duration(keep_alive)
        now = time.time_ns()
        expires = now + (int(seconds * 1e9) if seconds is not None else 200 * 365 * 86400 * 10**9)
        with self._lock:
            current = self._loaded.get(inst.name.key)
            fresh = current is None or current.context_length != place.context_length
        if fresh and self.load_delay and self._stopping.wait(self.load_delay):
            raise _Stopping()
        loaded = _Loaded(key=inst.name.key, name=inst.name.short, size=place.size,
                         size_vram=place.size_vram, context_length=place.context_length,
                         expires_ns=expires, digest=inst.digest, details=inst.details(),
                         tokens_per_second=place.tokens_per_second)
        with self._lock:
            self._loaded[inst.name.key] = loaded
        load_ns = int((0.25 + inst.weights.size / 2e9) * 1e9) if fresh else 15_000_000
        return loaded, load_ns

    def _unload(self, inst: _Installed) -> None:
        with self._lock:
            self._loaded.pop(inst.name.key, None)

    def _loaded_sorted(self) -> list[_Loaded]:
        now = time.time_ns()
        with self._lock:
            for key, m in list(self._loaded.items()):
                if m.expires_ns <= now:
                    del self._loaded[key]
            return sorted(self._loaded.values(), key=lambda m: m.expires_ns, reverse=True)

    def _completion(self, loaded: _Loaded, load_ns: int, prompt: str,
                    options: dict[str, Any]) -> dict[str, Any]:
        """Tokens and durations of one generation (virtual time from tokens/s)."""
        natural = 12
        limit = options.get("num_predict")
        count = natural if not limit or int(limit) < 0 else min(int(limit), natural)
        reason = "length" if limit and 0 <= int(limit) <= natural else "stop"
        tokens = [_WORDS[i % len(_WORDS)] for i in range(count)]
        prompt_count = max(1, int(len(prompt.split()) * 1.3) + 5)
        tps = loaded.tokens_per_second
        eval_ns = int(count / tps * 1e9)
        prompt_ns = int(prompt_count / (tps * 20) * 1e9)
        start = time.time_ns()
        times = [start + load_ns + prompt_ns + int((i + 1) / tps * 1e9) for i in range(count)]
        total = load_ns + prompt_ns + eval_ns + 1_000_000
        context = [(zlib.crc32(w.encode()) & 0xFFFF) + 256 for w in prompt.split()][:64] + [
            259 + i for i in range(count)]
        return {"tokens": tokens, "times": times, "text": "".join(tokens),
                "done_reason": reason, "context": context, "end_ns": start + total,
                "total_duration": total, "load_duration": load_ns,
                "prompt_eval_count": prompt_count, "prompt_eval_duration": prompt_ns,
                "eval_count": count, "eval_duration": eval_ns}

    def _embedding(self, text: str, dim: int) -> list[F32]:
        seed = int(_sha256(text.encode())[:8], 16)
        raw = [math.sin(seed * 0.001 + i * 0.37) for i in range(dim)]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        return [F32(x / norm) for x in raw]


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def _go_v(value: Any) -> str:
    """Go's %v of a JSON value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _modelfile_quote(text: str) -> str:
    """Ollama's Modelfile quoting: multi-line or padded values in quotes."""
    if "\n" in text or text.startswith(" ") or text.endswith(" "):
        return f'"""{text}"""' if '"' in text else f'"{text}"'
    return text


# ---- something else on the port ---------------------------------------------------------------

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
        return _url(self.host, self.port)

    def start(self) -> NotOllamaServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._stop.clear()
        if self.kind == "nginx":
            base = _HTTPServer6 if family == socket.AF_INET6 else _HTTPServer
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


# ======================================================================================
# CLI
# ======================================================================================


def _size(text: str) -> int:
    """`16GiB`, `8G`, `512MiB`, or a number of bytes."""
    match = re.fullmatch(r"\s*([\d.e+]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    unit = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": 1024 * GIB}[match[2].upper()]
    return int(float(match[1]) * unit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.ollama_server",
                                     description="Serve the Ollama test double until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--version", default="0.13.5", help="Ollama version to claim")
    parser.add_argument("--installed", nargs="*", default=[], help="catalog models present")
    parser.add_argument("--rate", default="50e9",
                        help="download bytes per second ('none' = instant)")
    parser.add_argument("--tick", type=float, default=0.06, help="seconds between progress lines")
    parser.add_argument("--memory", type=_size, default=16 * GIB, help="system RAM, e.g. 16GiB")
    parser.add_argument("--vram", type=_size, nargs="*", default=None,
                        help="GPU memory sizes, e.g. 8GiB 24GiB (flag alone: CPU only; "
                             "absent: one 8 GiB GPU)")
    parser.add_argument("--registry-auth", action="store_true")
    parser.add_argument("--blob-redirect", action="store_true")
    parser.add_argument("--not-ollama", choices=["nginx", "raw", "silent"],
                        help="serve something that is not Ollama instead")
    parser.add_argument("--list-catalog", action="store_true", help="print the catalog and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests")
    args = parser.parse_args(argv)
    if args.list_catalog:
        for model in CATALOG.values():
            arts = model.artifacts()
            print(f"{model.short:50} {model.quant:7} {arts.size:>13,d} B  header "
                  f"{arts.weights.header_size:>10,d} B  {model.param_size}")
        return 0
    server: OllamaTestServer | NotOllamaServer
    if args.not_ollama:
        server = NotOllamaServer(args.not_ollama, host=args.host, port=args.port)
    else:
        rate = None if args.rate.lower() == "none" else float(args.rate)
        server = OllamaTestServer(
            version=args.version, installed=args.installed, download_rate=rate, tick=args.tick,
            memory=args.memory, vram=args.vram,
            registry_auth=args.registry_auth, host=args.host, port=args.port,
            blob_redirect=args.blob_redirect, verbose=args.verbose)
    server.start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

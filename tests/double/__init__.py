"""A faithful test double of an Ollama server *and* of its registry, on loopback.

Every test of the project talks real HTTP to it. It reproduces what a real Ollama puts
on the wire: field names and order, fields left out when zero, Go's JSON encoding (`<`
written `\\u003c`, `10000` not `10000.0`), `application/x-ndjson` streams in chunked
transfer encoding, one progress line per blob per tick, the error texts. The real
server is the judge: tests/integration/test_contract.py sends the same requests to a
real Ollama 0.32.15 and to the double and compares the answers; tests/test_double.py
holds excerpts of a real 0.12.9's answers. Where a behaviour comes from, the module
names the file of Ollama's source (github.com/ollama/ollama) it follows.

The double shares no code with the package under test (`provision`): it parses model
names with its own copy of Ollama's rules (`names.py`), and tests/test_double_names.py
fails if any module here imports `provision`.

Usage::

    from tests.double import OllamaTestServer, Fault

    with OllamaTestServer(installed=["llama3.2:1b"]) as srv:
        httpx.get(srv.url + "/api/tags")
        srv.add_fault("drop", after_bytes=10**9)      # next pull drops mid-blob
        ...

    python -m tests.double --port 11434 --installed llama3.2:1b --rate 100e6

Modules, from the ground up: `names` (model names), `wire` (Go's JSON, times, sizes),
`gguf`, `tokenizers`, `blobs`, `templates`, `catalog` (the models the registry serves),
`faults`, `state` (what a double holds), `transport` (HTTP plumbing), `store`
(installed models, `/api/show`), `memory` (placement and loading), `registry`, `pull`,
`create`, `generate`, `openai`, `handler` (routing), `server` (`OllamaTestServer`),
`not_ollama`, `cli`; `hostile` is a relay that misbehaves in front of a double.

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
a real 0.12.9 sends 1), ``blob_redirect`` (registry blobs answer 307 to ``/cdn/...`` as
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

from tests.double.catalog import CATALOG, CatalogModel, make_catalog_model
from tests.double.faults import FAULT_KINDS, Fault
from tests.double.gguf import tensor_nbytes
from tests.double.names import InvalidName, ModelName, parse_name
from tests.double.not_ollama import NotOllamaServer
from tests.double.server import OllamaTestServer
from tests.double.state import Placement, RecordedRequest
from tests.double.transport import free_port
from tests.double.wire import GIB, KIB, MIB, go_json, human_bytes2

__all__ = [
    "CATALOG",
    "FAULT_KINDS",
    "GIB",
    "KIB",
    "MIB",
    "CatalogModel",
    "Fault",
    "InvalidName",
    "ModelName",
    "NotOllamaServer",
    "OllamaTestServer",
    "Placement",
    "RecordedRequest",
    "free_port",
    "go_json",
    "human_bytes2",
    "make_catalog_model",
    "parse_name",
    "tensor_nbytes",
]

"""One place that builds HTTP clients and bounds what any server can make this tool do.

Every client comes from `client()`: explicit timeouts, our User-Agent, proxy rules, and
a transport that bounds each request in bytes and in time, whatever the server does:

- a byte budget per endpoint (`BUDGETS`), counted on the *decoded* body: gzip and
  deflate are decoded here, a bounded piece at a time, so a gzip bomb stops at the
  budget; response headers are bounded by httpcore (100 KiB). Past a budget the read
  stops with `TooLarge`, naming the server, the request and the limit.
- a total deadline per request (`Timeouts.total`, or the endpoint's own in `DEADLINES`)
  covering connect, headers and body: the read timeout alone is per chunk, and a server
  trickling one byte a second never trips it. Every socket operation is given at most
  the time left (a thin wrapper around httpcore's network backend), so even headers
  sent a byte at a time end at the deadline with `DeadlineExceeded`. `deadline(s)`
  puts a whole operation (a command) under one more, outer deadline.
- JSON through `json_body()`: invalid, too deeply nested or out-of-range numbers are one
  `ValueError`, never a RecursionError or an OverflowError later.

Loopback never goes through HTTP_PROXY/HTTPS_PROXY (a corporate proxy in a user's
environment must not capture requests to their own machine). Other hosts follow the
usual proxy variables, NO_PROXY included, as curl does; a proxy variable that cannot be
used (a bad port, SOCKS without the `socksio` package) is one error line, its password
never shown.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import ssl
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

import httpcore
import httpx

from provision import __version__
from provision.errors import UsageError
from provision.loopback import is_loopback_host
from provision.output import printable
from provision.redact import credentials

USER_AGENT = f"ollama-provision/{__version__}"
KIB, MIB = 1 << 10, 1 << 20

# Decoded body bytes per endpoint (fnmatch on the URL path; the first match wins). Each is
# many times what a real server sends; parsed, the JSON in it is bounded by MAX_VALUES.
BUDGETS: tuple[tuple[str, int | None], ...] = (
    ("*/api/pull", None),  # a stream of progress lines: pull.py bounds each line
    ("*/api/blobs/*", 64 * KIB),  # an upload's short answer
    ("*/api/version", 64 * KIB),  # {"version":"0.13.5"}
    ("*/api/tags", 8 * MIB),  # ~350 bytes per model: room for 20,000 models
    ("*/api/show", 4 * MIB),  # verbose (whole tokenizer arrays, ~7 MB): VERBOSE_SHOW
    ("*/api/ps", 1 * MIB),
    ("*/api/create", 1 * MIB),  # a few status lines
    ("/v2/*/manifests/*", 4 * MIB),  # what Docker's registry itself accepts
    ("/v2/*/blobs/*", 1 * MIB),  # whole config/params blobs; ranges ask for their length
    ("*/api/*", 1 * MIB),  # generate, embed, delete (non-streamed, short answers)
    ("*/v1/*", 1 * MIB),  # the OpenAI-compatible endpoints verify asks
)
VERBOSE_SHOW = 16 * MIB  # /api/show with "verbose": the budget its caller asks for
DEFAULT_BUDGET = 64 * KIB  # `/`, token endpoints, anything else
ERROR_BUDGET = 64 * KIB  # what is read of an error page in a stream without a budget
HEADERS_BUDGET = 100 * KIB  # httpcore's own bound on a response's status line and headers

# Endpoints whose deadline is not the client's per-request total. None: no total deadline
# (a pull takes hours; its stall watchdog drops a stream without progress instead).
DEADLINES: tuple[tuple[str, float | None], ...] = (
    ("*/api/pull", None),
    ("*/api/blobs/*", None),  # an upload of GBs: bounded by its size (bundle's Pace)
    ("*/api/create", 600.0),  # the server copies or converts layers
)
# A request may carry its own: extensions={"budget": bytes or None, "deadline": seconds or
# None}, for what only its caller can size (a blob range, a whole blob it paces itself).

# JSON values an answer may hold, counted on its text before it is parsed (upper bounds:
# values = commas + brackets + braces, or quotes / 2; containers = brackets + braces;
# members of objects = colons). JSON of tiny values takes up to ~25x its size as Python
# objects (an empty string 49 bytes, an object member ~150); with these caps a parsed
# answer stays near 100 MB at most, whatever its shape. Real answers: a verbose /api/show
# has ~800,000 values (the tokenizer's tokens, merges, types), ~3,000 containers and
# ~5,000 members (tensors); /api/tags ~12 values, 2 containers, 15 members per model.
MAX_VALUES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("*/api/show", (1_500_000, 50_000, 100_000)),
    ("*/api/tags", (300_000, 60_000, 300_000)),
)
DEFAULT_MAX_VALUES = (100_000, 20_000, 100_000)  # (values, containers, members)

ACCEPT_ENCODING = "gzip, deflate"  # what this module decodes (bounded); nothing else
_PIECE = 64 * KIB  # most decoded bytes produced from one compressed chunk at a time


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `read` is per chunk (a slow stream is not a timeout); `total` bounds one
    whole request, however the server spreads its bytes out."""

    connect: float = 3.0
    read: float = 10.0
    write: float = 10.0
    pool: float = 5.0
    total: float = 30.0

    @classmethod
    def for_server(cls, connect: float, read: float) -> Timeouts:
        """From a manifest's or an inventory's timeouts: a request may take `read` seconds
        to start answering (loading a model) and as long again to finish."""
        return cls(connect=connect, read=read, total=connect + 2 * read)


class TooLarge(Exception):
    """A body or headers past their budget (mixed into an httpx error below)."""


class BodyTooLarge(httpx.DecodingError, TooLarge):
    """A body past its budget."""


class DeadlineExceeded(httpx.ReadTimeout):
    """A request past its total deadline."""


class BadEncoding(httpx.DecodingError):
    """A content encoding that was not asked for, or a body it does not decode."""


def is_deadline(exc: BaseException) -> bool:
    return isinstance(exc, DeadlineExceeded)


def is_too_large(exc: BaseException) -> bool:
    return isinstance(exc, TooLarge)


def budget_for(path: str) -> int | None:
    return next((b for pattern, b in BUDGETS if fnmatch.fnmatchcase(path, pattern)),
                DEFAULT_BUDGET)


def _deadline_for(path: str, default: float) -> float | None:
    return next((d for pattern, d in DEADLINES if fnmatch.fnmatchcase(path, pattern)), default)


def size_text(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB and n % MIB == 0 else f"{n // KIB} KiB"


# --- deadlines ----------------------------------------------------------------------------

_local = threading.local()


@dataclass(frozen=True)
class _Deadline:
    at: float  # time.monotonic()
    seconds: float
    what: str  # "one request", "the whole check"...

    @property
    def left(self) -> float:
        return self.at - time.monotonic()


def _current() -> _Deadline | None:
    return getattr(_local, "deadline", None)


@contextlib.contextmanager
def _active(deadline: _Deadline | None) -> Iterator[None]:
    previous = _current()
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


def _earliest(a: _Deadline | None, b: _Deadline | None) -> _Deadline | None:
    if a is None or b is None:
        return a or b
    return a if a.at <= b.at else b


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Every request this thread makes inside must end within `seconds` from now (and
    within any deadline already around it): for a whole command or operation."""
    mine = _Deadline(time.monotonic() + seconds, seconds, what)
    with _active(_earliest(_current(), mine)):
        yield


def _bounded(timeout: float | None, error: type) -> float | None:
    current = _current()
    if current is None:
        return timeout
    left = current.left
    if left <= 0:
        raise error("the deadline passed")
    return left if timeout is None else min(timeout, left)


class _BoundedStream(httpcore.NetworkStream):
    """A socket whose every operation is given at most the time left."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> Any:
        return _BoundedStream(self._stream.start_tls(
            ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, each socket operation given at most the time left."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> Any:
        try:
            return _BoundedStream(self._inner.connect_tcp(
                host, port, _bounded(timeout, httpcore.ConnectTimeout), local_address,
                socket_options))
        except UnicodeError:  # IDNA: a label over 63 characters, an empty one
            raise httpcore.ConnectError(
                "invalid host name: a part between dots is empty or longer than 63 "
                "characters") from None

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> Any:
        return _BoundedStream(self._inner.connect_unix_socket(
            path, _bounded(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# --- decoding, bounded ----------------------------------------------------------------------


class _Decoder:
    """gzip / deflate / identity, at most `_PIECE` decoded bytes at a time."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._zlib: Any = None
        if encoding == "gzip":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._deflate = encoding == "deflate"  # wrapper known at the first bytes

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._deflate and self._zlib is None and data:
            # zlib-wrapped, as the standard says, or raw deflate, as some servers send.
            wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        if self._zlib is None:
            yield data
            return
        while data:
            piece = self._zlib.decompress(data, _PIECE)
            data = self._zlib.unconsumed_tail
            if not piece:
                return  # all consumed, or trailing bytes after the end: ignored, as httpx does
            yield piece

    def flush(self) -> bytes:
        return self._zlib.flush(_PIECE) if self._zlib is not None else b""


class _BoundedBody(httpx.SyncByteStream):
    """A response's stream, decoded, within its budget and its deadline."""

    def __init__(self, response: Any, request: httpx.Request, budget: int | None,
                 deadline: _Deadline | None, decoder: _Decoder) -> None:
        self._response = response
        self._request = request
        self._budget = budget
        self._deadline = deadline
        self._decoder = decoder

    def __iter__(self) -> Iterator[bytes]:
        request, budget, deadline, decoder = (self._request, self._budget, self._deadline,
                                              self._decoder)
        raw = decoded = 0
        chunks = iter(self._response.stream)
        while True:
            with _active(deadline):
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except httpx.TimeoutException as exc:
                    _raise_if_late(exc, deadline, request)
                    raise
            if deadline is not None and deadline.left <= 0:
                # Each chunk came in time, the whole did not (a trickle).
                _raise_if_late(None, deadline, request)
            raw += len(chunk)
            try:
                for piece in decoder.feed(chunk):
                    if budget is not None and decoded + len(piece) > budget:
                        # The bytes up to the budget first: a reader that wants no more
                        # (a range of a blob) stops before the error.
                        yield piece[: budget - decoded]
                        raise _too_large(request, budget)
                    decoded += len(piece)
                    yield piece
                if budget is not None and raw > 2 * budget + _PIECE:
                    raise _too_large(request, budget)  # compressed input decoding to nothing
            except zlib.error:
                raise BadEncoding(f"{_server(request)} sent a body that is not valid "
                                  f"{decoder.encoding} ({_what(request)})",
                                  request=request) from None
        try:
            tail = decoder.flush()
        except zlib.error:
            tail = b""
        if tail and (budget is None or decoded + len(tail) <= budget):
            yield tail

    def close(self) -> None:
        self._response.close()


def _too_large(request: httpx.Request, budget: int) -> BodyTooLarge:
    return BodyTooLarge(f"{_server(request)} sent more than {size_text(budget)} for "
                        f"{_what(request)} (the limit for that answer); stopped reading",
                        request=request)


def _server(request: Any) -> str:
    url = request.url
    return credentials(f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}")


def _what(request: Any) -> str:
    return f"{request.method} {request.url.path}"


def _raise_if_late(exc: BaseException | None, deadline: _Deadline | None,
                   request: Any) -> None:
    if deadline is None or deadline.left > 0.05:
        return
    raise DeadlineExceeded(
        f"{_server(request)} did not finish answering {_what(request)} within "
        f"{deadline.seconds:g} s (the limit for {deadline.what})", request=request) from exc


# --- the transport ----------------------------------------------------------------------------


class _Transport(httpx.BaseTransport):
    """Routes each request (its proxy; none for loopback) and bounds it."""

    def __init__(self, timeouts: Timeouts, environ: Mapping[str, str], verify: bool) -> None:
        self._timeouts = timeouts
        self._environ = environ
        self._verify = verify
        self._routes: dict[tuple[str | None, bool], httpx.HTTPTransport] = {}
        self._lock = threading.Lock()

    def route(self, url: httpx.URL) -> httpx.HTTPTransport:
        proxy = None if is_loopback_host(url.host) else proxy_for(str(url), self._environ)
        key = (proxy, url.scheme == "https")
        with self._lock:
            if key not in self._routes:
                self._routes[key] = _route(proxy, self._environ, tls=key[1],
                                           verify=self._verify)
            return self._routes[key]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        total = self._timeouts.total
        budget = request.extensions.get("budget", budget_for(path))
        seconds = request.extensions.get("deadline", _deadline_for(path, total))
        mine = None if seconds is None else _Deadline(
            time.monotonic() + seconds, seconds, f"{path} requests"
            if seconds != total else "one request")
        limit = _earliest(_current(), mine)
        with _active(limit):
            try:
                response = self.route(request.url).handle_request(request)
            except httpx.TimeoutException as exc:
                _raise_if_late(exc, limit, request)
                raise
            except httpx.RemoteProtocolError as exc:
                if "buffer too long" in str(exc).lower():
                    raise BodyTooLarge(
                        f"{_server(request)} sent headers over {size_text(HEADERS_BUDGET)} "
                        f"for {_what(request)}; stopped reading", request=request) from exc
                raise
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "deflate", "x-gzip"):
            response.close()
            raise BadEncoding(f"{_server(request)} answered {_what(request)} in an encoding "
                              f"that was not asked for ({encoding[:40]})", request=request)
        decoder = _Decoder("gzip" if encoding == "x-gzip" else encoding)
        headers = [(k, v) for k, v in response.headers.raw
                   if k.lower() not in (b"content-encoding", b"content-length")]
        return httpx.Response(response.status_code, headers=headers,
                              stream=_BoundedBody(response, request, budget, limit, decoder),
                              extensions=response.extensions)

    def close(self) -> None:
        with self._lock:
            routes, self._routes = list(self._routes.values()), {}
        for route in routes:
            route.close()


def _route(proxy: str | None, environ: Mapping[str, str], *, tls: bool,
           verify: bool) -> httpx.HTTPTransport:
    context: ssl.SSLContext | bool = verify
    if not tls and not (proxy or "").lower().startswith("https"):
        # Plain HTTP never uses TLS; skip loading the CA bundle (tens of ms on every call).
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        route = httpx.HTTPTransport(verify=context, trust_env=True, proxy=proxy)
    except ImportError:
        raise UsageError(
            f"the proxy {credentials(proxy or '')} is a SOCKS proxy, which needs the Python "
            "package socksio: pip install socksio (or use an HTTP proxy)") from None
    except (ValueError, TypeError) as exc:  # httpx.InvalidURL is a ValueError
        raise UsageError(f"the proxy {credentials(proxy or '')} cannot be used: "
                         f"{credentials(str(exc))}") from None
    pool = getattr(route, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        raise RuntimeError("this httpx/httpcore release has no network backend to bound")
    pool._network_backend = _BoundedBackend(pool._network_backend)
    return route


def client(
    base_url: str,
    *,
    loopback: bool,
    timeouts: Timeouts = Timeouts(),
    verify: bool = True,
    headers: dict[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> httpx.Client:
    """A client for `base_url`. The proxy (none for loopback) is checked here, so a proxy
    that cannot be used is a UsageError before any request."""
    env = os.environ if environ is None else environ
    all_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING}
    all_headers.update(headers or {})
    transport = _Transport(timeouts, env, verify)
    if not loopback:
        transport.route(httpx.URL(base_url))  # a broken proxy setting fails here, once
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
        ),
        headers=all_headers,
        trust_env=False,  # the transport routes proxies itself, loopback exempt
        transport=transport,
        follow_redirects=False,
    )


# --- proxies ------------------------------------------------------------------------------


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy a request to `url` would use from this environment, or None.

    A value without a scheme means http://, as curl reads it. Raises UsageError for a
    value that cannot be a proxy URL (its credentials never shown).
    """
    # urllib.request takes some 10 ms to import: only for a host that is not loopback.
    from urllib.request import proxy_bypass_environment

    scheme = url.split("://", 1)[0]
    proxy, variable = None, ""
    for key in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        if environ.get(key, "").strip():
            proxy, variable = environ[key].strip(), key
            break
    if not proxy:
        return None
    host = url.split("://", 1)[1].split("/", 1)[0]
    no_proxy = {k.lower(): v for k, v in environ.items() if k.lower() == "no_proxy"}
    if no_proxy and proxy_bypass_environment(host, no_proxy):
        return None
    return _checked_proxy(proxy, variable)


def _checked_proxy(value: str, variable: str) -> str:
    if "://" not in value:
        value = "http://" + value
    scheme, _, rest = value.partition("://")
    authority = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    port = authority.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in authority.rsplit(
        "]", 1)[-1] else ""
    shown = f"{variable}={credentials(value)}"
    if scheme.lower() not in ("http", "https", "socks5", "socks5h"):
        raise UsageError(f"{shown}: unsupported proxy scheme '{scheme[:20]}://'",
                         hint="use http://, https:// or socks5://")
    if port and not (port.isdigit() and 0 < int(port) <= 65535):
        raise UsageError(f"{shown}: invalid port in the proxy address",
                         hint="give a port between 1 and 65535, or unset the variable")
    if not authority.split(":")[0].strip("[]"):
        raise UsageError(f"{shown}: no host in the proxy address")
    if scheme.lower().startswith("socks") and find_spec("socksio") is None:
        raise UsageError(f"{shown}: a SOCKS proxy needs the Python package socksio, "
                         "which is not installed",
                         hint="pip install socksio (in this tool's environment), or use "
                         "an HTTP proxy")
    return value


# --- reading answers ------------------------------------------------------------------------


def json_body(response: httpx.Response) -> Any:
    """The body as JSON (see `json_loads`), with its endpoint's MAX_VALUES."""
    path = response.request.url.path
    limits = next((n for pattern, n in MAX_VALUES if fnmatch.fnmatchcase(path, pattern)),
                  DEFAULT_MAX_VALUES)
    return json_loads(response.content, max_values=limits)


def json_loads(data: str | bytes, *,
               max_values: tuple[int, int, int] = DEFAULT_MAX_VALUES) -> Any:
    """JSON from a server. ValueError for anything that is not sane JSON: invalid, more
    (values, containers, object members) than `max_values`, nested deeper than Python can
    parse, numbers out of range (1e400), NaN."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    containers = raw.count(b"[") + raw.count(b"{")
    values = max(raw.count(b",") + containers, raw.count(b'"') // 2)
    members = raw.count(b":")
    if values > max_values[0] or containers > max_values[1] or members > max_values[2]:
        raise ValueError(f"the JSON holds more than {max_values[0]:,} values, "
                         f"{max_values[1]:,} objects and arrays or {max_values[2]:,} "
                         "members: too many for this answer")
    try:
        return json.loads(data, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8 text") from None


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"not a JSON number: {text}")


def first_bytes(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of a streamed body; the rest is never read."""
    parts, got = [], 0
    for chunk in response.iter_bytes():
        parts.append(chunk[: limit - got])
        got += len(parts[-1])
        if got >= limit:
            break
    return b"".join(parts)


def error_text(response: httpx.Response, body: bytes | None = None) -> str:
    """Ollama's error text: `{"error": "..."}`, else the body, else the status line
    (one line, at most 200 characters, control characters escaped). `body`: the part of
    a streamed body that was read."""
    data = response.content if body is None else body
    raw = data.decode("utf-8", "replace")
    try:
        parsed = json_loads(data)
        text = str(parsed.get("error") or raw) if isinstance(parsed, dict) else raw
    except ValueError:
        text = raw
    return printable(" ".join(text.split())[:200]) or f"HTTP {response.status_code}"

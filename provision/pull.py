"""Pulling models through the Ollama server, robustly.

`POST /api/pull` makes the *server* download from the registry and report progress as
an NDJSON stream. This module reads that stream, turns it into typed events for a
reporter (progress.py draws them), and survives what goes wrong on the way:

- a stall (no progress for `stall_timeout` seconds, whether the server goes silent or
  keeps repeating the same numbers) drops the connection and pulls again;
- a dropped connection, a stream that ends early, `max retries exceeded`, a digest
  mismatch or an HTTP 5xx pull again with bounded exponential backoff; the server keeps
  partial blobs, so the next attempt resumes (and we say so);
- errors that a retry cannot fix (unknown model, disk full, registry unreachable from
  the server, invalid name) stop at once, classified and explained.

`pull_models()` is the entry point (the `pull` and `apply` commands call it).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Union

from provision.errors import EXIT_NOT_READY, ProvisionError
from provision.host import ServerAddress
from provision.http import ERROR_BUDGET, error_text, first_bytes
from provision.names import DEFAULT_HOST, ModelName

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

RETRY_BASE_ENV = "OLLAMA_PROVISION_RETRY_BASE"  # seconds; tests make backoff instant

# Outcome statuses (stable: part of the `--json` schema).
PULLED = "pulled"  # was missing, now present
UPDATED = "updated"  # --force: present before, the tag pointed elsewhere, now updated
UNCHANGED = "unchanged"  # --force: pulled again, nothing changed
PRESENT = "present"  # already there, nothing done
FAILED = "failed"
INTERRUPTED = "interrupted"

# Error kinds (stable: part of the `--json` schema).
UNKNOWN_MODEL = "unknown-model"
DISK_FULL = "disk-full"
REGISTRY_UNREACHABLE = "registry-unreachable"
INVALID_NAME = "invalid-name"
STALLED = "stalled"
DROPPED = "connection-dropped"
INCOMPLETE = "incomplete-stream"
MAX_RETRIES = "registry-retries-exceeded"
DIGEST_MISMATCH = "digest-mismatch"
SERVER_ERROR = "server-error"
SERVER_UNREACHABLE = "server-unreachable"
CANCELLED = "interrupted"

# Verifying a finished download is silent on the server (it hashes every blob): allow
# at least this hashing speed before calling the silence a stall (a slow disk, a huge
# model) so that a 40 GB model is not retried in a loop while it is being verified.
VERIFY_BYTES_PER_S = 50e6
# The socket watchdog below handles stalls; the HTTP read timeout only bounds a hang
# where the socket could not be shut down.
BACKSTOP_READ_TIMEOUT = 3600.0
# A progress line is ~150 bytes; a longer one is not Ollama's (the stream itself has no
# total budget: a pull is long, and only its lines are held in memory).
LINE_LIMIT = 1 << 20


@dataclass(frozen=True)
class PullOptions:
    force: bool = False  # pull even when /api/tags lists the model
    insecure: bool = False  # plain-HTTP registry (passed to the server, used for manifests)
    parallel: int = 1  # models pulled at once
    stall_timeout: float = 60.0  # seconds without progress before dropping and retrying
    retries: int = 5  # extra attempts per model after the first
    backoff_base: float = 1.0  # first retry delay, doubled each retry
    backoff_max: float = 30.0
    check_disk: bool = True  # refuse up front when a local server's disk cannot hold it
    connect_timeout: float = 5.0

    @staticmethod
    def backoff_from_env(environ: dict[str, str] | None = None) -> float:
        env = os.environ if environ is None else environ
        try:
            return max(0.0, float(env.get(RETRY_BASE_ENV, "1")))
        except ValueError:
            return 1.0

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1-based): base, 2x, 4x ... capped."""
        return min(self.backoff_base * (2 ** (retry - 1)), self.backoff_max)


@dataclass(frozen=True)
class PullError:
    kind: str  # one of the kinds above
    message: str  # one line: what happened
    hint: str | None = None  # what to do
    retryable: bool = False
    detail: str = ""  # the server's own text, when it sent one


@dataclass(frozen=True)
class PullOutcome:
    name: ModelName
    status: str  # pulled, updated, unchanged, present, failed, interrupted
    size: int = 0  # bytes of all the model's blobs (as the server reported them)
    downloaded: int = 0  # bytes fetched by this run (blobs already there not counted)
    duration: float = 0.0  # seconds, retries and backoff included
    retries: int = 0
    retry_reasons: tuple[str, ...] = ()  # error kind of each retried attempt
    resumed: bool = False  # continued a partial download (after a retry or an earlier run)
    error: PullError | None = None

    @property
    def ok(self) -> bool:
        return self.status not in (FAILED, INTERRUPTED)


# Events, in the order a reporter sees them for one model: ModelStarted, then any of
# StatusChanged / BlobProgress / Retrying / Resumed, then ModelFinished. `model` is the
# short name (a str, cheap to hash: BlobProgress arrives thousands of times a second).


@dataclass(frozen=True)
class ModelStarted:
    model: str
    expected_size: int | None = None  # from the registry's manifest, when it was read


@dataclass(frozen=True)
class StatusChanged:
    model: str
    status: str  # "pulling manifest", "verifying sha256 digest", "writing manifest", ...


@dataclass(frozen=True)
class BlobProgress:
    model: str
    digest: str
    total: int
    completed: int  # may go backwards: Ollama subtracts a failed part when it retries it


@dataclass(frozen=True)
class Retrying:
    model: str
    retry: int  # 1-based
    retries: int  # the bound
    delay: float
    error: PullError


@dataclass(frozen=True)
class Resumed:
    model: str
    digest: str
    completed: int  # where the server continued this blob (0: it had to restart)
    total: int


@dataclass(frozen=True)
class ModelFinished:
    outcome: PullOutcome


PullEvent = Union[ModelStarted, StatusChanged, BlobProgress, Retrying, Resumed, ModelFinished]


class Reporter(Protocol):
    def handle(self, event: PullEvent) -> None: ...


class NullReporter:
    def handle(self, event: PullEvent) -> None:
        pass


class PullInterrupted(KeyboardInterrupt):
    """Ctrl-C during pulls: carries every model's outcome so far (unfinished: interrupted)."""

    def __init__(self, outcomes: list[PullOutcome]) -> None:
        super().__init__()
        self.outcomes = outcomes


# ---------------------------------------------------------------------------------------
# Error classification: the server's text (or what happened to the connection) → PullError


_PATH_IN_ERROR = re.compile(r"(?:write|open|create|mkdir|rename)\s+(\S+?):\s")
_REGISTRY_NETWORK = (
    "dial tcp", "no such host", "connection refused", "i/o timeout", "tls handshake",
    "proxyconnect", "x509", "certificate", "network is unreachable", "no route to host",
    "context deadline exceeded", "timeout awaiting response headers",
    "server gave http response to https client", "no location header",
    "first record does not look like a tls handshake",
)
# What a plain-HTTP registry pulled over HTTPS gives: Ollama 0.12 (Go's HTTP client), and
# 0.30+ (its TLS layer, which now sees the HTTP answer first).
_PLAIN_HTTP_REGISTRY = ("server gave http response to https client",
                        "first record does not look like a tls handshake")


def classify_server_error(
    text: str, name: ModelName, *, http_status: int | None = None,
    downloading: bool = False, remaining: int = 0,
) -> PullError:
    """Explain an `{"error": ...}` from the server (in the stream or as an HTTP error)."""
    from provision.output import printable

    text = printable(text[:500])
    low = text.lower()
    if http_status == 400:
        return PullError(
            INVALID_NAME, f"the server rejected the name as invalid (HTTP 400: {text})",
            hint="a model name is [host/][namespace/]model[:tag]", detail=text,
        )
    if "file does not exist" in low or "manifest unknown" in low:
        hint = (f"see the available tags at https://ollama.com/library/{name.model}/tags"
                if name.host.lower() == DEFAULT_HOST and name.namespace == "library"
                else f"check the name against the registry {name.host}")
        return PullError(
            UNKNOWN_MODEL,
            f"not found in the registry {name.host}: the model name or tag may be wrong",
            hint=hint, detail=text,
        )
    if "no space left on device" in low:
        found = _PATH_IN_ERROR.search(text)
        where = os.path.dirname(found.group(1)) if found else "the server's models directory"
        need = f"at least {_size(remaining)} more is needed" if remaining else \
            "more space is needed"
        return PullError(
            DISK_FULL, f"the server's disk is full at {where}: {need}",
            hint="free space there, or set OLLAMA_MODELS (in the server's environment) to a "
            "bigger disk and restart the server; re-running resumes the download",
            detail=text,
        )
    if "max retries exceeded" in low:
        return PullError(
            MAX_RETRIES, "the server gave up downloading a part after its own retries",
            retryable=True, detail=text,
        )
    if "digest mismatch" in low:
        return PullError(
            DIGEST_MISMATCH, "a downloaded blob was corrupt (digest mismatch)",
            retryable=True, detail=text,
        )
    if any(s in low for s in _REGISTRY_NETWORK):
        return _registry_unreachable(text, low, name, downloading=downloading)
    if http_status is not None and http_status >= 500:
        return PullError(
            SERVER_ERROR, f"the server answered HTTP {http_status}: {text}",
            retryable=True, detail=text,
        )
    # Anything else: once bytes flow it is most likely transient (the server resumes);
    # before that (the manifest step) retrying the same request will not change it.
    return PullError(
        SERVER_ERROR, f"the server reported: {text}", retryable=downloading, detail=text,
    )


def _registry_unreachable(text: str, low: str, name: ModelName, *,
                          downloading: bool) -> PullError:
    if any(s in low for s in _PLAIN_HTTP_REGISTRY):
        hint = "the registry speaks plain HTTP: add --insecure"
    elif "no location header" in low:
        hint = ("this Ollama server expects the registry to redirect blob downloads to a "
                "CDN; a plain self-hosted registry does not")
    else:
        hint = ("the download runs on the Ollama server: check that machine's network and "
                "DNS, and if it needs a proxy set HTTPS_PROXY in the server's environment "
                "(e.g. `systemctl edit ollama`); a proxy set here is not used")
    return PullError(
        REGISTRY_UNREACHABLE,
        f"the Ollama server cannot reach the registry {name.host}",
        hint=hint, retryable=downloading, detail=text,
    )


def _size(n: float) -> str:
    from provision.output import human_bytes

    return human_bytes(n)


# ---------------------------------------------------------------------------------------
# Stall watchdog: one thread watches every stream in flight


class _Watch:
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


class _Watchdog:
    def __init__(self, stall_timeout: float, cancel: threading.Event) -> None:
        self.stall_timeout = stall_timeout
        self.cancel = cancel
        self._watches: set[_Watch] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pull-watchdog", daemon=True)
        self._interval = max(0.02, min(0.25, stall_timeout / 4))

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.add(watch)

    def remove(self, watch: _Watch) -> None:
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

    def _stalled(self, watch: _Watch, now: float) -> bool:
        if watch.downloading:
            # Ollama repeats the same numbers every 60 ms while a download is stuck:
            # lines alone are no sign of life, bytes are.
            return now - watch.last_progress > self.stall_timeout
        limit = self.stall_timeout
        if watch.verifying:
            limit += watch.expected_bytes / VERIFY_BYTES_PER_S
        return now - watch.last_line > limit


# ---------------------------------------------------------------------------------------
# One model: attempts until success, a final error, the retry bound, or Ctrl-C


@dataclass
class _ModelRun:
    """Mutable bookkeeping of one model across its attempts (private to its thread)."""

    name: ModelName
    totals: dict[str, int] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)  # completed when first seen
    last: dict[str, int] = field(default_factory=dict)  # completed in the latest line
    lines: dict[str, int] = field(default_factory=dict)  # progress lines seen per blob
    retries: int = 0
    reasons: list[str] = field(default_factory=list)
    resumed: bool = False

    @property
    def size(self) -> int:
        return sum(self.totals.values())

    @property
    def downloaded(self) -> int:
        """Bytes the progress lines showed moving (an unfinished pull)."""
        return sum(max(0, self.last.get(d, 0) - self.first.get(d, 0)) for d in self.totals)

    def downloaded_of(self, size: int) -> int:
        """Bytes a finished pull fetched, `size` being all of the model's blobs.

        Ollama reports a download only on a 60 ms tick: from 0.30 a blob that arrives
        between two ticks has no line at all, so the stream alone undercounts. A blob the
        server already had is exactly one line, complete; a blob resumed from a partial
        file starts at its old offset. Everything else was fetched now.
        """
        kept = 0
        for digest, total in self.totals.items():
            first = self.first.get(digest, 0)
            if first >= total and self.lines.get(digest, 0) == 1:
                kept += total  # the server's cache hit
            elif first < total:
                kept += first  # resumed: these bytes were already on the server's disk
        return max(size - kept, 0)

    @property
    def remaining(self) -> int:
        return sum(max(0, t - self.last.get(d, 0)) for d, t in self.totals.items())


class _Puller:
    def __init__(self, address: ServerAddress, options: PullOptions, reporter: Reporter,
                 watchdog: _Watchdog, cancel: threading.Event) -> None:
        self.address = address
        self.options = options
        self.reporter = reporter
        self.watchdog = watchdog
        self.cancel = cancel

    def pull(self, name: ModelName, status_if_ok: str = PULLED,
             expected_size: int | None = None) -> PullOutcome:
        run = _ModelRun(name)
        started = time.monotonic()
        self.reporter.handle(ModelStarted(name.short, expected_size))
        while True:
            error = self._attempt(run)
            if error is None:
                return self._finish(run, started, status_if_ok)
            if self.cancel.is_set():
                return self._finish(run, started, INTERRUPTED, _cancelled())
            if not error.retryable:
                return self._finish(run, started, FAILED, error)
            if run.retries >= self.options.retries:
                gave_up = PullError(
                    error.kind,
                    f"{error.message} (gave up after {run.retries} "
                    f"{'retry' if run.retries == 1 else 'retries'})",
                    hint=error.hint or "run the same command again: it resumes where it "
                    "stopped; --retries and --stall-timeout allow more patience",
                    detail=error.detail,
                )
                return self._finish(run, started, FAILED, gave_up)
            run.retries += 1
            run.reasons.append(error.kind)
            delay = self.options.delay(run.retries)
            self.reporter.handle(Retrying(name.short, run.retries, self.options.retries,
                                          delay, error))
            if self.cancel.wait(delay):
                return self._finish(run, started, INTERRUPTED, _cancelled())

    def _finish(self, run: _ModelRun, started: float, status: str,
                error: PullError | None = None) -> PullOutcome:
        size, downloaded = run.size, run.downloaded
        if error is None:
            size = self._installed_size(run.name) or size
            downloaded = run.downloaded_of(size)
        outcome = PullOutcome(
            name=run.name, status=status, size=size, downloaded=downloaded,
            duration=time.monotonic() - started, retries=run.retries,
            retry_reasons=tuple(run.reasons), resumed=run.resumed, error=error,
        )
        self.reporter.handle(ModelFinished(outcome))
        return outcome

    def _installed_size(self, name: ModelName) -> int | None:
        """The pulled model's size as the server lists it (/api/tags): the stream may not
        have shown every blob (see `_ModelRun.downloaded_of`)."""
        from provision.http import Timeouts, client
        from provision.inventory import fetch_inventory

        try:
            with client(self.address.url, loopback=self.address.is_loopback,
                        timeouts=Timeouts(connect=self.options.connect_timeout,
                                          read=30.0)) as http:
                found = fetch_inventory(http).find(name)
        except ProvisionError as exc:
            log.debug("%s: no size from /api/tags after the pull: %s", name.short, exc)
            return None
        return found.size if found is not None else None

    def _attempt(self, run: _ModelRun) -> PullError | None:
        """One POST /api/pull read to its end: None on success, else what went wrong."""
        import httpx

        from provision.http import Timeouts, client

        name = run.name
        watch = _Watch()
        watch.expected_bytes = run.size
        self.watchdog.add(watch)
        timeouts = Timeouts(connect=self.options.connect_timeout, read=BACKSTOP_READ_TIMEOUT)
        body = {"model": name.short, "insecure": self.options.insecure, "stream": True}
        try:
            # A fresh connection per attempt: the watchdog gets its socket from the
            # connect trace, and a dropped stream never poisons a pooled connection.
            with client(self.address.url, loopback=self.address.is_loopback,
                        timeouts=timeouts) as http, \
                    http.stream("POST", "/api/pull", json=body,
                                extensions={"trace": watch.trace}) as response:
                if response.status_code != 200:
                    return self._http_error(run, response)
                return self._read(run, response, watch)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if watch.cancelled:
                return _cancelled()
            return PullError(
                SERVER_UNREACHABLE, f"lost the Ollama server at {self.address.url}: {exc}",
                hint="is the server still running?", retryable=True, detail=str(exc),
            )
        except httpx.HTTPError as exc:
            # A shut-down socket surfaces as a read or protocol error: say why it was cut.
            if watch.cancelled:
                return _cancelled()
            if watch.stalled or isinstance(exc, httpx.TimeoutException):
                return self._stall_error(watch)
            return PullError(
                DROPPED, "the connection to the server dropped mid-stream", retryable=True,
                detail=f"{type(exc).__name__}: {exc}",
            )
        finally:
            watch.done = True
            self.watchdog.remove(watch)

    def _stall_error(self, watch: _Watch) -> PullError:
        what = "no progress" if watch.downloading else "no answer"
        return PullError(
            STALLED, f"{what} for {self.options.stall_timeout:g} s: dropped the connection",
            retryable=True,
        )

    def _http_error(self, run: _ModelRun, response: httpx.Response) -> PullError:
        # The stream has no budget of its own: read no more of an error page than its text.
        text = error_text(response, first_bytes(response, ERROR_BUDGET))
        return classify_server_error(text, run.name, http_status=response.status_code,
                                     remaining=run.remaining)

    def _read(self, run: _ModelRun, response: httpx.Response, watch: _Watch) -> PullError | None:
        """The hot loop: a fast server sends thousands of lines a second, so per line it
        only parses and compares; progress is reported once per network chunk (the last
        numbers of each blob in it), which is all a display redrawn 10 times a second uses.
        """
        name = run.name
        model = name.short
        handle = self.reporter.handle
        totals, first, last, lines_seen = run.totals, run.first, run.last, run.lines
        resuming = True
        # raw_decode skips json.loads' per-call encoding sniffing and whitespace regexes.
        parse = json.JSONDecoder().raw_decode
        decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        monotonic = time.monotonic
        buffer = ""
        status = ""
        success = False
        pending = ""  # digest whose latest numbers are not reported yet
        highs: dict[str, int] = {}  # furthest completed per blob in this attempt
        latest: dict[str, int] = {}  # completed in this attempt's latest line per blob
        pending_total = pending_completed = 0
        for chunk in response.iter_bytes():
            if watch.cancelled:
                return _cancelled()
            text = decode(chunk)
            if "\n" not in text:
                buffer += text
                if len(buffer) > LINE_LIMIT:
                    return _long_line()
                continue
            lines = (buffer + text).split("\n")
            buffer = lines.pop()
            if len(buffer) > LINE_LIMIT:  # complete lines are shorter than buffer + chunk
                return _long_line()
            now = monotonic()
            watch.last_line = now
            for line in lines:
                try:
                    message = parse(line)[0]
                    digest = message.get("digest")
                except (ValueError, AttributeError, RecursionError):
                    message = _slow_parse(line, model)
                    if message is None:
                        continue
                    digest = message.get("digest")
                if digest:
                    total = message.get("total") or 0
                    completed = message.get("completed") or 0
                    if not (type(total) is int and type(completed) is int):
                        log.debug("%s: skipped a progress line without numbers: %r",
                                  model, line[:200])
                        continue
                    if resuming and completed < total:
                        # The first incomplete blob of an attempt tells where the server
                        # continued: from its partial file (after a retry, or a Ctrl-C in
                        # an earlier run), or from zero although we saw it get further.
                        resuming = False
                        if completed > 0 or last.get(digest, 0) > 0:
                            run.resumed = run.resumed or completed > 0
                            handle(Resumed(model, digest, completed, total))
                    lines_seen[digest] = lines_seen.get(digest, 0) + 1
                    # Before anything is skipped: only bytes count as life while a blob is
                    # incomplete, even when every line of this attempt repeats the last.
                    watch.downloading = completed < total
                    if latest.get(digest) == completed and totals.get(digest) == total:
                        continue  # the server's 60 ms tick repeating itself
                    latest[digest] = completed
                    if digest not in last:
                        first[digest] = completed
                    if completed > highs.get(digest, -1):
                        # Progress is a new furthest point in this attempt: numbers that
                        # sway back and forth (a part retried again and again) are not.
                        highs[digest] = completed
                        watch.last_progress = now
                    totals[digest] = total
                    last[digest] = completed
                    if pending and pending != digest:
                        handle(BlobProgress(model, pending, pending_total, pending_completed))
                    pending, pending_total, pending_completed = digest, total, completed
                    continue
                if pending:
                    handle(BlobProgress(model, pending, pending_total, pending_completed))
                    pending = ""
                error = message.get("error")
                if error is not None:
                    return classify_server_error(
                        str(error), name, downloading=watch.downloading or bool(totals),
                        remaining=run.remaining,
                    )
                new_status = message.get("status")
                if isinstance(new_status, str) and new_status != status:
                    status = new_status
                    watch.last_progress = now
                    watch.downloading = False
                    if status.startswith("verifying"):
                        watch.verifying = True
                        watch.expected_bytes = run.size
                    elif status == "success":
                        success = True
                    handle(StatusChanged(model, status))
            if pending:
                handle(BlobProgress(model, pending, pending_total, pending_completed))
                pending = ""
        if buffer.strip():
            log.debug("%s: skipped an unterminated last line: %r", model, buffer[:200])
        if success:
            return None
        if watch.cancelled:
            return _cancelled()
        if watch.stalled:
            return self._stall_error(watch)
        return PullError(
            INCOMPLETE, "the server's stream ended before the pull finished", retryable=True,
        )


def _slow_parse(line: str, model: str) -> dict[str, Any] | None:
    """A line the fast path refused: JSON with odd whitespace, or not JSON (skipped)."""
    from provision.http import json_loads

    if not line.strip():
        return None
    try:
        message = json_loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        log.debug("%s: skipped a line that is not a JSON object: %r", model, line[:200])
        return None
    return message


def _long_line() -> PullError:
    return PullError(
        SERVER_ERROR, f"the server sent a line longer than {LINE_LIMIT >> 20} MiB in its pull "
        "stream: that is not Ollama's progress (a proxy or another program answers?)",
    )


def _cancelled() -> PullError:
    return PullError(
        CANCELLED, "interrupted: run the same command again to resume where it stopped",
    )


# ---------------------------------------------------------------------------------------
# Several models


def pull_models(
    address: ServerAddress,
    names: Iterable[ModelName],
    options: PullOptions = PullOptions(),
    reporter: Reporter | None = None,
    *,
    environ: dict[str, str] | None = None,
) -> list[PullOutcome]:
    """Pull the models the server lacks (all of them with `force`); one outcome per name.

    Raises ProvisionError before pulling anything when the server cannot be listed
    (exit 3) or, for a local server, when its disk cannot hold the download (exit 1).
    Raises PullInterrupted (a KeyboardInterrupt) on Ctrl-C, after dropping every stream.
    A failing model never stops the others: its outcome says why. A reporter that is a
    context manager (the terminal's live bars) is entered for the duration.
    """
    reporter = reporter or NullReporter()
    with contextlib.ExitStack() as display:
        if isinstance(reporter, contextlib.AbstractContextManager):
            display.enter_context(reporter)
        return _pull_all(address, list(names), options, reporter, environ)


def _pull_all(address: ServerAddress, names: list[ModelName], options: PullOptions,
              reporter: Reporter, environ: dict[str, str] | None) -> list[PullOutcome]:
    from concurrent.futures import ThreadPoolExecutor

    from provision.http import Timeouts, client
    from provision.inventory import fetch_inventory

    with client(address.url, loopback=address.is_loopback,
                timeouts=Timeouts.for_server(options.connect_timeout, 30.0)) as http:
        before = fetch_inventory(http)
    outcomes: dict[int, PullOutcome] = {}
    todo: list[tuple[int, ModelName]] = []
    for index, name in enumerate(names):
        installed = before.find(name)
        if installed is not None and not options.force:
            outcomes[index] = PullOutcome(name=name, status=PRESENT, size=installed.size)
            reporter.handle(ModelFinished(outcomes[index]))
        else:
            todo.append((index, name))
    sizes: dict[tuple[str, str, str, str], int] = {}
    if todo and options.check_disk and address.is_loopback:
        from provision.plan import ensure_disk_space

        plan = ensure_disk_space([n for _, n in todo], insecure=options.insecure,
                                 environ=environ, server=address)
        # The manifests give each model's full size up front: a steady total bar.
        sizes = {m.name.key: m.size for m in plan.models if m.size}

    cancel = threading.Event()
    with _Watchdog(options.stall_timeout, cancel) as watchdog:
        puller = _Puller(address, options, reporter, watchdog, cancel)

        def one(item: tuple[int, ModelName]) -> tuple[int, PullOutcome]:
            index, name = item
            if cancel.is_set():
                return index, PullOutcome(name=name, status=INTERRUPTED, error=_cancelled())
            was = before.find(name)
            return index, puller.pull(name, PULLED if was is None else UNCHANGED,
                                      sizes.get(name.key))

        pool = ThreadPoolExecutor(max_workers=max(1, options.parallel),
                                  thread_name_prefix="pull")
        futures = [pool.submit(one, item) for item in todo]
        try:
            for future in futures:
                index, outcome = _result(future)
                outcomes[index] = outcome
        except KeyboardInterrupt:
            cancel.set()  # the watchdog shuts every socket; workers return at once
            pool.shutdown(wait=True, cancel_futures=True)
            for (index, name), future in zip(todo, futures):
                if index not in outcomes:
                    done = (future.done() and not future.cancelled()
                            and future.exception() is None)
                    outcomes[index] = future.result()[1] if done else PullOutcome(
                        name=name, status=INTERRUPTED, error=_cancelled())
            raise PullInterrupted([outcomes[i] for i in sorted(outcomes)]) from None
        except BaseException:
            cancel.set()  # a bug in one worker: stop the others instead of leaving them
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    if options.force and any(before.find(n) is not None for _, n in todo):
        outcomes = _mark_updates(address, options, before, outcomes)
    return [outcomes[i] for i in sorted(outcomes)]


def _result(future: Future[tuple[int, PullOutcome]]) -> tuple[int, PullOutcome]:
    # An untimed future.result() may not wake for Ctrl-C on Windows; a timed wait does.
    while True:
        try:
            return future.result(timeout=0.2)
        except FutureTimeout:
            continue


def _mark_updates(address: ServerAddress, options: PullOptions, before: Any,
                  outcomes: dict[int, PullOutcome]) -> dict[int, PullOutcome]:
    """--force: a present model whose manifest digest changed was updated."""
    from dataclasses import replace

    from provision.http import Timeouts, client
    from provision.inventory import fetch_inventory

    try:
        with client(address.url, loopback=address.is_loopback,
                    timeouts=Timeouts.for_server(options.connect_timeout, 30.0)) as http:
            after = fetch_inventory(http)
    except ProvisionError:
        return outcomes
    marked = dict(outcomes)
    for index, outcome in outcomes.items():
        old, new = before.find(outcome.name), after.find(outcome.name)
        if outcome.status == UNCHANGED and old and new and old.digest != new.digest:
            marked[index] = replace(outcome, status=UPDATED)
    return marked


class InsufficientDisk(ProvisionError):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, exit_code=EXIT_NOT_READY, hint=hint)


__all__ = [
    "PullOptions", "PullOutcome", "PullError", "PullEvent", "Reporter", "NullReporter",
    "PullInterrupted", "InsufficientDisk", "pull_models", "classify_server_error",
    "ModelStarted", "StatusChanged", "BlobProgress", "Retrying", "Resumed", "ModelFinished",
]

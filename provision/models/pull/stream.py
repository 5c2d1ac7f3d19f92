"""One attempt of one model's pull: `POST /api/pull`, its NDJSON stream read to the end.

The server downloads; this reads its progress lines, turns them into events for the
reporter, tells the watchdog about every sign of life, and ends with None (success) or
the `PullError` of what went wrong: the server's own error, a dropped connection, a
stream that ended early, a stall the watchdog cut. `ModelRun` carries what one model's
attempts learn (blob sizes, where each blob got to) from one attempt to the next.
"""

from __future__ import annotations

import codecs
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from provision.http import ERROR_BUDGET, error_text, first_bytes, json_loads
from provision.models.pull.errors import ErrorKind, PullError, cancelled, classify_server_error
from provision.models.pull.events import BlobProgress, Reporter, Resumed, StatusChanged
from provision.models.pull.watchdog import Watch, Watchdog
from provision.names import ModelName
from provision.server import OllamaServer

log = logging.getLogger(__name__)

# A progress line is ~150 bytes; a longer one is not Ollama's (the stream itself has no
# total budget: a pull is long, and only its lines are held in memory).
LINE_LIMIT = 1 << 20
# Faster than any link a pull runs over (16 Gbit/s): bytes of a blob at the start of a
# first attempt beyond what this rate brings in the time since the request was sent were
# on the server's disk before (a partial download of an earlier run, resumed).
FASTEST_LINK = 2e9
# What the buffers between a registry and the server (sockets, a proxy) may hand over at
# once when a download starts: bytes a first line shows beyond the link's speed, but
# fewer than this, are no sign of a resume.
BURST_BYTES = 8 << 20


@dataclass
class ModelRun:
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


class Attempt:
    """One POST /api/pull on a connection of its own, read to its end."""

    def __init__(self, server: OllamaServer, run: ModelRun, reporter: Reporter,
                 watchdog: Watchdog, *, insecure: bool, stall_timeout: float,
                 connect_timeout: float) -> None:
        self.server = server
        self.run = run
        self.reporter = reporter
        self.watchdog = watchdog
        self.insecure = insecure
        self.stall_timeout = stall_timeout
        self.connect_timeout = connect_timeout

    def __call__(self) -> PullError | None:
        """None on success, else what went wrong."""
        run = self.run
        watch = Watch()
        watch.expected_bytes = run.size
        self.watchdog.add(watch)
        began = time.monotonic()
        try:
            with self.server.pull_stream(run.name, insecure=self.insecure,
                                         connect_timeout=self.connect_timeout,
                                         trace=watch.trace) as response:
                if response.status_code != 200:
                    return self._http_error(run, response)
                return self._read(run, response, watch, began)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if watch.cancelled:
                return cancelled()
            return PullError(
                ErrorKind.SERVER_UNREACHABLE,
                f"lost the Ollama server at {self.server.url}: {exc}",
                hint="is the server still running?", retryable=True, detail=str(exc),
            )
        except httpx.HTTPError as exc:
            # A shut-down socket surfaces as a read or protocol error: say why it was cut.
            if watch.cancelled:
                return cancelled()
            if watch.stalled or isinstance(exc, httpx.TimeoutException):
                return self._stall_error(watch)
            return PullError(
                ErrorKind.DROPPED, "the connection to the server dropped mid-stream",
                retryable=True, detail=f"{type(exc).__name__}: {exc}",
            )
        finally:
            watch.done = True
            self.watchdog.remove(watch)

    def _stall_error(self, watch: Watch) -> PullError:
        what = "no progress" if watch.downloading else "no answer"
        return PullError(
            ErrorKind.STALLED, f"{what} for {self.stall_timeout:g} s: dropped the connection",
            retryable=True,
        )

    def _http_error(self, run: ModelRun, response: httpx.Response) -> PullError:
        # The stream has no budget of its own: read no more of an error page than its text.
        text = error_text(response, first_bytes(response, ERROR_BUDGET))
        return classify_server_error(text, run.name, http_status=response.status_code,
                                     remaining=run.remaining)

    def _judge_resume(self, run: ModelRun, candidate: tuple[str, int, float],
                      completed: int, total: int, now: float, began: float) -> None:
        """A first attempt's first blob began at `candidate`'s bytes: resumed from an
        earlier run's partial file when even twice the speed the next line shows (and a
        burst) could not have brought them since the request was sent. Said before any
        of the blob's later bytes, so the bar keeps them as where it started."""
        digest, before, seen = candidate
        rate = max(0, completed - before) / (now - seen)
        if before > 2 * rate * (seen - began) + BURST_BYTES:
            run.resumed = True
            self.reporter.handle(Resumed(run.name.short, digest, before, total))

    def _read(self, run: ModelRun, response: httpx.Response, watch: Watch,
              began: float) -> PullError | None:
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
        # A first attempt's first incomplete blob with bytes already (digest, completed,
        # when): resumed or not is known at its next line, which shows the link's speed.
        candidate: tuple[str, int, float] | None = None
        for chunk in response.iter_bytes():
            if watch.cancelled:
                return cancelled()
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
                    if candidate is not None and candidate[0] == digest \
                            and completed != candidate[1] and now > candidate[2]:
                        self._judge_resume(run, candidate, completed, total, now, began)
                        candidate = None
                    if resuming and completed < total:
                        # The first incomplete blob of an attempt tells where the server
                        # continued: after a retry, from its partial file or from zero
                        # although we saw it get further; on a first attempt, from a
                        # partial file of an earlier run only when more is there than
                        # could have arrived since the request (a real server's first
                        # line comes after its first 60 ms of downloading): at once when
                        # no link is that fast, else when the next line shows the speed.
                        resuming = False
                        if run.retries:
                            known = completed > 0 or last.get(digest, 0) > 0
                        else:
                            known = completed > FASTEST_LINK * (now - began)
                            if not known and completed > 0:
                                candidate = (digest, completed, now)
                        if known:
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
            return cancelled()
        if watch.stalled:
            return self._stall_error(watch)
        return PullError(
            ErrorKind.INCOMPLETE, "the server's stream ended before the pull finished",
            retryable=True,
        )


def _slow_parse(line: str, model: str) -> dict[str, Any] | None:
    """A line the fast path refused: JSON with odd whitespace, or not JSON (skipped)."""
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
        ErrorKind.SERVER_ERROR, f"the server sent a line longer than {LINE_LIMIT >> 20} MiB in "
        "its pull stream: that is not Ollama's progress (a proxy or another program answers?)",
    )

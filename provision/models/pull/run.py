"""Pulling models through the Ollama server, robustly: `pull_models()`.

`POST /api/pull` makes the *server* download from the registry and report progress as
an NDJSON stream (`stream.py` reads one attempt of it). Per model this retries what a
retry can fix, with bounded exponential backoff: a stall (`watchdog.py` drops the
connection), a dropped connection, a stream that ends early, `max retries exceeded`, a
digest mismatch, an HTTP 5xx; the server keeps partial blobs, so the next attempt
resumes (and says so). What a retry cannot fix (`errors.py`) stops at once, explained.
Models are pulled `parallel` at a time; one failing never stops the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace

from provision.models.plan import ensure_disk_space
from provision.models.pull.errors import PullError, cancelled
from provision.models.pull.events import (
    ModelFinished,
    ModelStarted,
    NullReporter,
    PullOutcome,
    PullStatus,
    Reporter,
    Retrying,
)
from provision.models.pull.stream import Attempt, ModelRun
from provision.models.pull.watchdog import Watchdog
from provision.names import ModelName
from provision.output import counted
from provision.server import Inventory, OllamaServer, ServerError

log = logging.getLogger(__name__)

RETRY_BASE_ENV = "OLLAMA_PROVISION_RETRY_BASE"  # seconds; tests make backoff instant


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
    def backoff_from_env(environ: Mapping[str, str] | None = None) -> float:
        env = os.environ if environ is None else environ
        try:
            return max(0.0, float(env.get(RETRY_BASE_ENV, "1")))
        except ValueError:
            return 1.0

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1-based): base, 2x, 4x ... capped."""
        return min(self.backoff_base * (2 ** (retry - 1)), self.backoff_max)


class PullInterrupted(KeyboardInterrupt):
    """Ctrl-C during pulls: carries every model's outcome so far (unfinished: interrupted)."""

    def __init__(self, outcomes: list[PullOutcome]) -> None:
        super().__init__()
        self.outcomes = outcomes


def pull_models(
    server: OllamaServer,
    names: Iterable[ModelName],
    options: PullOptions = PullOptions(),
    reporter: Reporter | None = None,
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
        return _pull_all(server, list(names), options, reporter)


def _pull_all(server: OllamaServer, names: list[ModelName], options: PullOptions,
              reporter: Reporter) -> list[PullOutcome]:
    before = server.tags()
    outcomes: dict[int, PullOutcome] = {}
    todo: list[tuple[int, ModelName]] = []
    for index, name in enumerate(names):
        installed = before.find(name)
        if installed is not None and not options.force:
            outcomes[index] = PullOutcome(name=name, status=PullStatus.PRESENT,
                                          size=installed.size)
            reporter.handle(ModelFinished.of(outcomes[index]))
        else:
            todo.append((index, name))
    sizes: dict[tuple[str, str, str, str], int] = {}
    if todo and options.check_disk and server.address.is_loopback:
        plan = ensure_disk_space([n for _, n in todo], server, insecure=options.insecure)
        # The manifests give each model's full size up front: a steady total bar.
        sizes = {m.name.key: m.size for m in plan.models if m.size}

    cancel = threading.Event()
    with Watchdog(options.stall_timeout, cancel) as watchdog:
        puller = _Puller(server, options, reporter, watchdog, cancel)

        def one(item: tuple[int, ModelName]) -> tuple[int, PullOutcome]:
            index, name = item
            if cancel.is_set():
                return index, PullOutcome(name=name, status=PullStatus.INTERRUPTED,
                                          error=cancelled())
            was = before.find(name)
            return index, puller.pull(name, PullStatus.PULLED if was is None
                                      else PullStatus.UNCHANGED, sizes.get(name.key))

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
                        name=name, status=PullStatus.INTERRUPTED, error=cancelled())
            raise PullInterrupted([outcomes[i] for i in sorted(outcomes)]) from None
        except BaseException:
            cancel.set()  # a bug in one worker: stop the others instead of leaving them
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    if options.force and any(before.find(n) is not None for _, n in todo):
        outcomes = _mark_updates(server, before, outcomes)
    return [outcomes[i] for i in sorted(outcomes)]


def _result(future: Future[tuple[int, PullOutcome]]) -> tuple[int, PullOutcome]:
    # An untimed future.result() may not wake for Ctrl-C on Windows; a timed wait does.
    while True:
        try:
            return future.result(timeout=0.2)
        except FutureTimeout:
            continue


def _mark_updates(server: OllamaServer, before: Inventory,
                  outcomes: dict[int, PullOutcome]) -> dict[int, PullOutcome]:
    """--force: a present model whose manifest digest changed was updated."""
    try:
        after = server.tags()
    except ServerError:
        return outcomes
    marked = dict(outcomes)
    for index, outcome in outcomes.items():
        old, new = before.find(outcome.name), after.find(outcome.name)
        if outcome.status == PullStatus.UNCHANGED and old and new and old.digest != new.digest:
            marked[index] = replace(outcome, status=PullStatus.UPDATED)
    return marked


class _Puller:
    """One model: attempts until success, a final error, the retry bound, or Ctrl-C."""

    def __init__(self, server: OllamaServer, options: PullOptions, reporter: Reporter,
                 watchdog: Watchdog, cancel: threading.Event) -> None:
        self.server = server
        self.options = options
        self.reporter = reporter
        self.watchdog = watchdog
        self.cancel = cancel

    def pull(self, name: ModelName, status_if_ok: PullStatus = PullStatus.PULLED,
             expected_size: int | None = None) -> PullOutcome:
        run = ModelRun(name)
        started = time.monotonic()
        options = self.options
        self.reporter.handle(ModelStarted(name.short, expected_size))
        attempt = Attempt(self.server, run, self.reporter, self.watchdog,
                          insecure=options.insecure, stall_timeout=options.stall_timeout,
                          connect_timeout=options.connect_timeout)
        while True:
            error = attempt()
            if error is None:
                return self._finish(run, started, status_if_ok)
            if self.cancel.is_set():
                return self._finish(run, started, PullStatus.INTERRUPTED, cancelled())
            if not error.retryable:
                return self._finish(run, started, PullStatus.FAILED, error)
            if run.retries >= options.retries:
                gave_up = PullError(
                    error.kind,
                    f"{error.message} (gave up after "
                    f"{counted(run.retries, 'retry', 'retries')})",
                    hint=error.hint or "run the same command again: it resumes where it "
                    "stopped; --retries and --stall-timeout allow more patience",
                    detail=error.detail,
                )
                return self._finish(run, started, PullStatus.FAILED, gave_up)
            run.retries += 1
            run.reasons.append(error.kind)
            delay = options.delay(run.retries)
            self.reporter.handle(Retrying(name.short, run.retries, options.retries, delay,
                                          error))
            if self.cancel.wait(delay):
                return self._finish(run, started, PullStatus.INTERRUPTED, cancelled())

    def _finish(self, run: ModelRun, started: float, status: PullStatus,
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
        self.reporter.handle(ModelFinished.of(outcome))
        return outcome

    def _installed_size(self, name: ModelName) -> int | None:
        """The pulled model's size as the server lists it (/api/tags): the stream may not
        have shown every blob (see `ModelRun.downloaded_of`)."""
        try:
            found = self.server.tags().find(name)
        except ServerError as exc:
            log.debug("%s: no size from /api/tags after the pull: %s", name.short, exc)
            return None
        return found.size if found is not None else None

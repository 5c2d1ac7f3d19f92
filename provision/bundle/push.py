"""Provisioning a server from a store of models (a bundle, the seed cache), through the
Ollama API alone.

For each model: read its manifest and small layers from the store (checked), ask the
server what it has. A model with the same weights is `present`. Otherwise the GGUF
blobs the server lacks are uploaded (`HEAD` first; each streamed, checked while it
goes, retried), then `/api/create` makes the model under its registry name from the
blobs and the template, system prompt, parameters and licence, as if it had been
pulled. A blob already on the server is never sent again, so a run that was stopped
continues where it was (a blob cut off in the middle is sent again whole: Ollama keeps
no partial uploads). What fails leaves no model behind.

`push_models()` is the entry point (`bundle push` calls it); `StorePush` is it as the
`ModelSource` of `pull --bundle`, `apply` and `fleet` (`--bundle`, `--seed`), in pull's
words.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Callable, TypeVar

from provision.bundle.format import BundleBlob, BundleError, BundleModel, sha256_digest
from provision.bundle.recipe import Recipe, recipe, small_layers
from provision.bundle.store import ModelStore, StoreFiles
from provision.bundle.transfer import Pace, TooSlow, TransferOptions
from provision.models import ensure_disk_space
from provision.models.pull import (
    UPLOADING,
    BlobProgress,
    ErrorKind,
    ModelFinished,
    ModelStarted,
    NullReporter,
    PullError,
    PullInterrupted,
    PullOutcome,
    PullStatus,
    Reporter,
    Retrying,
    StatusChanged,
    cancelled,
    classify_server_error,
)
from provision.models.registry import Layer, ModelManifest
from provision.names import ModelName
from provision.output import counted, human_bytes
from provision.result import Status
from provision.server import ModelShow, OllamaServer, ServerError
from provision.versions import format_version, parse_version

T = TypeVar("T")


class PushStatus(Status):
    """How a model's push ended (stable: part of the `--json` schema)."""

    CREATED = "created"  # was missing, now made from the bundle
    UPDATED = "updated"  # was there with other weights, now the bundle's
    PRESENT = "present"  # already has these weights: nothing sent
    FAILED = "failed"
    INTERRUPTED = "interrupted"


CREATE_SLACK = 120.0  # seconds for /api/create, plus the weights at CREATE_MIN_RATE
CREATE_MIN_RATE = 20e6  # bytes per second the server checks the weights at, at least



UploadSlot = Callable[[], AbstractContextManager[object]]


@dataclass(frozen=True)
class PushOptions:
    upgrade: bool = True  # replace a model whose weights differ (False: leave it, stale)
    transfer: TransferOptions = field(default_factory=TransferOptions)
    # Held around each attempt to upload a blob (not around HEAD, create or a backoff):
    # `fleet` shares one bounded semaphore between its hosts (`--uploads N`).
    upload_slot: UploadSlot = nullcontext


@dataclass(frozen=True)
class PushOutcome:
    name: ModelName
    status: PushStatus
    size: int = 0  # bytes of the model's blobs
    bytes_sent: int = 0  # uploaded by this run, retried bytes included
    blobs_sent: int = 0
    blobs_skipped: int = 0  # already on the server: not sent
    duration: float = 0.0
    retries: int = 0
    weights: str | None = None  # sha256:<hex> of the weights the server has now
    manifest_digest: str | None = None  # what /api/tags lists for it after this run
    same_manifest: bool | None = None  # that is the bundle's manifest (newline aside)
    stale: bool = False  # present with other weights, left alone (upgrade off)
    error: PullError | None = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status not in (PushStatus.FAILED, PushStatus.INTERRUPTED)

    @property
    def changed(self) -> bool:
        return self.status in (PushStatus.CREATED, PushStatus.UPDATED)


class PushInterrupted(KeyboardInterrupt):
    """Ctrl-C: carries every model's outcome so far (the unfinished ones: interrupted)."""

    def __init__(self, outcomes: list[PushOutcome]) -> None:
        super().__init__()
        self.outcomes = outcomes


Announce = Callable[[PushOutcome], ModelFinished]  # how a model's end is told


def push_models(store: ModelStore, server: OllamaServer, names: Sequence[ModelName] = (), *,
                options: PushOptions | None = None, reporter: Reporter | None = None,
                sleep: Callable[[float], None] = time.sleep,
                announce: Announce | None = None) -> list[PushOutcome]:
    """Put the named models of `store` (all of them when none are named) on the server,
    one after another.

    Raises BundleError before anything is sent when the store is unusable (a truncated
    bundle) or lacks a named model; every other failure is a model's `failed` outcome.
    Ctrl-C raises PushInterrupted with the outcomes so far. `announce`: the reporter's
    ModelFinished for an outcome (default: in `bundle push`'s words).
    """
    options = options or PushOptions()
    models = store.select(names)
    store.check()
    outcomes: list[PushOutcome] = []
    run = _Push(store, server, options, reporter or NullReporter(), sleep,
                announce or _announce)
    for model in models:
        try:
            outcomes.append(run.model(model))
        except KeyboardInterrupt:
            done = {o.name.key for o in outcomes}
            outcomes.append(replace(run.current, status=PushStatus.INTERRUPTED))
            outcomes += [PushOutcome(name=m.name, status=PushStatus.INTERRUPTED)
                         for m in models
                         if m.name.key not in done and m.name.key != model.name.key]
            raise PushInterrupted(outcomes) from None
    return outcomes


class _Failed(Exception):
    def __init__(self, error: PullError) -> None:
        super().__init__(error.message)
        self.error = error


class _Push:
    """One server, model after model; `current` is the model in progress."""

    def __init__(self, store: ModelStore, server: OllamaServer, options: PushOptions,
                 reporter: Reporter, sleep: Callable[[float], None],
                 announce: Announce) -> None:
        self.store = store
        self.server = server
        self.options = options
        self.report = reporter.handle
        self.sleep = sleep
        self.announce = announce
        self._version: str | None = None
        self.current: PushOutcome

    def model(self, model: BundleModel) -> PushOutcome:
        name = model.name
        started = time.monotonic()
        self.current = PushOutcome(name=name, status=PushStatus.INTERRUPTED)
        try:
            outcome = self._provision(model)
        except _Failed as failed:
            outcome = replace(self.current, status=PushStatus.FAILED, error=failed.error)
        outcome = replace(outcome, duration=time.monotonic() - started)
        self.report(self.announce(outcome))
        return outcome

    def _provision(self, model: BundleModel) -> PushOutcome:
        name, short = model.name, model.name.short
        self.report(StatusChanged(short, f"reading {self.store.label}"))
        try:
            manifest = self.store.manifest(model)
            plan = self._recipe(manifest)
        except BundleError as exc:
            raise _Failed(PullError(ErrorKind.CORRUPT_BUNDLE, exc.message, hint=exc.hint)) from None
        self.current = replace(self.current, size=manifest.total_size)
        self.report(StatusChanged(short, "checking the server"))
        before = self._call(lambda: self._installed(name), name)
        wanted = manifest.weights.digest if manifest.weights else None
        if before is not None and before.weights == wanted:
            return replace(self.current, status=PushStatus.PRESENT, weights=before.weights)
        if before is not None and not self.options.upgrade:
            return replace(self.current, status=PushStatus.PRESENT, weights=before.weights,
                           stale=True)
        self._check_version(plan, name)
        missing = [x for x in plan.uploads
                   if not self._call(lambda d=x.digest: self.server.has_blob(d), name)]
        self.current = replace(self.current, blobs_skipped=len(plan.uploads) - len(missing))
        self.report(ModelStarted(short, sum(x.size for x in missing), UPLOADING))
        for layer in missing:
            self._upload(name, layer)
        self._create(name, plan, existed=before is not None)
        return self._check_result(model, manifest, existed=before is not None)

    def _recipe(self, manifest: ModelManifest) -> Recipe:
        small = {}
        for layer in small_layers(manifest):
            blob = self.store.blob(layer.digest)
            if blob is None:  # manifest() checked this: a store that changed under us
                raise BundleError(f"{self.store.label} lacks blob {layer.digest}")
            small[layer.digest] = self.store.read_blob(blob)
        try:
            return recipe(manifest, small)
        except (ValueError, KeyError) as exc:
            raise BundleError(f"the layers of {manifest.name.short} are unreadable: {exc}"
                              ) from None

    def _check_version(self, plan: Recipe, name: ModelName) -> None:
        if not plan.requires:
            return
        if self._version is None:
            self._version = self._call(self.server.version, name) or ""
        have, need = parse_version(self._version), parse_version(plan.requires)
        if have is not None and need is not None and have < need:
            raise _Failed(PullError(
                ErrorKind.SERVER_TOO_OLD, f"needs Ollama {format_version(need)} or newer; the "
                f"server runs {self._version}",
                hint="update Ollama on the server, then run this again"))

    # --- uploads ----------------------------------------------------------------------

    def _upload(self, name: ModelName, layer: Layer) -> None:
        transfer = self.options.transfer
        blob = self.store.blob(layer.digest)
        if blob is None:  # manifest() checked this: a store that changed under us
            raise _Failed(PullError(ErrorKind.CORRUPT_BUNDLE,
                                    f"{self.store.label} lacks blob {layer.digest}"))
        failures = 0
        while True:
            sent = [0]
            try:
                if failures and self.server.has_blob(blob.digest):
                    self._count(0, sent=1)  # the last attempt landed, its answer was lost
                    return
                with self.options.upload_slot():
                    self.server.upload_blob(blob.digest, blob.size,
                                            self._chunks(name.short, blob, sent))
                self._count(sent[0], sent=1)
                return
            except BundleError as exc:
                self._count(sent[0])
                raise _Failed(PullError(ErrorKind.CORRUPT_BUNDLE, exc.message,
                                        hint=exc.hint)) from None
            except (ServerError, TooSlow) as exc:
                self._count(sent[0])
                refused = exc if isinstance(exc, ServerError) else \
                    ServerError("POST /api/blobs", f"the upload was {exc}", retryable=True,
                                connection=False)
                if not refused.retryable or failures >= transfer.retries:
                    raise _Failed(self._upload_error(name, blob, refused, failures)) from None
            failures += 1
            self.current = replace(self.current, retries=self.current.retries + 1)
            delay = transfer.delay(failures)
            self.report(Retrying(name.short, failures, transfer.retries, delay, PullError(
                ErrorKind.UPLOAD_FAILED, refused.reason, retryable=True)))
            self.sleep(delay)

    def _chunks(self, short: str, blob: BundleBlob, sent: list[int]) -> Iterator[bytes]:
        pace = Pace(blob.size, self.options.transfer.limit_rate)
        for chunk in self.store.stream_blob(blob):
            yield chunk
            sent[0] += len(chunk)
            self.report(BlobProgress(short, blob.digest, blob.size, sent[0]))
            pace.moved_bytes(len(chunk))

    def _count(self, sent_bytes: int, *, sent: int = 0, skipped: int = 0) -> None:
        c = self.current
        self.current = replace(c, bytes_sent=c.bytes_sent + sent_bytes,
                               blobs_sent=c.blobs_sent + sent,
                               blobs_skipped=c.blobs_skipped + skipped)

    def _upload_error(self, name: ModelName, blob: BundleBlob, refused: ServerError,
                      failures: int) -> PullError:
        if refused.connection:
            return PullError(ErrorKind.SERVER_UNREACHABLE,
                             f"uploading blob {blob.digest[7:19]} failed: {refused.reason}"
                             + (f" ({failures} retries)" if failures else ""),
                             hint="run the same command again: blobs already on the server "
                             "are not sent again")
        error = classify_server_error(refused.reason, name, http_status=refused.status,
                                      remaining=blob.size)
        if error.kind == ErrorKind.DISK_FULL:
            return replace(error, hint="free space there, or set OLLAMA_MODELS (in the "
                           "server's environment) to a bigger disk and restart the server; "
                           "then run this again")
        return PullError(ErrorKind.UPLOAD_FAILED, f"the server refused blob "
                         f"{blob.digest[7:19]}: {refused.reason}", detail=refused.reason)

    # --- the model --------------------------------------------------------------------

    def _create(self, name: ModelName, plan: Recipe, *, existed: bool) -> None:
        # The server checks the weights by copying them once: allow for a slow disk.
        timeout = CREATE_SLACK + sum(x.size for x in plan.uploads) / CREATE_MIN_RATE
        self.report(StatusChanged(name.short, "creating the model", slow=True))
        try:
            self.server.create_from_files(name, plan.request, timeout=timeout)
        except ServerError as exc:
            left = "" if existed else self._remove_leftover(name)
            hint = ("the previous version is still there, unchanged" if existed else
                    "update Ollama on the server if the model is newer than it; "
                    f"check {self.store.label} (`ollama-provision bundle verify` checks a "
                    "bundle)") + left
            raise _Failed(PullError(ErrorKind.CREATE_FAILED, f"the server could not make the model "
                                    f"of its files: {exc.reason}", hint=hint,
                                    detail=exc.reason)) from None

    def _remove_leftover(self, name: ModelName) -> str:
        """After a failed create: no half-made model may stay listed."""
        try:
            if self._installed(name) is not None:
                self.server.delete(name)
                return " (the half-made model was removed)"
        except ServerError:
            return " (could not check whether a half-made model is left)"
        return ""

    def _check_result(self, model: BundleModel, manifest: ModelManifest, *,
                      existed: bool) -> PushOutcome:
        name = model.name
        after = self._call(lambda: self._installed(name), name)
        if after is None:
            raise _Failed(PullError(ErrorKind.CREATE_FAILED, "the server said success but does not "
                                    "list the model"))
        wanted = manifest.weights.digest if manifest.weights else None
        notes = []
        if after.weights != wanted:
            notes.append(f"the server stored other weights ({after.weights}) than those in "
                         f"{self.store.label} ({wanted}): it re-encoded them")
        tagged = self._call(lambda: self._manifest_digest(name), name)
        # Ollama writes a created manifest with a final newline, a pulled one without:
        # the same manifest either way.
        body = manifest.raw.rstrip(b"\n")
        same = tagged in (sha256_digest(body), sha256_digest(body + b"\n"))
        return replace(self.current, status=PushStatus.UPDATED if existed else PushStatus.CREATED,
                       weights=after.weights, manifest_digest=tagged, same_manifest=same,
                       notes=tuple(notes))

    def _installed(self, name: ModelName) -> ModelShow | None:
        """The model by that name on the server (None: it has none)."""
        return self.server.show(name)

    def _manifest_digest(self, name: ModelName) -> str | None:
        """`sha256:<hex>` of the model's manifest, as `/api/tags` lists it."""
        found = self.server.tags().find(name)
        return f"sha256:{found.digest}" if found is not None and found.digest else None

    def _call(self, request: Callable[[], T], name: ModelName) -> T:
        """A short request, retried on connection trouble; a failure fails the model."""
        transfer = self.options.transfer
        failures = 0
        while True:
            try:
                return request()
            except ServerError as exc:
                if not exc.retryable or failures >= transfer.retries:
                    kind = ErrorKind.SERVER_UNREACHABLE if exc.connection else \
                        ErrorKind.UPLOAD_FAILED
                    raise _Failed(PullError(kind, f"the server failed: {exc.reason}",
                                            detail=exc.reason)) from None
            failures += 1
            self.sleep(transfer.delay(failures))


def _announce(outcome: PushOutcome) -> ModelFinished:
    return ModelFinished(outcome.name.short, outcome.ok, outcome_text(outcome),
                         interrupted=outcome.status == PushStatus.INTERRUPTED,
                         moved=outcome.bytes_sent, duration=outcome.duration,
                         shown_whole=outcome.changed and outcome.blobs_sent > 0)


_PULL_WORDS = {PushStatus.CREATED: PullStatus.PULLED, PushStatus.UPDATED: PullStatus.UPDATED,
               PushStatus.PRESENT: PullStatus.PRESENT, PushStatus.FAILED: PullStatus.FAILED,
               PushStatus.INTERRUPTED: PullStatus.INTERRUPTED}


def pull_outcome(outcome: PushOutcome, via: str) -> PullOutcome:
    """A push told in pull's words (`created` is `pulled`): `downloaded` is what the
    server received, `sent_bytes` what was sent (retries included)."""
    return PullOutcome(
        name=outcome.name, status=_PULL_WORDS[outcome.status], size=outcome.size,
        downloaded=outcome.bytes_sent, duration=outcome.duration,
        retries=outcome.retries, retry_reasons=(ErrorKind.UPLOAD_FAILED,) * outcome.retries,
        error=outcome.error, via=via, sent_bytes=outcome.bytes_sent,
        blobs_sent=outcome.blobs_sent, blobs_skipped=outcome.blobs_skipped,
        stale=outcome.stale)


class StorePush:
    """A store as the `ModelSource` of a server's steps: this machine uploads what the
    server lacks (`pull --bundle`, `apply`, `fleet --bundle`), told in pull's words.
    Names the store lacks are refused (BundleError, exit 2) before anything is sent,
    unless the server has them already (a custom model's base made there)."""

    def __init__(self, store: ModelStore, kind: str, *, transfer: TransferOptions,
                 upload_slot: UploadSlot = nullcontext,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.kind = kind
        self.label = store.label
        self.transfer = transfer
        self.upload_slot = upload_slot
        self.sleep = sleep

    def provide(self, server: OllamaServer, names: list[ModelName], *, upgrade: bool,
                check_disk: bool, reporter: Reporter | None) -> list[PullOutcome]:
        installed = {n.key: m for n in names if (m := server.tags().find(n)) is not None}
        # Not in the store, but on the server (a custom model's base made there): as it is.
        kept = [n for n in names if n.key in installed and not self._holds(n)]
        todo = [n for n in names if n not in kept]
        outcomes = {n.key: PullOutcome(name=n, status=PullStatus.PRESENT,
                                       size=installed[n.key].size) for n in kept}
        if not todo:
            return [outcomes[n.key] for n in names]
        self.store.select(todo)  # refused before anything is sent
        self.store.check()
        missing = [n for n in todo if n.key not in installed]
        if missing and check_disk and server.address.is_loopback:
            ensure_disk_space(missing, server, files=StoreFiles(self.store))
        options = PushOptions(upgrade=upgrade, transfer=self.transfer,
                              upload_slot=self.upload_slot)
        try:
            with _shown(reporter):
                pushed = push_models(self.store, server, todo, options=options,
                                     reporter=reporter, sleep=self.sleep,
                                     announce=self._announce)
        except PushInterrupted as stop:
            outcomes.update((o.name.key, pull_outcome(o, self.label)) for o in stop.outcomes)
            raise PullInterrupted([outcomes.get(n.key) or PullOutcome(
                name=n, status=PullStatus.INTERRUPTED, error=cancelled())
                for n in names]) from None
        outcomes.update((o.name.key, pull_outcome(o, self.label)) for o in pushed)
        return [outcomes[n.key] for n in names]

    def _holds(self, name: ModelName) -> bool:
        try:
            self.store.select([name])
        except BundleError:
            return False
        return True

    def _announce(self, outcome: PushOutcome) -> ModelFinished:
        return ModelFinished.of(pull_outcome(outcome, self.label))


def _shown(reporter: Reporter | None) -> AbstractContextManager[object]:
    """A reporter that is a context manager (the terminal's live bars) is entered."""
    if isinstance(reporter, contextlib.AbstractContextManager):
        return reporter
    return nullcontext()


def outcome_text(outcome: PushOutcome) -> str:
    """One line about how a model's push ended (reporters and the summary share it)."""
    if outcome.status == PushStatus.PRESENT:
        return ("present with other weights (left alone)" if outcome.stale
                else "already present, nothing sent")
    if outcome.status in (PushStatus.FAILED, PushStatus.INTERRUPTED):
        return outcome.error.message if outcome.error else outcome.status
    sent = (f"{human_bytes(outcome.bytes_sent)} sent" if outcome.blobs_sent
            else "nothing sent")
    skipped = (f", {counted(outcome.blobs_skipped, 'blob')} already there"
               if outcome.blobs_skipped else "")
    rate = (f" ({human_bytes(outcome.bytes_sent / outcome.duration)}/s)"
            if outcome.bytes_sent and outcome.duration > 0 else "")
    retries = f", {counted(outcome.retries, 'retry', 'retries')}" if outcome.retries else ""
    return f"{outcome.status}: {sent}{skipped}{rate}{retries}"

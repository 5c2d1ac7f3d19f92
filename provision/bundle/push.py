"""Provisioning a server from a bundle, through the Ollama API alone.

For each model: read its manifest and small layers from the bundle (checked), ask the
server what it has. A model with the same weights is `present`. Otherwise the GGUF
blobs the server lacks are uploaded (`HEAD` first; each streamed, checked while it
goes, retried), then `/api/create` makes the model under its registry name from the
blobs and the template, system prompt, parameters and licence, as if it had been
pulled. A blob already on the server is never sent again, so a run that was stopped
continues where it was (a blob cut off in the middle is sent again whole: Ollama keeps
no partial uploads). What fails leaves no model behind.

`provision_from_bundle()` is the entry point (`bundle push` calls it; `pull`, `apply`
and `fleet` with `--bundle` are meant to).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Callable, TypeVar

from provision.bundle.events import (
    UPLOAD,
    BlobProgress,
    ModelFinished,
    ModelStarted,
    Notice,
    NullReporter,
    Reporter,
    StepChanged,
)
from provision.bundle.format import BundleBlob, BundleError, BundleModel, sha256_digest
from provision.bundle.reader import BundleReader
from provision.bundle.recipe import Recipe, recipe, small_layers
from provision.bundle.transfer import Pace, TooSlow, TransferOptions
from provision.models.pull import ErrorKind, PullError, classify_server_error
from provision.models.registry import Layer, ModelManifest
from provision.names import ModelName
from provision.output import human_bytes
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



@dataclass(frozen=True)
class PushOptions:
    upgrade: bool = True  # replace a model whose weights differ (False: leave it, stale)
    transfer: TransferOptions = field(default_factory=TransferOptions)


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


def provision_from_bundle(bundle: BundleReader, server: OllamaServer,
                          names: Sequence[ModelName] = (), *,
                          options: PushOptions | None = None,
                          reporter: Reporter | None = None,
                          sleep: Callable[[float], None] = time.sleep) -> list[PushOutcome]:
    """Put the named models of `bundle` (all of them when none are named) on the server.

    Raises BundleError before anything is sent when the file is truncated or lacks a
    named model; every other failure is a model's `failed` outcome. Ctrl-C raises
    PushInterrupted with the outcomes so far.
    """
    options = options or PushOptions()
    models = bundle.select(names)
    bundle.check_length()
    outcomes: list[PushOutcome] = []
    run = _Push(bundle, server, options, reporter or NullReporter(), sleep)
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

    def __init__(self, bundle: BundleReader, server: OllamaServer, options: PushOptions,
                 reporter: Reporter, sleep: Callable[[float], None]) -> None:
        self.bundle = bundle
        self.server = server
        self.options = options
        self.report = reporter.handle
        self.sleep = sleep
        self._version: str | None = None
        self.current: PushOutcome

    def model(self, model: BundleModel) -> PushOutcome:
        name, short = model.name, model.name.short
        started = time.monotonic()
        self.current = PushOutcome(name=name, status=PushStatus.INTERRUPTED)
        try:
            outcome = self._provision(model)
        except _Failed as failed:
            outcome = replace(self.current, status=PushStatus.FAILED, error=failed.error)
        outcome = replace(outcome, duration=time.monotonic() - started)
        self.report(ModelFinished(short, outcome.ok, outcome_text(outcome)))
        return outcome

    def _provision(self, model: BundleModel) -> PushOutcome:
        name, short = model.name, model.name.short
        self.report(StepChanged(short, "reading the bundle"))
        try:
            manifest = self.bundle.manifest(model)
            plan = self._recipe(manifest)
        except BundleError as exc:
            raise _Failed(PullError(ErrorKind.CORRUPT_BUNDLE, exc.message, hint=exc.hint)) from None
        self.current = replace(self.current, size=manifest.total_size)
        self.report(StepChanged(short, "checking the server"))
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
        self.report(ModelStarted(short, UPLOAD, sum(x.size for x in missing)))
        for layer in missing:
            self._upload(name, layer)
        self._create(name, plan, existed=before is not None)
        return self._check_result(model, manifest, existed=before is not None)

    def _recipe(self, manifest: ModelManifest) -> Recipe:
        small = {}
        for layer in small_layers(manifest):
            blob = self.bundle.index.blob(layer.digest)
            if blob is None:  # manifest() checked this: a bundle that changed under us
                raise BundleError(f"the bundle lacks blob {layer.digest}")
            small[layer.digest] = self.bundle.read_blob(blob)
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
        blob = self.bundle.index.blob(layer.digest)
        if blob is None:  # manifest() checked this: a bundle that changed under us
            raise _Failed(PullError(ErrorKind.CORRUPT_BUNDLE,
                                    f"the bundle lacks blob {layer.digest}"))
        failures = 0
        while True:
            sent = [0]
            try:
                if failures and self.server.has_blob(blob.digest):
                    self._count(0, sent=1)  # the last attempt landed, its answer was lost
                    return
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
            self.report(Notice(name.short, f"{refused.reason}; retry {failures}/"
                                           f"{transfer.retries} in {delay:.2g}s"))
            self.sleep(delay)

    def _chunks(self, short: str, blob: BundleBlob, sent: list[int]) -> Iterator[bytes]:
        pace = Pace(blob.size, self.options.transfer.limit_rate)
        for chunk in self.bundle.stream_blob(blob):
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
        self.report(StepChanged(name.short, "creating the model", slow=True))
        try:
            self.server.create_from_files(name, plan.request, timeout=timeout)
        except ServerError as exc:
            left = "" if existed else self._remove_leftover(name)
            hint = ("the previous version is still there, unchanged" if existed else
                    "update Ollama on the server if the model is newer than it; "
                    "`ollama-provision bundle verify` checks the bundle") + left
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
            notes.append(f"the server stored other weights ({after.weights}) than the "
                         f"bundle's ({wanted}): it re-encoded them")
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


def outcome_text(outcome: PushOutcome) -> str:
    """One line about how a model's push ended (reporters and the summary share it)."""
    if outcome.status == PushStatus.PRESENT:
        return ("present with other weights (left alone)" if outcome.stale
                else "already present, nothing sent")
    if outcome.status in (PushStatus.FAILED, PushStatus.INTERRUPTED):
        return outcome.error.message if outcome.error else outcome.status
    sent = (f"{human_bytes(outcome.bytes_sent)} sent" if outcome.blobs_sent
            else "nothing sent")
    skipped = (f", {outcome.blobs_skipped} blob{'s' if outcome.blobs_skipped != 1 else ''} "
               "already there" if outcome.blobs_skipped else "")
    rate = (f" ({human_bytes(outcome.bytes_sent / outcome.duration)}/s)"
            if outcome.bytes_sent and outcome.duration > 0 else "")
    retries = (f", {outcome.retries} {'retry' if outcome.retries == 1 else 'retries'}"
               if outcome.retries else "")
    return f"{outcome.status}: {sent}{skipped}{rate}{retries}"

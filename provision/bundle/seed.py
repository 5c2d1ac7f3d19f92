"""`fleet --seed`: a host's models uploaded from the seed cache, each downloaded from the
registry once for the whole fleet (`cache.SeedCache`).

The `ModelSource` of every host's steps: per model, its manifest from the fleet's
`Reference` (read once for all hosts, as drift reads it), its blobs made complete in the
cache (the first host that needs one downloads it, the others wait for it), then
uploaded like a bundle's, one model after another. A host takes first the models the
cache holds whole, so that a download never evicts what a host is about to upload.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext

from provision.bundle.cache import LABEL, SeedCache
from provision.bundle.format import BundleError
from provision.bundle.push import (
    PushInterrupted,
    PushOptions,
    UploadSlot,
    pull_outcome,
    push_models,
)
from provision.bundle.transfer import TransferOptions
from provision.errors import ProvisionError
from provision.models import Reference
from provision.models.pull import (
    ErrorKind,
    ModelFinished,
    PullError,
    PullInterrupted,
    PullOutcome,
    PullStatus,
    Reporter,
    cancelled,
)
from provision.models.registry import ModelManifest
from provision.names import ModelName
from provision.server import OllamaServer

SEED = "seed"


class SeedPush:
    def __init__(self, cache: SeedCache, reference: Reference, *, transfer: TransferOptions,
                 upload_slot: UploadSlot = nullcontext,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.cache = cache
        self.reference = reference
        self.transfer = transfer
        self.upload_slot = upload_slot
        self.sleep = sleep
        self.kind = SEED
        self.label = LABEL

    def provide(self, server: OllamaServer, names: list[ModelName], *, upgrade: bool,
                check_disk: bool, reporter: Reporter | None) -> list[PullOutcome]:
        """`check_disk` is the host's server's business (its full disk fails the model):
        the cache checks its own disk before each download."""
        outcomes: dict[tuple[str, str, str, str], PullOutcome] = {}
        manifests: dict[tuple[str, str, str, str], ModelManifest] = {}
        for name in names:
            try:
                manifests[name.key] = self.reference.manifest(name)
            except ProvisionError as exc:
                outcomes[name.key] = self._failed(name, ErrorKind.REGISTRY_UNREACHABLE
                                                  if getattr(exc, "status", None) is None
                                                  else ErrorKind.UNKNOWN_MODEL, exc, reporter)
        todo = [manifests[n.key] for n in names if n.key in manifests]
        self.cache.want(todo)
        options = PushOptions(upgrade=upgrade, transfer=self.transfer,
                              upload_slot=self.upload_slot)
        try:
            while todo:
                # the models the cache holds whole first: a download evicts nothing a
                # host is about to upload
                manifest = next((m for m in todo if self.cache.cached(m)), todo[0])
                todo.remove(manifest)
                name = manifest.name
                try:
                    with self.cache.pinned(manifest, reporter) as store:
                        (pushed,) = push_models(
                            store, server, [name], options=options, reporter=reporter,
                            sleep=self.sleep,
                            announce=lambda o: ModelFinished.of(pull_outcome(o, LABEL)))
                    outcomes[name.key] = pull_outcome(pushed, LABEL)
                except PushInterrupted as stop:
                    outcomes.update((o.name.key, pull_outcome(o, LABEL))
                                    for o in stop.outcomes)
                    raise
                except BundleError as exc:  # its download failed, or the cache's disk
                    outcomes[name.key] = self._failed(name, ErrorKind.REGISTRY_UNREACHABLE,
                                                      exc, reporter)
                finally:
                    self.cache.unwant(manifest)
        except KeyboardInterrupt:  # PushInterrupted too
            raise PullInterrupted([outcomes.get(n.key) or PullOutcome(
                name=n, status=PullStatus.INTERRUPTED, error=cancelled(), via=LABEL)
                for n in names]) from None
        finally:
            for manifest in todo:
                self.cache.unwant(manifest)
        return [outcomes[n.key] for n in names]

    @staticmethod
    def _failed(name: ModelName, kind: ErrorKind, exc: ProvisionError,
                reporter: Reporter | None) -> PullOutcome:
        outcome = PullOutcome(name=name, status=PullStatus.FAILED, via=LABEL,
                              error=PullError(kind, exc.message, hint=exc.hint))
        if reporter is not None:
            reporter.handle(ModelFinished.of(outcome))
        return outcome

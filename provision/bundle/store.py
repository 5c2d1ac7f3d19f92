"""Models this machine holds and can upload: `ModelStore`, which a bundle file
(`BundleReader`) and the seed cache (`cache.CachedModels`) implement, and what the
steps before an upload read from one as they would from the registry (`StoreFiles`:
sizes for the plan and the disk check, a GGUF header for the hardware judgement, the
weights for drift).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from provision.bundle.format import BundleBlob, BundleError, BundleModel
from provision.models.registry import ModelConfig, ModelManifest, RegistryError, parse_config
from provision.names import ModelName

CHUNK = 1 << 20  # bytes per read: large enough for disk speed, small enough for memory
MAX_SMALL_LAYER = 16 << 20  # template, system prompt, parameters, licence, config


class ModelStore(Protocol):
    label: str  # for messages: "models.tar", "the seed cache"

    def select(self, names: Iterable[ModelName]) -> list[BundleModel]:
        """The named models (all when none are named); a BundleError (exit 2) naming what
        the store has when one is not there."""
        ...

    def check(self) -> None:
        """Refuse a store that cannot be used whole (a truncated bundle)."""
        ...

    def manifest(self, model: BundleModel) -> ModelManifest:
        """The model's manifest, checked; BundleError when a blob it names is missing."""
        ...

    def blob(self, digest: str) -> BundleBlob | None: ...

    def read_blob(self, blob: BundleBlob, limit: int = MAX_SMALL_LAYER) -> bytes:
        """A small blob, whole and checked against its digest."""
        ...

    def stream_blob(self, blob: BundleBlob, *, chunk: int = CHUNK) -> Iterator[bytes]:
        """A blob in chunks, checked while it streams; the last chunk only once the digest
        matched (BundleError otherwise), so an upload never delivers a corrupt blob."""
        ...

    def read_range(self, blob: BundleBlob, start: int, length: int) -> bytes: ...


def store_manifest(store: ModelStore, name: ModelName) -> ModelManifest:
    """A model's manifest by name (BundleError when the store lacks it)."""
    (model,) = store.select([name])
    return store.manifest(model)


class StoreFiles:
    """A store read as the registry is before anything moves (`ModelFiles`): a model's
    manifest, its config, byte ranges of its weights. A model the store lacks is the
    registry's 404."""

    requests = 0  # nothing goes over a network
    bytes_read = 0

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def manifest(self, name: ModelName) -> ModelManifest:
        try:
            return store_manifest(self.store, name)
        except BundleError as exc:
            raise RegistryError(exc.message, status=404, hint=exc.hint) from None

    def blob(self, name: ModelName, digest: str, *, start: int = 0,
             end: int | None = None) -> bytes:
        blob = self.store.blob(digest)
        if blob is None:
            raise RegistryError(f"{self.store.label} lacks blob {digest} of {name.short}",
                                status=404)
        try:
            if start == 0 and end is None:
                data = self.store.read_blob(blob)
            else:
                length = blob.size - start if end is None else end - start + 1
                data = self.store.read_range(blob, start, length)
        except BundleError as exc:
            raise RegistryError(exc.message, status=500, hint=exc.hint) from None
        self.bytes_read += len(data)
        return data

    def config(self, manifest: ModelManifest) -> ModelConfig:
        return parse_config(manifest, self.blob(manifest.name, manifest.config.digest))

    def close(self) -> None:
        pass  # the store is its owner's to close

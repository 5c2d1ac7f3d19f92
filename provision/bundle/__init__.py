"""Model bundles: models in one file, and servers provisioned from a store of models
through the Ollama API alone (no registry access on the server).

The pipeline, one module each: `format` (the file layout, pure) → `sources` (registry or
a local server's models folder) → `writer` / `create` (making a bundle) → `reader` /
`summary` (reading one back) → `store` (what can be uploaded from: a bundle, the seed
cache) → `recipe` (a manifest as an `/api/create` request, pure) → `push` (provisioning
a server, through its `OllamaServer`; as a `ModelSource` for `pull`, `apply` and
`fleet`); `cache` (the seed cache: each model downloaded once for a fleet, kept within a
budget) and `seed` (the fleet's uploads from it); `transfer` paces and retries. Progress
is told with `provision.models.pull`'s events, as pulls are.
"""

from __future__ import annotations

from provision.bundle.cache import (
    DEFAULT_CACHE_SIZE,
    CacheStats,
    SeedCache,
    default_cache_dir,
)
from provision.bundle.create import BundleStatus, CreateResult, create_bundle
from provision.bundle.format import BundleError, BundleIndex, BundleModel
from provision.bundle.push import (
    PushInterrupted,
    PushOptions,
    PushOutcome,
    PushStatus,
    StorePush,
    outcome_text,
    pull_outcome,
    push_models,
)
from provision.bundle.reader import BundleReader, VerifyResult
from provision.bundle.seed import SeedPush
from provision.bundle.sources import RegistrySource, ServerSource, Source
from provision.bundle.store import ModelStore, StoreFiles, store_manifest
from provision.bundle.summary import BundleSummary, ModelSummary, summarize
from provision.bundle.transfer import TransferOptions, parse_bytes, parse_rate

__all__ = [
    "DEFAULT_CACHE_SIZE", "BundleError", "BundleIndex", "BundleModel", "BundleReader",
    "BundleStatus", "BundleSummary", "CacheStats", "CreateResult", "ModelStore",
    "ModelSummary", "PushInterrupted", "PushOptions", "PushOutcome", "PushStatus",
    "RegistrySource", "SeedCache", "SeedPush", "ServerSource", "Source", "StoreFiles",
    "StorePush", "TransferOptions", "VerifyResult", "create_bundle", "default_cache_dir",
    "outcome_text", "parse_bytes", "parse_rate", "pull_outcome", "push_models",
    "store_manifest", "summarize",
]

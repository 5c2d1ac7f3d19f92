"""Model bundles: models in one file, and servers provisioned from it through the Ollama
API alone (no registry access on the server).

The pipeline, one module each: `format` (the file layout, pure) → `sources` (registry or
a local server's models folder) → `writer` / `create` (making a bundle) → `reader` /
`summary` (reading one back) → `recipe` (a manifest as an `/api/create` request, pure) →
`push` (provisioning a server, through its `OllamaServer`); `events` / `progress` show
it, `transfer` paces and retries it.
"""

from __future__ import annotations

from provision.bundle.create import BundleStatus, CreateResult, create_bundle
from provision.bundle.events import (
    BlobProgress,
    BundleEvent,
    ModelFinished,
    ModelStarted,
    Notice,
    Reporter,
    StepChanged,
)
from provision.bundle.format import BundleError, BundleIndex, BundleModel
from provision.bundle.push import (
    PushInterrupted,
    PushOptions,
    PushOutcome,
    PushStatus,
    outcome_text,
    provision_from_bundle,
)
from provision.bundle.reader import BundleReader, VerifyResult
from provision.bundle.sources import RegistrySource, ServerSource, Source
from provision.bundle.summary import BundleSummary, ModelSummary, summarize
from provision.bundle.transfer import TransferOptions, parse_rate

__all__ = [
    "BlobProgress", "BundleError", "BundleStatus", "BundleEvent", "BundleIndex", "BundleModel",
    "BundleReader", "BundleSummary", "CreateResult", "ModelFinished", "ModelStarted",
    "ModelSummary", "Notice", "PushInterrupted", "PushOptions", "PushOutcome", "PushStatus",
    "RegistrySource", "Reporter", "ServerSource", "Source", "StepChanged",
    "TransferOptions", "VerifyResult", "create_bundle", "outcome_text", "parse_rate",
    "provision_from_bundle", "summarize",
]

"""What a bundle holds, from its index, manifests and config blobs only (no blob is
read whole: inspecting a 40 GB bundle takes milliseconds)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from provision.bundle.reader import BundleReader
from provision.models.registry import Layer
from provision.names import ModelName


@dataclass(frozen=True)
class ModelSummary:
    name: ModelName
    manifest_digest: str
    size: int  # all its blobs
    weights: Layer | None
    layers: tuple[Layer, ...]  # config first, then the manifest's layers
    family: str
    parameter_size: str
    quantization: str


@dataclass(frozen=True)
class BundleSummary:
    file_size: int
    expected_size: int
    blob_bytes: int  # each blob once
    models: tuple[ModelSummary, ...]

    @property
    def truncated(self) -> bool:
        return self.file_size < self.expected_size

    @property
    def shared_bytes(self) -> int:
        """Bytes stored once but used by several models."""
        return sum(m.size for m in self.models) - self.blob_bytes


def summarize(reader: BundleReader) -> BundleSummary:
    reader.check_length()
    models = []
    for model in reader.index.models:
        manifest = reader.manifest(model)
        config = reader.index.blob(manifest.config.digest)
        try:
            details = json.loads(reader.read_blob(config)) if config is not None else {}
        except ValueError:
            details = {}
        details = details if isinstance(details, dict) else {}
        models.append(ModelSummary(
            name=model.name, manifest_digest=model.manifest_digest,
            size=manifest.total_size, weights=manifest.weights,
            layers=(manifest.config, *manifest.layers),
            family=str(details.get("model_family") or ""),
            parameter_size=str(details.get("model_type") or ""),
            quantization=str(details.get("file_type") or "")))
    return BundleSummary(file_size=reader.file_size, expected_size=reader.expected_size,
                         blob_bytes=reader.index.blob_bytes, models=tuple(models))

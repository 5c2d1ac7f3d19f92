"""A registry manifest as an `/api/create` request that rebuilds the same model.

Given the registry's own GGUF blobs (uploaded with `/api/blobs`) and the template,
system prompt, parameters, licence and messages of its other layers (sent inline), the
server writes the same layers as a pull would, so weights digest, `/api/show` and the
capabilities match (on Ollama 0.32.15 even the manifest digest). Layers the create API
cannot rebuild (safetensors tensors, image-generation json) are refused up front.

Pure: a manifest and the small layers' bytes in, a request body out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provision.models.registry import WEIGHTS_MEDIA_TYPE, Layer, ModelManifest

_PREFIX = "application/vnd.ollama.image."
PROJECTOR = _PREFIX + "projector"
ADAPTER = _PREFIX + "adapter"
DRAFT = _PREFIX + "draft"
TEMPLATE = _PREFIX + "template"
SYSTEM = _PREFIX + "system"
LICENSE = _PREFIX + "license"
PARAMS = _PREFIX + "params"
MESSAGES = _PREFIX + "messages"

# Uploaded as blobs: which request field names them.
FILE_LAYERS = {WEIGHTS_MEDIA_TYPE: "files", PROJECTOR: "files", ADAPTER: "adapters",
               DRAFT: "draft_files"}
# Sent inline, as text or JSON.
INLINE_LAYERS = (TEMPLATE, SYSTEM, LICENSE, PARAMS, MESSAGES)
# Config fields the server does not derive from the GGUF itself.
_CONFIG_FIELDS = ("renderer", "parser", "requires")


@dataclass(frozen=True)
class Recipe:
    """What to upload, and the request that makes the model of it."""

    uploads: tuple[Layer, ...]  # GGUF blobs, each once, in manifest order
    request: dict[str, Any]  # the /api/create body (without "model" and "stream")
    requires: str | None  # the Ollama version the model needs, when its config says


def check_recreatable(manifest: ModelManifest) -> str | None:
    """Why `/api/create` cannot rebuild this model, or None."""
    if manifest.weights is None:
        return "its manifest has no weights layer (a cloud model?)"
    odd = sorted({x.media_type for x in manifest.layers
                  if x.media_type not in FILE_LAYERS and x.media_type not in INLINE_LAYERS})
    if odd:
        return (f"layers of type {', '.join(t.removeprefix(_PREFIX) for t in odd)} cannot be "
                "rebuilt through Ollama's create API")
    return None


def small_layers(manifest: ModelManifest) -> list[Layer]:
    """The layers read whole and sent inline (and the config)."""
    return [manifest.config, *(x for x in manifest.layers if x.media_type in INLINE_LAYERS)]


def recipe(manifest: ModelManifest, small: Mapping[str, bytes]) -> Recipe:
    """The request for `manifest`; `small` holds the bytes of `small_layers(manifest)`
    by digest (already checked against their digests). ValueError when a layer is not
    what its type says (a template that is not UTF-8, parameters that are not JSON)."""
    request: dict[str, Any] = {}
    uploads: list[Layer] = []
    licenses: list[str] = []
    counters: dict[str, int] = {}
    for layer in manifest.layers:
        field = FILE_LAYERS.get(layer.media_type)
        if field is not None:
            kind = layer.media_type.removeprefix(_PREFIX)
            position = counters[field] = counters.get(field, -1) + 1
            # Ollama takes files in name order: the position keeps the manifest's order.
            request.setdefault(field, {})[f"{position:02d}-{kind}.gguf"] = layer.digest
            if layer.digest not in (u.digest for u in uploads):
                uploads.append(layer)
        elif layer.media_type == TEMPLATE:
            request["template"] = small[layer.digest].decode()
        elif layer.media_type == SYSTEM:
            request["system"] = small[layer.digest].decode()
        elif layer.media_type == LICENSE:
            licenses.append(small[layer.digest].decode())
        elif layer.media_type == PARAMS:
            request["parameters"] = _json_object(small[layer.digest], dict, "parameters")
        elif layer.media_type == MESSAGES:
            request["messages"] = _json_object(small[layer.digest], list, "messages")
    if licenses:
        request["license"] = licenses[0] if len(licenses) == 1 else licenses
    config = _json_object(small[manifest.config.digest], dict, "config")
    for key in _CONFIG_FIELDS:
        if isinstance(config.get(key), str) and config[key]:
            request[key] = config[key]
    return Recipe(uploads=tuple(uploads), request=request,
                  requires=request.get("requires"))


def _json_object(data: bytes, kind: type, what: str) -> Any:
    value = json.loads(data)
    if not isinstance(value, kind):
        raise ValueError(f"the {what} layer is not a JSON {kind.__name__}")
    return value

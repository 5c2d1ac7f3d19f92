"""What an Ollama server answers, as typed values: pure parsers, no I/O.

Each answer is parsed here, once, from the JSON the client read (`client.py` owns the
wire): `/api/tags` into an `Inventory`, `/api/show` into a `ModelShow`, `/api/ps` into
`LoadedModel`s, a generation into a `Generation`. Whatever a server sends, a parser
never raises on odd field types: entries that are not what Ollama sends are skipped,
odd fields count as absent, and a table of the wrong type is recorded in
`ModelShow.malformed` for the caller that needs it to say so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.errors import ProvisionError
from provision.names import ModelName, parse_name

# --- /api/tags ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstalledModel:
    name: ModelName
    size: int  # bytes on disk (all layers)
    digest: str  # manifest digest, 64 hex (not the weights: see ModelShow.weights)
    family: str
    parameter_size: str
    quantization: str
    modified_at: str


@dataclass(frozen=True)
class Inventory:
    models: tuple[InstalledModel, ...]

    def find(self, name: ModelName) -> InstalledModel | None:
        return next((m for m in self.models if m.name.key == name.key), None)

    def missing(self, names: list[ModelName]) -> list[ModelName]:
        return [n for n in names if self.find(n) is None]


def parse_tags(payload: object) -> Inventory:
    """The inventory from a `/api/tags` body. Entries that are not what Ollama sends (no
    object, an unparseable name) are skipped; odd field types count as absent."""
    models: list[InstalledModel] = []
    for name, entry in _models(payload):
        details = _table(entry.get("details"))
        models.append(
            InstalledModel(
                name=name,
                size=count(entry.get("size")),
                digest=text(entry.get("digest")),
                family=text(details.get("family")),
                parameter_size=text(details.get("parameter_size")),
                quantization=text(details.get("quantization_level")),
                modified_at=text(entry.get("modified_at")),
            )
        )
    return Inventory(models=tuple(models))


# --- /api/show ------------------------------------------------------------------------------

_WEIGHTS_FILE = re.compile(r"sha256[-:]([0-9a-fA-F]{64})$")
_IN_BLOBS = re.compile(r"^(\S.*?)[/\\]blobs[/\\]sha256-[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelShow:
    """An installed model as `/api/show` describes it."""

    name: ModelName  # as asked for
    modelfile: str = ""
    parameters: str = ""  # `key   value` lines, as the server renders its PARAMETERs
    template: str = ""
    system: str = ""
    license: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    model_info: Mapping[str, Any] = field(default_factory=dict)  # GGUF keys
    tensors: tuple[Mapping[str, Any], ...] = ()  # name, type, shape of each
    capabilities: tuple[str, ...] = ()
    # Tables of the wrong type (`model_info` as a list): field -> the type the server sent.
    malformed: Mapping[str, str] = field(default_factory=dict)

    @property
    def weights_file(self) -> str | None:
        """The weights blob the modelfile's `FROM` line names (a path on the server)."""
        for line in self.modelfile.splitlines():
            if line.startswith("FROM") and line[4:5].isspace():
                path = line[5:].strip()
                if _WEIGHTS_FILE.search(path):
                    return path
        return None

    @property
    def weights(self) -> str | None:
        """`sha256:<hex>` of the weights blob (what drift compares with the registry)."""
        path = self.weights_file
        found = _WEIGHTS_FILE.search(path) if path else None
        return f"sha256:{found.group(1).lower()}" if found else None

    @property
    def models_folder(self) -> Path | None:
        """The server's models folder: `FROM /srv/models/blobs/sha256-<hex>` -> /srv/models."""
        found = _IN_BLOBS.match(self.weights_file or "")
        return Path(found.group(1)) if found else None

    @property
    def parent_model(self) -> str:
        return text(self.details.get("parent_model"))

    @property
    def is_embedding(self) -> bool:
        """Only embeds (it is loaded with /api/embed, never asked to generate)."""
        return "embedding" in self.capabilities and "completion" not in self.capabilities


def parse_show(name: ModelName, payload: object) -> ModelShow:
    """A `ModelShow` from an `/api/show` body (an object; anything else has no fields)."""
    body = payload if isinstance(payload, dict) else {}
    malformed = {key: type(body[key]).__name__ for key in ("details", "model_info")
                 if body.get(key) is not None and not isinstance(body[key], dict)}
    tensors = body.get("tensors")
    capabilities = body.get("capabilities")
    return ModelShow(
        name=name,
        modelfile=_str(body.get("modelfile")),
        parameters=_str(body.get("parameters")),
        template=_str(body.get("template")),
        system=_str(body.get("system")),
        license=_str(body.get("license")),
        details=_table(body.get("details")),
        model_info=_table(body.get("model_info")),
        tensors=tuple(t for t in tensors if isinstance(t, dict))
        if isinstance(tensors, list) else (),
        capabilities=tuple(c for c in capabilities if isinstance(c, str))
        if isinstance(capabilities, list) else (),
        malformed=malformed,
    )


# --- /api/ps and generations ----------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    name: ModelName
    size: int  # bytes in memory
    size_vram: int  # of which on GPUs
    context_length: int | None


def parse_ps(payload: object) -> tuple[LoadedModel, ...]:
    return tuple(LoadedModel(name=name, size=count(entry.get("size")),
                             size_vram=count(entry.get("size_vram")),
                             context_length=count(entry.get("context_length")) or None)
                 for name, entry in _models(payload))


@dataclass(frozen=True)
class Generation:
    """A finished (non-streamed) `/api/generate`: the server's own timings."""

    eval_count: int
    eval_duration: int  # nanoseconds

    @property
    def tokens_per_second(self) -> float | None:
        if not (self.eval_count and self.eval_duration):
            return None
        return self.eval_count / self.eval_duration * 1e9


def parse_generation(payload: object) -> Generation | None:
    if not isinstance(payload, dict):
        return None
    return Generation(eval_count=count(payload.get("eval_count")),
                      eval_duration=count(payload.get("eval_duration")))


# --- fields ------------------------------------------------------------------------------------


def count(value: object) -> int:
    """A byte count or a number of things from a server's JSON: a non-negative whole number
    (0 when it is anything else: a string, a list, a fraction, out of range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and not value.is_integer():
        return 0
    return int(value) if 0 <= value < 1 << 63 else 0


def text(value: object) -> str:
    """A short string field (names, digests, dates): anything else counts as absent."""
    return value[:500] if isinstance(value, str) else ""


def _str(value: object) -> str:
    """A long string field (a modelfile, a template): anything else counts as absent."""
    return value if isinstance(value, str) else ""


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _models(payload: object) -> Iterator[tuple[ModelName, Mapping[str, Any]]]:
    """The `models` list of /api/tags or /api/ps: each entry that is an object with a
    name Ollama could have written, with that name parsed."""
    entries = payload.get("models") if isinstance(payload, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        try:
            name = parse_name(text(entry.get("model")) or text(entry.get("name")))
        except ProvisionError:  # a name we cannot parse is not one of ours
            continue
        yield name, entry


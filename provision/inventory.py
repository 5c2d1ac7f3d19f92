"""What the server has: `GET /api/tags`, matched by Ollama's name rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from provision.errors import EXIT_UNREACHABLE, ProvisionError
from provision.names import ModelName, parse_name

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class InstalledModel:
    name: ModelName
    size: int  # bytes on disk (all layers)
    digest: str  # manifest digest, 64 hex (not the weights: see /api/show for those)
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
    """Build the inventory from a `/api/tags` body. Entries that are not what Ollama sends
    (no object, an unparseable name) are skipped; odd field types count as absent."""
    entries = payload.get("models") if isinstance(payload, dict) else None
    models: list[InstalledModel] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        try:
            name = parse_name(_text(entry.get("model")) or _text(entry.get("name")))
        except ProvisionError:
            continue
        details = entry.get("details")
        details = details if isinstance(details, dict) else {}
        models.append(
            InstalledModel(
                name=name,
                size=count(entry.get("size")),
                digest=_text(entry.get("digest")),
                family=_text(details.get("family")),
                parameter_size=_text(details.get("parameter_size")),
                quantization=_text(details.get("quantization_level")),
                modified_at=_text(entry.get("modified_at")),
            )
        )
    return Inventory(models=tuple(models))


def count(value: object) -> int:
    """A byte count or a number of things from a server's JSON: a non-negative whole number
    (0 when it is anything else: a string, a list, a fraction, out of range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and not value.is_integer():
        return 0
    return int(value) if 0 <= value < 1 << 63 else 0


def _text(value: object) -> str:
    """A short string field (names, digests, dates): anything else counts as absent."""
    return value[:500] if isinstance(value, str) else ""


def fetch_inventory(http: httpx.Client) -> Inventory:
    import httpx

    from provision.http import json_body

    try:
        response = http.get("/api/tags")
        response.raise_for_status()
        return parse_tags(json_body(response))
    except (httpx.HTTPError, ValueError) as exc:
        raise ProvisionError(
            f"could not list the server's models (GET /api/tags): {_reason(exc)}",
            exit_code=EXIT_UNREACHABLE,
        ) from exc


def _reason(exc: Exception) -> str:
    from provision.output import printable
    from provision.redact import in_text

    return printable(in_text(str(exc)))[:300] or type(exc).__name__

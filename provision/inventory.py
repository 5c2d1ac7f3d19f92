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
    """Build the inventory from a `/api/tags` body; entries with unparseable names are skipped."""
    entries = payload.get("models") if isinstance(payload, dict) else None
    models: list[InstalledModel] = []
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        try:
            name = parse_name(str(entry.get("model") or entry.get("name") or ""))
        except ProvisionError:
            continue
        details = entry.get("details") or {}
        models.append(
            InstalledModel(
                name=name,
                size=int(entry.get("size") or 0),
                digest=str(entry.get("digest") or ""),
                family=str(details.get("family") or ""),
                parameter_size=str(details.get("parameter_size") or ""),
                quantization=str(details.get("quantization_level") or ""),
                modified_at=str(entry.get("modified_at") or ""),
            )
        )
    return Inventory(models=tuple(models))


def fetch_inventory(http: httpx.Client) -> Inventory:
    import httpx

    try:
        response = http.get("/api/tags")
        response.raise_for_status()
        return parse_tags(response.json())
    except (httpx.HTTPError, ValueError) as exc:
        raise ProvisionError(
            f"could not list the server's models (GET /api/tags): {exc}",
            exit_code=EXIT_UNREACHABLE,
        ) from exc

"""Readiness: probe the server, list its models, and judge what `check` reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from provision.errors import (
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_UNREACHABLE,
    ProvisionError,
    UsageError,
)
from provision.host import ServerAddress
from provision.inventory import InstalledModel, Inventory, fetch_inventory
from provision.names import ModelName
from provision.probe import SERVER_ERROR, Diagnosis, ProbeResult, probe, wait_for_server
from provision.versions import (
    RESPONSES_API_MIN_OLLAMA,
    at_least,
    format_version,
    parse_version,
)


@dataclass(frozen=True)
class ModelStatus:
    name: ModelName  # as asked for
    installed: InstalledModel | None

    @property
    def display_name(self) -> str:
        """The server's own spelling when present (it may differ in case from the request)."""
        return (self.installed.name if self.installed else self.name).short


@dataclass(frozen=True)
class Readiness:
    address: ServerAddress
    exit_code: int
    version: str | None = None
    diagnosis: Diagnosis | None = None
    inventory: Inventory | None = None
    models: tuple[ModelStatus, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def model_count(self) -> int | None:
        return None if self.inventory is None else len(self.inventory.models)

    @property
    def responses_api(self) -> bool | None:
        """Does the server offer /v1/responses (what current Codex talks)?"""
        if self.version is None and self.diagnosis is not None:
            return None
        return at_least(self.version, RESPONSES_API_MIN_OLLAMA)


def check_readiness(
    address: ServerAddress,
    names: list[ModelName],
    *,
    wait: float = 0.0,
    min_version: str | None = None,
    on_wait: Callable[[ProbeResult, float], None] | None = None,
) -> Readiness:
    minimum = None
    if min_version is not None:
        minimum = parse_version(min_version)
        if minimum is None:
            raise UsageError(f"--min-version '{min_version}' is not a version like 0.13.4")
    from provision.http import client

    with client(address.url, loopback=address.is_loopback) as http:
        if wait > 0:
            result = wait_for_server(address, wait, on_retry=on_wait)
        else:
            result = probe(address, http=http)
        if result.diagnosis is not None:
            return Readiness(address=address, exit_code=EXIT_UNREACHABLE,
                             diagnosis=result.diagnosis)
        try:
            inventory = fetch_inventory(http)
        except ProvisionError as exc:
            return Readiness(address=address, exit_code=EXIT_NOT_READY, version=result.version,
                             diagnosis=Diagnosis(SERVER_ERROR, exc.message, (
                                 "look at the server's log (journalctl -u ollama, or the "
                                 "output of `ollama serve`)",)))
    statuses = tuple(ModelStatus(name, inventory.find(name)) for name in names)
    warnings: list[str] = []
    ready = all(s.installed is not None for s in statuses)
    if minimum is not None and not at_least(result.version, minimum):
        warnings.append(f"Ollama {result.version} is older than the required "
                        f"{format_version(minimum)}: upgrade the server")
        ready = False
    elif not at_least(result.version, RESPONSES_API_MIN_OLLAMA):
        warnings.append(
            f"Ollama {result.version} has no Responses API (/v1/responses): current Codex "
            f"needs Ollama >= {format_version(RESPONSES_API_MIN_OLLAMA)}; upgrade the server"
        )
    return Readiness(
        address=address,
        exit_code=EXIT_OK if ready else EXIT_NOT_READY,
        version=result.version,
        inventory=inventory,
        models=statuses,
        warnings=tuple(warnings),
    )

"""What `check` concludes: does the server answer, and does it have these models?"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from provision.errors import EXIT_NOT_READY, EXIT_OK, EXIT_UNREACHABLE, UsageError
from provision.names import ModelName
from provision.server.address import ServerAddress
from provision.server.api import InstalledModel, Inventory
from provision.server.client import OllamaServer, ServerError
from provision.server.facts import Diagnosis, DiagnosisKind, ServerFacts
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
    server: ServerFacts  # its diagnosis: why it is not usable (unreachable, or broken)
    exit_code: int
    inventory: Inventory | None = None
    models: tuple[ModelStatus, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def address(self) -> ServerAddress:
        return self.server.address

    @property
    def model_count(self) -> int | None:
        return None if self.inventory is None else len(self.inventory.models)

    @property
    def responses_api(self) -> bool | None:
        """Does the server offer /v1/responses? None: it does not answer at all."""
        if self.server.version is None and self.exit_code == EXIT_UNREACHABLE:
            return None
        return self.server.responses_api


def check_readiness(
    server: OllamaServer,
    names: list[ModelName],
    *,
    wait: float = 0.0,
    min_version: str | None = None,
    on_wait: Callable[[ServerFacts, float], None] | None = None,
) -> Readiness:
    minimum = None
    if min_version is not None:
        minimum = parse_version(min_version)
        if minimum is None:
            raise UsageError(f"--min-version '{min_version}' is not a version like 0.13.4")
    facts = server.wait_until_up(wait, on_retry=on_wait) if wait > 0 else server.probe()
    if not facts.reachable:
        return Readiness(server=facts, exit_code=EXIT_UNREACHABLE)
    try:
        inventory = server.tags()
    except ServerError as exc:
        broken = Diagnosis(DiagnosisKind.SERVER_ERROR, exc.message, (
            "look at the server's log (journalctl -u ollama, or the output of "
            "`ollama serve`)",))
        return Readiness(server=replace(facts, diagnosis=broken), exit_code=EXIT_NOT_READY)
    statuses = tuple(ModelStatus(name, inventory.find(name)) for name in names)
    warnings: list[str] = []
    ready = all(s.installed is not None for s in statuses)
    if minimum is not None and not at_least(facts.version, minimum):
        warnings.append(f"Ollama {facts.version} is older than the required "
                        f"{format_version(minimum)}: upgrade the server")
        ready = False
    elif not facts.responses_api:
        warnings.append(
            f"Ollama {facts.version} has no Responses API (/v1/responses): current Codex "
            f"needs Ollama >= {format_version(RESPONSES_API_MIN_OLLAMA)}; upgrade the server"
        )
    return Readiness(server=facts, exit_code=EXIT_OK if ready else EXIT_NOT_READY,
                     inventory=inventory, models=statuses, warnings=tuple(warnings))

"""Judge a machine against models: what `hardware` prints and `check`/`apply` call.

`assess()` gathers what the server says (version, installed models), each model's needs
(installed, registry or rough), the verdict, and for what does not fit what would:
the largest context, a smaller quantization or size from the registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from provision.errors import EXIT_NOT_READY, EXIT_OK, ProvisionError
from provision.fit import Fit, judge, largest_context
from provision.machine import Machine
from provision.model_needs import ModelNeeds, model_needs
from provision.names import ModelName

if TYPE_CHECKING:
    from provision.alternatives import Alternative
    from provision.host import ServerAddress
    from provision.inventory import Inventory
    from provision.registry import RegistryClient

log = logging.getLogger(__name__)

REQUIREMENTS = ("cpu", "partial", "gpu")  # the least a model must get: runs at all .. all GPU
_RANK = {"no-fit": -1, "cpu": 0, "partial": 1, "gpu": 2}


@dataclass(frozen=True)
class Server:
    url: str | None
    reachable: bool
    version: str | None
    version_source: str  # "server", "--assume", "unknown"
    loaded_vram: int = 0  # bytes of VRAM held by models the server has loaded


@dataclass(frozen=True)
class ModelReport:
    name: str
    needs: ModelNeeds | None
    fit: Fit | None
    meets: bool  # the verdict satisfies --require
    error: str | None = None  # why it could not be judged (unknown model, offline)
    would_fit: tuple[int, str] | None = None  # (largest num_ctx doing better, its verdict)
    alternatives: tuple[Alternative, ...] = ()

    @property
    def verdict(self) -> str:
        return self.fit.verdict if self.fit else "unknown"


@dataclass(frozen=True)
class HardwareReport:
    machine: Machine
    server: Server
    models: tuple[ModelReport, ...]
    require: str
    num_ctx: int | None
    warnings: tuple[str, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        return EXIT_OK if all(m.meets for m in self.models) else EXIT_NOT_READY


def meets(verdict: str, require: str) -> bool:
    return _RANK.get(verdict, -1) >= _RANK[require]


def server_info(address: ServerAddress | None, *, version: str | None = None
                ) -> tuple[Server, Inventory | None]:
    """Version and installed models of the server, when it answers (it need not)."""
    if address is None:
        return Server(None, False, version, "--assume" if version else "unknown"), None
    from provision.http import Timeouts, client, json_body
    from provision.inventory import count, fetch_inventory
    from provision.probe import probe

    result = probe(address, timeouts=Timeouts(connect=2.0, read=5.0, total=10.0))
    if result.diagnosis is not None:
        return Server(address.url, False, version, "--assume" if version else "unknown"), None
    import httpx

    loaded = 0
    try:
        with client(address.url, loopback=address.is_loopback) as http:
            inventory = fetch_inventory(http)
            response = http.get("/api/ps")
            body = json_body(response) if response.status_code == 200 else None
            models = body.get("models") if isinstance(body, dict) else None
            loaded = sum(count(m.get("size_vram")) for m in models or []
                         if isinstance(m, dict)) if isinstance(models, list) else 0
    except (ProvisionError, httpx.HTTPError, ValueError) as exc:
        log.debug("server inventory failed: %s", exc)  # judged from the registry instead
        inventory = None
    if version:
        return Server(address.url, True, version, "--assume", loaded), inventory
    return Server(address.url, True, result.version, "server", loaded), inventory


def assess(names: list[ModelName], machine: Machine, *, address: ServerAddress | None,
           num_ctx: int | None = None, require: str = "cpu", server_version: str | None = None,
           offline: bool = False, alternatives: bool = True,
           registry: RegistryClient | None = None, header_budget: int | None = None,
           environ: dict[str, str] | None = None, insecure: bool = False) -> HardwareReport:
    """Judge every model on `machine`. `address` None: no server to ask (a planned one);
    `insecure`: registries in model names speak plain HTTP."""
    from provision.model_needs import HEADER_BUDGET
    from provision.registry import RegistryClient

    server, inventory = server_info(address, version=server_version)
    warnings: list[str] = []
    if address is not None and not server.reachable and names:
        warnings.append(f"no Ollama server answers at {address.url}: judging models from the "
                        "registry" + ("" if server.version else
                                      ", with the defaults of the newest Ollama"))
    if server.loaded_vram:
        warnings.append(f"models loaded now hold {server.loaded_vram / (1 << 30):.1f} GiB of "
                        "VRAM; Ollama unloads idle ones to make room")
    own = registry is None
    registry = registry or RegistryClient(environ=environ, insecure=insecure)
    reports = []
    try:
        for name in names:
            reports.append(_assess_one(
                name, machine, address if server.reachable else None, inventory, registry,
                num_ctx=num_ctx, require=require, version=server.version, offline=offline,
                alternatives=alternatives, header_budget=header_budget or HEADER_BUDGET,
                environ=environ))
    finally:
        if own:
            registry.close()
    return HardwareReport(machine=machine, server=server, models=tuple(reports),
                          require=require, num_ctx=num_ctx, warnings=tuple(warnings))


def _assess_one(name: ModelName, machine: Machine, address: ServerAddress | None,
                inventory: Inventory | None, registry: RegistryClient, *, num_ctx: int | None,
                require: str, version: str | None, offline: bool, alternatives: bool,
                header_budget: int, environ: dict[str, str] | None) -> ModelReport:
    try:
        needs = model_needs(name, address, registry, inventory=inventory, offline=offline,
                            header_budget=header_budget, environ=environ)
    except ProvisionError as exc:
        return ModelReport(name=name.short, needs=None, fit=None, meets=False,
                           error=exc.message + (f" ({exc.hint})" if exc.hint else ""))
    fit = judge(needs, machine, num_ctx, version, environ=environ)
    ok = meets(fit.verdict, require)
    would = None
    found: tuple[Alternative, ...] = ()
    if not ok or fit.verdict != "gpu":
        would = largest_context(needs, machine, fit, server_version=version, environ=environ)
    if not fit.fits and alternatives and not offline and needs.source != "rough":
        from provision.alternatives import find_alternatives

        budget = (sum(g.free for g in machine.usable_gpus) + machine.memory.available
                  + machine.memory.swap_free)
        found = tuple(find_alternatives(
            name, needs, registry,
            lambda alt: judge(alt, machine, num_ctx, version, environ=environ), budget))
    return ModelReport(name=name.short, needs=needs, fit=fit, meets=ok, would_fit=would,
                       alternatives=found)

"""Judge a machine against models: what `hardware` prints and `check`/`apply` call.

`assess()` gathers what the server says (version, installed models), each model's needs
(installed, registry or rough), the verdict, and for what does not fit what would:
the largest context, a smaller quantization or size from the registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from provision.errors import EXIT_NOT_READY, EXIT_OK, ProvisionError
from provision.hardware.alternatives import Alternative, find_alternatives
from provision.hardware.fit import Fit, Verdict, fit_model, largest_context
from provision.hardware.machine import Machine
from provision.hardware.needs import HEADER_BUDGET, ModelNeeds, model_needs
from provision.models.registry import ModelFiles, RegistryClient, SkipUnreachable
from provision.names import ModelName
from provision.server import Inventory, OllamaServer, ServerError, ServerFacts

log = logging.getLogger(__name__)

REQUIREMENTS = ("cpu", "partial", "gpu")  # the least a model must get: runs at all .. all GPU
_RANK = {Verdict.NO_FIT: -1, Verdict.CPU: 0, Verdict.PARTIAL: 1, Verdict.GPU: 2}


@dataclass(frozen=True)
class ModelReport:
    name: str
    needs: ModelNeeds | None
    fit: Fit | None
    meets: bool  # the verdict satisfies --require
    error: str | None = None  # why it could not be judged (unknown model, offline)
    would_fit: tuple[int, Verdict] | None = None  # (largest num_ctx doing better, verdict)
    alternatives: tuple[Alternative, ...] = ()

    @property
    def verdict(self) -> Verdict:
        return self.fit.verdict if self.fit else Verdict.UNKNOWN


@dataclass(frozen=True)
class HardwareReport:
    machine: Machine
    server: ServerFacts | None  # None: no server asked (a described machine)
    version: str | None  # the Ollama version the verdicts are for (None: the newest)
    version_source: str  # "server", "--assume", "unknown"
    models: tuple[ModelReport, ...]
    require: str
    num_ctx: int | None
    loaded_vram: int = 0  # bytes of VRAM held by the models the server has loaded now
    warnings: tuple[str, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        return EXIT_OK if all(m.meets for m in self.models) else EXIT_NOT_READY


def meets(verdict: str, require: str) -> bool:
    return _RANK.get(verdict, -1) >= _RANK[require]


def assess(names: list[ModelName], machine: Machine, *, server: OllamaServer | None,
           num_ctx: int | None = None, require: str = "cpu", server_version: str | None = None,
           offline: bool = False, alternatives: bool = True,
           registry: ModelFiles | None = None, header_budget: int | None = None,
           environ: dict[str, str] | None = None, insecure: bool = False) -> HardwareReport:
    """Judge every model on `machine`. `server` None: no server to ask (a planned one);
    `server_version`: the version to judge for instead of the server's (`--assume`);
    `insecure`: registries in model names speak plain HTTP."""
    facts = server.probe() if server is not None else None
    reachable = facts is not None and facts.reachable
    inventory, loaded = None, 0
    if server is not None and reachable:
        try:
            inventory = server.tags()
        except ServerError as exc:
            log.debug("server inventory failed: %s", exc)  # judged from the registry instead
        try:
            loaded = sum(m.size_vram for m in server.ps())
        except ServerError as exc:
            log.debug("loaded models unknown: %s", exc)
    version = server_version or (facts.version if reachable and facts else None)
    source = "--assume" if server_version else ("server" if reachable else "unknown")
    warnings: list[str] = []
    if facts is not None and not reachable and names:
        warnings.append(f"no Ollama server answers at {facts.address.url}: judging models "
                        "from the registry" + ("" if version else
                                               ", with the defaults of the newest Ollama"))
    if loaded:
        warnings.append(f"models loaded now hold {loaded / (1 << 30):.1f} GiB of VRAM; "
                        "Ollama unloads idle ones to make room")
    own = registry is None
    # A registry that does not answer is not waited on again for every model.
    registry = SkipUnreachable(registry or RegistryClient(environ=environ, insecure=insecure))
    reports = []
    try:
        for name in names:
            reports.append(assess_model(
                name, machine, server if reachable else None, inventory, registry,
                num_ctx=num_ctx, require=require, version=version, offline=offline,
                alternatives=alternatives, header_budget=header_budget or HEADER_BUDGET,
                environ=environ))
    finally:
        if own:
            registry.close()
    return HardwareReport(machine=machine, server=facts, version=version,
                          version_source=source, models=tuple(reports), require=require,
                          num_ctx=num_ctx, loaded_vram=loaded, warnings=tuple(warnings))


def assess_model(name: ModelName, machine: Machine, server: OllamaServer | None,
                 inventory: Inventory | None, registry: ModelFiles, *,
                 num_ctx: int | None, require: str, version: str | None,
                 offline: bool = False, alternatives: bool = True,
                 header_budget: int = HEADER_BUDGET,
                 environ: dict[str, str] | None = None) -> ModelReport:
    """One model on `machine`: its needs (installed on `server`, else from the registry,
    else rough), where it would run, and for what does not fit what would."""
    try:
        needs = model_needs(name, server, registry, inventory=inventory, offline=offline,
                            header_budget=header_budget, environ=environ)
    except ProvisionError as exc:
        return ModelReport(name=name.short, needs=None, fit=None, meets=False,
                           error=exc.message + (f" ({exc.hint})" if exc.hint else ""))
    fit = fit_model(needs, machine, num_ctx, version, environ=environ)
    ok = meets(fit.verdict, require)
    would = None
    found: tuple[Alternative, ...] = ()
    if not ok or fit.verdict != Verdict.GPU:
        would = largest_context(needs, machine, fit, server_version=version, environ=environ)
    if not fit.fits and alternatives and not offline and needs.source != "rough":
        budget = (sum(g.free for g in machine.usable_gpus) + machine.memory.available
                  + machine.memory.swap_free)
        found = tuple(find_alternatives(
            name, needs, registry,
            lambda alt: fit_model(alt, machine, num_ctx, version, environ=environ), budget))
    return ModelReport(name=name.short, needs=needs, fit=fit, meets=ok, would_fit=would,
                       alternatives=found)

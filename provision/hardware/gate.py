"""The hardware gate of `apply`: which model each declaration means, and may it run here?

A `choose` list is resolved to one model: the first (best) candidate that runs entirely
on the GPU; failing that, the first that runs with comfortable memory headroom; failing
that, the first that runs at all (with a warning). A named model that cannot run here is
refused before anything is downloaded, unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provision.hardware.fit import Verdict
from provision.hardware.machine import Machine
from provision.hardware.report import ModelReport, assess_model, meets
from provision.models.registry import ModelFiles
from provision.models.spec import ModelSpec
from provision.names import ModelName, parse_name
from provision.server import Inventory, OllamaServer, ServerError
from provision.tables import Schema, is_bool


@dataclass(frozen=True)
class HardwareSpec:
    """[hardware]: the least a model must get here."""

    require_gpu: bool = False
    allow_cpu: bool = True


HARDWARE_KEYS: Schema = {
    "require_gpu": (is_bool, "true or false", "require_gpu"),
    "allow_cpu": (is_bool, "true or false", "allow_cpu"),
}

# A model is comfortable on the CPU when it uses at most this share of available memory
# (llmfit's "comfortable" class): the rest of the machine keeps working.
COMFORTABLE_SHARE = 0.6


@dataclass(frozen=True)
class GateDecision:
    """One declaration, decided: which model it means here, and may it run."""

    spec: ModelSpec
    name: ModelName  # the model to pull (for a custom model: the name to create)
    pull_name: ModelName  # what is downloaded (a custom model's base)
    report: ModelReport | None  # None: not judged (no verdict available)
    allowed: bool  # may be pulled and used
    reason: str | None = None  # why not allowed, or a warning about the choice
    # (name, verdict) of each candidate considered
    candidates: tuple[tuple[str, Verdict], ...] = field(default=())

    @property
    def verdict(self) -> Verdict:
        return self.report.verdict if self.report else Verdict.UNKNOWN


def requirement(spec: HardwareSpec) -> str:
    if spec.require_gpu:
        return "gpu"
    return "cpu" if spec.allow_cpu else "partial"


def _comfortable(report: ModelReport, machine: Machine) -> bool:
    fit = report.fit
    if fit is None or not fit.fits:
        return False
    if fit.verdict == Verdict.GPU:
        return True
    return fit.ram <= COMFORTABLE_SHARE * max(machine.memory.available, 1)


REMOTE_UNJUDGED = ("the server is another machine: not judged against this one (describe it "
                   "with --assume, or run apply on the server)")


def gate(
    specs: tuple[ModelSpec, ...],
    machine: Machine | None,
    *,
    server: OllamaServer | None,
    hardware: HardwareSpec,
    force: bool = False,
    server_version: str | None = None,
    registry: ModelFiles,
) -> list[GateDecision]:
    """Decide every declaration; `machine` None: the server's hardware is unknown (a remote
    server, not described): named models pass unjudged, a `choose` list cannot be decided.
    `server_version`: the Ollama version to judge for (its defaults decide the context)."""
    require = requirement(hardware)
    judge = _Judge(machine, server, require, registry, server_version) if machine else None
    decisions: list[GateDecision] = []
    for spec in specs:
        if judge is None:
            decisions.append(_unjudged(spec))
            continue
        if spec.choose:
            decisions.append(_choose(spec, judge))
            continue
        name = parse_name(spec.name or "")
        report = judge(spec.pull_name, spec.num_ctx, alternatives=True)
        allowed, reason = _allowed(report, require, force)
        decisions.append(GateDecision(spec, name, spec.pull_name, report, allowed, reason))
    return decisions


class _Judge:
    """One model at a time on this machine, from what the server has (listed once)."""

    def __init__(self, machine: Machine, server: OllamaServer | None, require: str,
                 registry: ModelFiles, version: str | None) -> None:
        self.machine = machine
        self.server = server if server is not None and server.probe().reachable else None
        self.inventory: Inventory | None = None
        if self.server is not None:
            try:
                self.inventory = self.server.tags()
            except ServerError:  # judged from the registry instead
                self.inventory = None
        self.require = require
        self.registry = registry
        self.version = version or (self.server.probe().version if self.server else None)

    def __call__(self, name: ModelName, num_ctx: int | None, *,
                 alternatives: bool) -> ModelReport:
        environ = self.server.environ if self.server else None
        return assess_model(name, self.machine, self.server, self.inventory, self.registry,
                            num_ctx=num_ctx, require=self.require, version=self.version,
                            alternatives=alternatives, environ=environ)


def _unjudged(spec: ModelSpec) -> GateDecision:
    if spec.choose:
        name = parse_name(spec.choose[0])
        return GateDecision(spec, name, name, None, False,
                            "a `choose` list needs the server's hardware: " + REMOTE_UNJUDGED)
    return GateDecision(spec, parse_name(spec.name or ""), spec.pull_name, None, True,
                        REMOTE_UNJUDGED)


def _allowed(report: ModelReport, require: str, force: bool) -> tuple[bool, str | None]:
    if report.error:
        return False, report.error
    if report.fit is None:
        return False, "could not be judged"
    if not report.fit.fits:
        why = "; ".join(r.message for r in report.fit.reasons) or "does not fit"
        if report.would_fit:
            why += f" (fits with num_ctx {report.would_fit[0]}: {report.would_fit[1]})"
        if report.alternatives:
            why += "; would fit: " + ", ".join(a.name for a in report.alternatives[:3])
        return (True, f"forced although it does not fit: {why}") if force else (False, why)
    if not meets(report.verdict, require):
        why = f"runs on {report.fit.where}, but [hardware] requires {require}"
        return (True, f"forced: {why}") if force else (False, why)
    return True, None


def _choose(spec: ModelSpec, judge: _Judge) -> GateDecision:
    require = judge.require
    reports: list[tuple[ModelName, ModelReport]] = []
    for candidate in spec.choose:
        name = parse_name(candidate)
        report = judge(name, spec.num_ctx, alternatives=False)
        reports.append((name, report))
        if report.fit is not None and report.verdict == Verdict.GPU \
                and meets(Verdict.GPU, require):
            break  # the best candidate that runs entirely on the GPU: no need to look further
    considered = tuple((n.short, r.verdict) for n, r in reports)
    usable = [(n, r) for n, r in reports if r.fit is not None and r.fit.fits
              and meets(r.verdict, require)]
    pick = next(((n, r) for n, r in usable if r.verdict == Verdict.GPU), None)
    reason = None
    if pick is None:
        pick = next(((n, r) for n, r in usable if _comfortable(r, judge.machine)), None)
    if pick is None and usable:
        pick = usable[0]
        reason = f"no candidate runs comfortably here; {pick[0].short} is the best that runs"
    if pick is None:
        best = reports[-1][1] if reports else None
        return GateDecision(spec, parse_name(spec.choose[-1]), parse_name(spec.choose[-1]),
                            best, False, "none of the candidates can run here: "
                            + ", ".join(f"{n} ({v})" for n, v in considered), considered)
    name, report = pick
    return GateDecision(spec, name, name, report, True, reason, considered)

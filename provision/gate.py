"""The hardware gate of `apply`: which model each declaration means, and may it run here?

A `choose` list is resolved to one model: the first (best) candidate that runs entirely
on the GPU; failing that, the first that runs with comfortable memory headroom; failing
that, the first that runs at all (with a warning). A named model that cannot run here is
refused before anything is downloaded, unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provision.hardware_report import ModelReport, assess, meets
from provision.host import ServerAddress
from provision.machine import Machine
from provision.manifest import HardwareSpec, ModelSpec
from provision.names import ModelName, parse_name
from provision.registry import RegistryClient

# A model is comfortable on the CPU when it uses at most this share of available memory
# (llmfit's "comfortable" class): the rest of the machine keeps working.
COMFORTABLE_SHARE = 0.6


@dataclass(frozen=True)
class Judged:
    spec: ModelSpec
    name: ModelName  # the model to pull (for a custom model: the name to create)
    pull_name: ModelName  # what is downloaded (a custom model's base)
    report: ModelReport | None  # None: not judged (no verdict available)
    allowed: bool  # may be pulled and used
    reason: str | None = None  # why not allowed, or a warning about the choice
    candidates: tuple[tuple[str, str], ...] = field(default=())  # (name, verdict) considered

    @property
    def verdict(self) -> str:
        return self.report.verdict if self.report else "unknown"


def requirement(spec: HardwareSpec) -> str:
    if spec.require_gpu:
        return "gpu"
    return "cpu" if spec.allow_cpu else "partial"


def _comfortable(report: ModelReport, machine: Machine) -> bool:
    fit = report.fit
    if fit is None or not fit.fits:
        return False
    if fit.verdict == "gpu":
        return True
    return fit.ram <= COMFORTABLE_SHARE * max(machine.memory.available, 1)


def _assess_one(name: ModelName, machine: Machine, address: ServerAddress | None,
                num_ctx: int | None, require: str, registry: RegistryClient,
                server_version: str | None, alternatives: bool) -> ModelReport:
    report = assess([name], machine, address=address, num_ctx=num_ctx, require=require,
                    server_version=server_version, alternatives=alternatives,
                    registry=registry)
    return report.models[0]


REMOTE_UNJUDGED = ("the server is another machine: not judged against this one (describe it "
                   "with --assume, or run apply on the server)")


def judge_specs(
    specs: tuple[ModelSpec, ...],
    machine: Machine | None,
    *,
    address: ServerAddress | None,
    hardware: HardwareSpec,
    force: bool = False,
    server_version: str | None = None,
    registry: RegistryClient,
) -> list[Judged]:
    """Judge every declaration; `machine` None: the server's hardware is unknown (a remote
    server, not described): named models pass unjudged, a `choose` list cannot be decided."""
    require = requirement(hardware)
    judged: list[Judged] = []
    for spec in specs:
        if machine is None:
            judged.append(_unjudged(spec))
            continue
        if spec.choose:
            judged.append(_choose(spec, machine, address, require, registry, server_version))
            continue
        name = parse_name(spec.name or "")
        pull_name = parse_name(spec.base) if spec.base else name
        report = _assess_one(pull_name, machine, address, spec.num_ctx, require, registry,
                             server_version, alternatives=True)
        allowed, reason = _allowed(report, require, force)
        judged.append(Judged(spec, name, pull_name, report, allowed, reason))
    return judged


def _unjudged(spec: ModelSpec) -> Judged:
    if spec.choose:
        name = parse_name(spec.choose[0])
        return Judged(spec, name, name, None, False,
                      "a `choose` list needs the server's hardware: " + REMOTE_UNJUDGED)
    name = parse_name(spec.name or "")
    pull_name = parse_name(spec.base) if spec.base else name
    return Judged(spec, name, pull_name, None, True, REMOTE_UNJUDGED)


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


def _choose(spec: ModelSpec, machine: Machine, address: ServerAddress | None, require: str,
            registry: RegistryClient, server_version: str | None) -> Judged:
    reports: list[tuple[ModelName, ModelReport]] = []
    for candidate in spec.choose:
        name = parse_name(candidate)
        report = _assess_one(name, machine, address, spec.num_ctx, require, registry,
                             server_version, alternatives=False)
        reports.append((name, report))
        if report.fit is not None and report.verdict == "gpu" and meets("gpu", require):
            break  # the best candidate that runs entirely on the GPU: no need to look further
    considered = tuple((n.short, r.verdict) for n, r in reports)
    usable = [(n, r) for n, r in reports if r.fit is not None and r.fit.fits
              and meets(r.verdict, require)]
    pick = next(((n, r) for n, r in usable if r.verdict == "gpu"), None)
    reason = None
    if pick is None:
        pick = next(((n, r) for n, r in usable if _comfortable(r, machine)), None)
    if pick is None and usable:
        pick = usable[0]
        reason = f"no candidate runs comfortably here; {pick[0].short} is the best that runs"
    if pick is None:
        best = reports[-1][1] if reports else None
        return Judged(spec, parse_name(spec.choose[-1]), parse_name(spec.choose[-1]), best,
                      False, "none of the candidates can run here: "
                      + ", ".join(f"{n} ({v})" for n, v in considered), considered)
    name, report = pick
    return Judged(spec, name, name, report, True, reason, considered)

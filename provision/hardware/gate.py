"""The hardware gate of `apply`: which model each declaration means, and may it run here?

A `choose` list is resolved to one model: the best candidate (the list is best first)
that runs here as `[hardware] require` asks and whose estimated speed (the low end)
reaches its `min_tokens_per_second` (5 by default: below that an assistant answers
slower than one reads; 0: no minimum), one that runs entirely on the GPU or with
comfortable memory headroom preferred; when none is fast enough, the fastest that runs
(with a note). A named model that cannot run here is refused before anything is
downloaded, unless told to ignore the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provision.hardware.fit import Verdict
from provision.hardware.machine import Machine
from provision.hardware.report import ModelReport, assess_model, meets
from provision.models.registry import ModelFiles, SkipUnreachable
from provision.models.spec import ModelSpec
from provision.names import ModelName, parse_name
from provision.server import Inventory, OllamaServer, ServerError
from provision.tables import Schema, is_bool

REQUIREMENTS = ("cpu", "partial", "gpu")  # least placement a model must get, weakest first
DEFAULT_MIN_TOKENS_PER_SECOND = 5.0  # a `choose` list's minimum speed, unless it says one


@dataclass(frozen=True)
class HardwareSpec:
    """[hardware]: the least a model must get here. `require` says it; `require_gpu` and
    `allow_cpu` are its older spellings, still read (the strictest of them counts)."""

    require: str = "cpu"
    require_gpu: bool = False
    allow_cpu: bool = True


HARDWARE_KEYS: Schema = {
    "require": (lambda v: v in REQUIREMENTS, "one of " + ", ".join(f"'{r}'" for r in
                                                                   REQUIREMENTS), "require"),
    "require_gpu": (is_bool, "true or false (older spelling of require = 'gpu')",
                    "require_gpu"),
    "allow_cpu": (is_bool, "true or false (older spelling: false is require = 'partial')",
                  "allow_cpu"),
}


# A model is comfortable on the CPU when it uses at most this share of available memory
# (llmfit's "comfortable" class): the rest of the machine keeps working.
COMFORTABLE_SHARE = 0.6


@dataclass(frozen=True)
class Candidate:
    """One model of a `choose` list, as judged here."""

    name: str
    verdict: Verdict
    tokens_per_second: tuple[float, float] | None  # estimated (low, high); None: unknown
    slow: bool = False  # runs, but its low end is below the list's minimum speed


@dataclass(frozen=True)
class GateDecision:
    """One declaration, decided: which model it means here, and may it run."""

    spec: ModelSpec
    name: ModelName  # the model to pull (for a custom model: the name to create)
    pull_name: ModelName  # what is downloaded (a custom model's base)
    report: ModelReport | None  # None: not judged (no verdict available)
    allowed: bool  # may be pulled and used
    reason: str | None = None  # why not allowed, or a warning about the choice
    # each candidate considered, best first
    candidates: tuple[Candidate, ...] = field(default=())

    @property
    def verdict(self) -> Verdict:
        return self.report.verdict if self.report else Verdict.UNKNOWN


def requirement(spec: HardwareSpec, override: str | None = None) -> str:
    """The least placement asked for: `override` (`apply --require`) when given, else
    the strictest the manifest says."""
    if override is not None:
        return override
    asked = [spec.require, "gpu" if spec.require_gpu else "cpu",
             "cpu" if spec.allow_cpu else "partial"]
    return max(asked, key=REQUIREMENTS.index)


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
    ignore_hardware: bool = False,
    require: str | None = None,
    server_version: str | None = None,
    registry: ModelFiles,
) -> list[GateDecision]:
    """Decide every declaration; `machine` None: the server's hardware is unknown (a remote
    server, not described): named models pass unjudged, a `choose` list cannot be decided.
    `require`: overrides the manifest's. `server_version`: the Ollama version to judge
    for (its defaults decide the context)."""
    require = requirement(hardware, require)
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
        allowed, reason = _allowed(report, require, ignore_hardware)
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
        # A registry that does not answer is not waited on again for every candidate.
        self.registry = SkipUnreachable(registry)
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


def _allowed(report: ModelReport, require: str, ignore: bool) -> tuple[bool, str | None]:
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
        return (True, f"used although it does not fit (--ignore-hardware): {why}") if ignore \
            else (False, why)
    if not meets(report.verdict, require):
        why = f"runs on {report.fit.where}, but the hardware requirement is {require}"
        return (True, f"used anyway (--ignore-hardware): {why}") if ignore else (False, why)
    return True, None


def _speed(report: ModelReport) -> tuple[float, float] | None:
    fit = report.fit
    return fit.tokens_per_second if fit is not None and fit.fits else None


def _choose(spec: ModelSpec, judge: _Judge) -> GateDecision:
    require = judge.require
    minimum = DEFAULT_MIN_TOKENS_PER_SECOND if spec.min_tokens_per_second is None \
        else spec.min_tokens_per_second

    def fast(report: ModelReport) -> bool:  # an unknown speed is not held against it
        speed = _speed(report)
        return minimum <= 0 or speed is None or speed[0] >= minimum

    reports: list[tuple[ModelName, ModelReport]] = []
    for candidate in spec.choose:
        name = parse_name(candidate)
        report = judge(name, spec.num_ctx, alternatives=False)
        reports.append((name, report))
        if report.fit is not None and report.verdict == Verdict.GPU \
                and meets(Verdict.GPU, require) and fast(report):
            break  # the best candidate that runs entirely on the GPU: no need to look further
    usable = [(n, r) for n, r in reports if r.fit is not None and r.fit.fits
              and meets(r.verdict, require)]
    considered = tuple(Candidate(n.short, r.verdict, _speed(r),
                                 slow=(n, r) in usable and not fast(r)) for n, r in reports)
    quick = [(n, r) for n, r in usable if fast(r)]
    pick = next(((n, r) for n, r in quick if r.verdict == Verdict.GPU), None) \
        or next(((n, r) for n, r in quick if _comfortable(r, judge.machine)), None)
    reason = None
    if pick is None and quick:
        pick = quick[0]
        reason = f"no candidate runs comfortably here; {pick[0].short} is the best that runs"
    if pick is None and usable:
        pick = max(usable, key=lambda item: (_speed(item[1]) or (0.0, 0.0))[0])
        reason = (f"none of the candidates reaches {minimum:g} tokens/s here; "
                  f"{pick[0].short} is the fastest that runs")
    if pick is None:
        best = reports[-1][1] if reports else None
        return GateDecision(spec, parse_name(spec.choose[-1]), parse_name(spec.choose[-1]),
                            best, False, "none of the candidates can run here: "
                            + ", ".join(f"{c.name} ({c.verdict})" for c in considered),
                            considered)
    name, report = pick
    return GateDecision(spec, name, name, report, True, reason, considered)

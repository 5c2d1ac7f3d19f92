"""What an `apply` run ends with: a `StepResult` per step, an `ApplyModelResult` per
declared model, gathered in one `ApplyResult` whose exit code follows the documented
ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provision.hardware import Verdict
from provision.models import CreateStatus, Verification
from provision.models.pull import PullStatus
from provision.result import Status
from provision.server import ServerAddress


class StepStatus(Status):
    """How a step (or a model, over all the steps) ended (stable: in `--json`)."""

    OK = "ok"  # as declared, nothing done
    CHANGED = "changed"  # brought to what is declared (or would be, in a dry run)
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class StepResult:
    name: str
    status: StepStatus
    summary: str
    duration: float
    data: dict[str, Any] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()  # what to do about the errors, most likely first

    @property
    def changed(self) -> bool:
        return self.status == StepStatus.CHANGED


@dataclass(frozen=True)
class ApplyModelResult:
    """One declared model, through every step."""

    name: str
    required: bool
    declared: str  # as written in the manifest (a name, or the choose list)
    custom: bool = False
    verdict: Verdict | None = None  # predicted by the hardware step
    where: str | None = None  # predicted placement in words
    pull: PullStatus | None = None
    create: CreateStatus | None = None  # custom models
    verification: Verification | None = None
    status: StepStatus = StepStatus.OK
    error: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.status == StepStatus.CHANGED


@dataclass(frozen=True)
class ApplyResult:
    source: str
    address: ServerAddress
    steps: tuple[StepResult, ...]
    models: tuple[ApplyModelResult, ...]
    exit_code: int
    dry_run: bool
    models_dir: str | None = None
    would_pull: bool = False  # a dry run: the plan found models to pull or create
    bundle: str | None = None  # the models came from this bundle (None: the registry)

    @property
    def changed(self) -> bool:
        """Something changed (a dry run: would change)."""
        return self.would_pull or any(s.changed for s in self.steps)

    @property
    def changed_steps(self) -> list[str]:
        """The steps that changed something (a dry run: would change)."""
        return (["pull"] if self.would_pull else []) + [s.name for s in self.steps
                                                         if s.changed]

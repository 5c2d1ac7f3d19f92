"""What a pull reports while it runs, and how each model's pull ended.

Events, in the order a reporter sees them for one model: ModelStarted, then any of
StatusChanged / BlobProgress / Retrying / Resumed, then ModelFinished with the model's
`PullOutcome`. `model` is the short name (a str, cheap to hash: BlobProgress arrives
thousands of times a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union

from provision.models.pull.errors import PullError
from provision.names import ModelName
from provision.result import Status


class PullStatus(Status):
    """How a model's pull ended (stable: part of the `--json` schemas)."""

    PULLED = "pulled"  # was missing, now present
    UPDATED = "updated"  # pulled again: the tag pointed elsewhere, now updated
    UNCHANGED = "unchanged"  # pulled again, nothing changed
    PRESENT = "present"  # already there, nothing done
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class PullOutcome:
    name: ModelName
    status: PullStatus
    size: int = 0  # bytes of all the model's blobs (as the server reported them)
    downloaded: int = 0  # bytes fetched by this run (blobs already there not counted)
    duration: float = 0.0  # seconds, retries and backoff included
    retries: int = 0
    retry_reasons: tuple[str, ...] = ()  # error kind of each retried attempt
    resumed: bool = False  # continued a partial download (after a retry or an earlier run)
    error: PullError | None = None

    @property
    def ok(self) -> bool:
        return self.status not in (PullStatus.FAILED, PullStatus.INTERRUPTED)

    @property
    def changed(self) -> bool:
        """The server has other weights than before (it had none, or older ones)."""
        return self.status in (PullStatus.PULLED, PullStatus.UPDATED)


@dataclass(frozen=True)
class ModelStarted:
    model: str
    expected_size: int | None = None  # from the registry's manifest, when it was read


@dataclass(frozen=True)
class StatusChanged:
    model: str
    status: str  # "pulling manifest", "verifying sha256 digest", "writing manifest", ...


@dataclass(frozen=True)
class BlobProgress:
    model: str
    digest: str
    total: int
    completed: int  # may go backwards: Ollama subtracts a failed part when it retries it


@dataclass(frozen=True)
class Retrying:
    model: str
    retry: int  # 1-based
    retries: int  # the bound
    delay: float
    error: PullError


@dataclass(frozen=True)
class Resumed:
    model: str
    digest: str
    completed: int  # where the server continued this blob (0: it had to restart)
    total: int


@dataclass(frozen=True)
class ModelFinished:
    outcome: PullOutcome


PullEvent = Union[ModelStarted, StatusChanged, BlobProgress, Retrying, Resumed, ModelFinished]


class Reporter(Protocol):
    def handle(self, event: PullEvent) -> None: ...


class NullReporter:
    def handle(self, event: PullEvent) -> None:
        pass

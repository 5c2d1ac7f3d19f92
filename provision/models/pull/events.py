"""What a transfer of models reports while it runs, and how each model's pull ended.

One set of events for every way bytes of a model move: a server pulling from the
registry, this machine uploading to a server (a bundle, the seed cache), downloading
into a bundle or the cache, and reading a bundle back. Events, in the order a reporter
sees them for one model: ModelStarted, then any of StatusChanged / BlobProgress /
Retrying / Resumed / Notice, then ModelFinished. `model` is the short name (a str,
cheap to hash: BlobProgress arrives thousands of times a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union

from provision.models.pull.errors import PullError
from provision.names import ModelName
from provision.result import Status

PULLING = "pulling"  # the server downloads from the registry
DOWNLOADING = "downloading"  # this machine downloads (into a bundle, the seed cache)
UPLOADING = "uploading"  # this machine uploads to a server (from a bundle, the cache)
CHECKING = "checking"  # reading a bundle back (verify, or what an interrupted run wrote)


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
    """How getting one model onto a server ended, whether the server pulled it or this
    machine uploaded it (`via`: from where)."""

    name: ModelName
    status: PullStatus
    size: int = 0  # bytes of all the model's blobs (as the server reported them)
    downloaded: int = 0  # bytes the server received in this run (blobs it had not counted)
    duration: float = 0.0  # seconds, retries and backoff included
    retries: int = 0
    retry_reasons: tuple[str, ...] = ()  # error kind of each retried attempt
    resumed: bool = False  # continued a partial download (after a retry or an earlier run)
    error: PullError | None = None
    # Uploaded by this machine (a bundle, the seed cache) instead of pulled:
    via: str | None = None  # what it came from ("models.tar", "the seed cache")
    sent_bytes: int = 0  # uploaded, retried bytes included
    blobs_sent: int = 0
    blobs_skipped: int = 0  # the server had them: not sent
    stale: bool = False  # present with other weights than the source's, left alone

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
    expected_size: int | None = None  # bytes the model's total counts to, when known
    action: str = PULLING  # PULLING, DOWNLOADING, UPLOADING or CHECKING


@dataclass(frozen=True)
class StatusChanged:
    model: str  # "" for the whole operation
    status: str  # "pulling manifest", "creating the model", "writing models.tar", ...
    slow: bool = False  # may take long: logs get a line for it too


@dataclass(frozen=True)
class BlobProgress:
    model: str
    digest: str
    total: int
    completed: int  # may go backwards: Ollama subtracts a failed part when it retries it
    start: int = 0  # where this run took the blob up (a resumed blob starts past 0)


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
    completed: int  # where the transfer continued this blob (0: it had to restart)
    total: int


@dataclass(frozen=True)
class Notice:
    """A fact worth a line of its own (the operation's when `model` is "")."""

    model: str
    text: str


@dataclass(frozen=True)
class ModelFinished:
    """How one model's transfer ended. A pull (or an upload, told in pull's words)
    carries its `outcome`, and reporters say it as pulls are said; otherwise `text`."""

    model: str
    ok: bool
    text: str = ""  # one line; "" with an outcome
    interrupted: bool = False
    moved: int = 0  # bytes this run moved for it (what its speed is reckoned from)
    duration: float = 0.0
    shown_whole: bool = True  # a finished bar is worth showing (not for `present`)
    outcome: PullOutcome | None = None

    @classmethod
    def of(cls, outcome: PullOutcome) -> ModelFinished:
        return cls(model=outcome.name.short, ok=outcome.ok,
                   interrupted=outcome.status == PullStatus.INTERRUPTED,
                   moved=outcome.sent_bytes if outcome.via else outcome.downloaded,
                   duration=outcome.duration,
                   shown_whole=outcome.ok and outcome.status != PullStatus.PRESENT,
                   outcome=outcome)


PullEvent = Union[ModelStarted, StatusChanged, BlobProgress, Retrying, Resumed, Notice,
                  ModelFinished]


class Reporter(Protocol):
    def handle(self, event: PullEvent) -> None: ...


class NullReporter:
    def handle(self, event: PullEvent) -> None:
        pass

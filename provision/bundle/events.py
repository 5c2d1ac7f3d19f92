"""What bundle operations report while they run, for a reporter (progress.py) to show.

For one model a reporter sees ModelStarted, then any of StepChanged / BlobProgress /
Notice, then ModelFinished. `model` is the short name. BlobProgress may arrive thousands
of times a second: reporters only count on it and draw on their own schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union

DOWNLOAD = "downloading"  # into a bundle, from a registry or a server's models folder
UPLOAD = "uploading"  # from a bundle to a server
CHECK = "checking"  # reading a bundle back (verify, or what an interrupted run wrote)


@dataclass(frozen=True)
class ModelStarted:
    model: str
    action: str  # DOWNLOAD, UPLOAD or CHECK
    total: int  # bytes this run will move for the model (0: nothing to move)


@dataclass(frozen=True)
class StepChanged:
    model: str  # "" for the whole operation
    step: str  # "creating the model", "validating GGUF model 45%", ...
    slow: bool = False  # may take long: logs get a line for it too


@dataclass(frozen=True)
class BlobProgress:
    model: str
    digest: str
    total: int  # the blob's size
    done: int  # where the blob stands: bytes in place (back to 0 only when a download
    # did not match its digest and starts over; reporters show the furthest point)
    start: int = 0  # where this run took it up (a resumed blob starts past 0)


@dataclass(frozen=True)
class Notice:
    """A fact worth a line of its own: a retry, a resume."""

    model: str
    text: str


@dataclass(frozen=True)
class ModelFinished:
    model: str
    ok: bool
    text: str  # how it ended, one line


BundleEvent = Union[ModelStarted, StepChanged, BlobProgress, Notice, ModelFinished]


class Reporter(Protocol):
    def handle(self, event: BundleEvent) -> None: ...


class NullReporter:
    def handle(self, event: BundleEvent) -> None:
        pass

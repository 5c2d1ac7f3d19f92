"""Pulling models through the server: `pull_models()`, robust to stalls and drops.

`run` (per model: attempts, backoff, outcomes; several models at once) → `stream` (one
attempt: the NDJSON stream of `POST /api/pull` read to its end) with `watchdog` (drops a
stream without progress) → `events` (what a reporter sees, and each `PullOutcome`) and
`errors` (what went wrong, classified, with its hint).
"""

from __future__ import annotations

from provision.models.pull.errors import ErrorKind, PullError, cancelled, classify_server_error
from provision.models.pull.events import (
    CHECKING,
    DOWNLOADING,
    PULLING,
    UPLOADING,
    BlobProgress,
    ModelFinished,
    ModelStarted,
    Notice,
    NullReporter,
    PullEvent,
    PullOutcome,
    PullStatus,
    Reporter,
    Resumed,
    Retrying,
    StatusChanged,
)
from provision.models.pull.run import PullInterrupted, PullOptions, pull_models

__all__ = [
    "CHECKING", "DOWNLOADING", "PULLING", "UPLOADING",
    "BlobProgress", "ErrorKind", "ModelFinished", "ModelStarted", "Notice", "NullReporter",
    "PullError",
    "PullEvent", "PullInterrupted", "PullOptions", "PullOutcome", "PullStatus", "Reporter",
    "Resumed", "Retrying", "StatusChanged", "cancelled", "classify_server_error",
    "pull_models",
]

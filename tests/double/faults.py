"""Injected failures: what a test asks the double to do wrong, and where."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from tests.double.names import ModelName, parse_name

DEFAULT_GARBAGE = "<html><body><h1>502 Bad Gateway</h1></body></html>"
DEFAULT_PULL_ERROR = "max retries exceeded: unexpected EOF"

FAULT_KINDS = ("drop", "stall", "error_line", "http_500", "garbage", "backwards",
               "slow_headers", "registry_unreachable",
               "stuck")  # added for the pull tests (issue 3)
POSITIONAL_KINDS = ("drop", "stall", "error_line", "backwards", "garbage", "stuck")


@dataclass(eq=False)
class Fault:
    """One injected failure; see the module docstring for the kinds."""

    kind: str
    endpoint: str | None = "/api/pull"
    times: int | None = 1
    after_bytes: int | None = None
    model: str | None = None
    blob: str | None = None
    seconds: float | None = None
    message: str | None = None
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {FAULT_KINDS}")
        self._model_key = parse_name(self.model).key if self.model else None

    @property
    def spent(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matches(self, path: str, name: ModelName | None) -> bool:
        if self.endpoint is not None and not fnmatch.fnmatchcase(path, self.endpoint):
            return False
        return self._model_key is None or (name is not None and name.key == self._model_key)

    def matches_blob(self, digest: str) -> bool:
        if not self.blob:
            return True
        want = self.blob.lower().removeprefix("sha256:").removeprefix("sha256-")
        return digest.split(":", 1)[-1].startswith(want)

    def is_digest_mismatch(self) -> bool:
        return self.kind == "error_line" and (self.message or "").startswith("digest mismatch")


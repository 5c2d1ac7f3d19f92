"""GitHub Actions integration: log groups, error annotations, the job summary, outputs.

Active only when `GITHUB_ACTIONS=true`. Workflow commands are written to stderr with
the rest of the log, so `--json` on stdout stays a single document.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO


def _escape_data(text: str) -> str:
    # GitHub's rules for workflow command data: %, CR and LF must be escaped.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


class Actions:
    def __init__(self, environ: dict[str, str] | None = None, stream: IO[str] | None = None):
        self.env = os.environ if environ is None else environ
        self.enabled = self.env.get("GITHUB_ACTIONS") == "true"
        self.stream = stream or sys.stderr

    def _command(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        self._command(f"::group::{_escape_data(title)}")
        try:
            yield
        finally:
            self._command("::endgroup::")

    def error(self, message: str, title: str | None = None) -> None:
        prefix = f"::error title={_escape_data(title)}::" if title else "::error::"
        self._command(prefix + _escape_data(message))

    def warning(self, message: str) -> None:
        self._command("::warning::" + _escape_data(message))

    def append_summary(self, markdown: str) -> None:
        path = self.env.get("GITHUB_STEP_SUMMARY")
        if self.enabled and path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(markdown.rstrip("\n") + "\n")

    def set_output(self, name: str, value: str) -> None:
        path = self.env.get("GITHUB_OUTPUT")
        if self.enabled and path and "\n" not in value:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{name}={value}\n")

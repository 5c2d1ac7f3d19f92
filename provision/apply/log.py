"""How `apply` announces its steps on stderr: a line per step start and end (or a
GitHub Actions group, with failures as `::error::` annotations); silent when quiet."""

from __future__ import annotations

from typing import IO

from provision.apply.result import StepResult
from provision.github import Actions


class StepLog:
    def __init__(self, stream: IO[str], *, quiet: bool, actions: Actions) -> None:
        self.stream = stream
        self.quiet = quiet
        self.actions = actions

    def begin(self, name: str, title: str) -> None:
        if self.actions.enabled:
            print(f"::group::{name}: {title}", file=self.stream, flush=True)
        elif not self.quiet:
            print(f"==> {name}: {title}", file=self.stream, flush=True)

    def info(self, text: str) -> None:
        if not self.quiet:
            print(f"    {text}", file=self.stream, flush=True)

    def end(self, result: StepResult) -> None:
        if not self.quiet:
            print(f"    {result.status}: {result.summary} ({result.duration:.1f} s)",
                  file=self.stream, flush=True)
            for error in result.errors:
                if error not in result.summary:  # the reason, when the summary lacks it
                    print(f"    error: {error}", file=self.stream, flush=True)
        for error in result.errors:
            self.actions.error(error, title=f"ollama-provision {result.name}")
        if self.actions.enabled:
            print("::endgroup::", file=self.stream, flush=True)

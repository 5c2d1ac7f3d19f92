"""How `apply` announces its steps on stderr: a line when a step starts and one when it
ends (the reason first, then the fixes), or a GitHub Actions group with failures as
`::error::` annotations; with `--quiet` only a failed step's reason and fixes.

On a terminal the lines are wrapped at its width under their own indent, and a slow
wait within a step (`activity`) shows a live line meanwhile; in a log it gets a start
line and, while it lasts, a line about every 10 s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Callable

from provision.apply.result import StepResult, StepStatus
from provision.github import Actions
from provision.live import activity
from provision.output import terminal_columns, wrap_line

if TYPE_CHECKING:
    from rich.console import Console

class StepLog:
    def __init__(self, stream: IO[str], *, quiet: bool, actions: Actions,
                 terminal: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.actions = actions
        self.terminal = terminal
        self._console: Console | None = None

    @property
    def width(self) -> int | None:
        """The terminal's columns (None: a log, whose lines are never wrapped)."""
        return terminal_columns(self.stream) if self.terminal else None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console  # tens of ms: only when a terminal is drawn

            self._console = Console(file=self.stream, force_terminal=True, highlight=False)
        return self._console

    def _print(self, text: str) -> None:
        print(wrap_line(text, self.width), file=self.stream, flush=True)

    def begin(self, name: str, title: str) -> None:
        if self.actions.enabled:
            self._print(f"::group::{name}: {title}")
        elif not self.quiet:
            self._print(f"==> {name}: {title}")

    def info(self, text: str) -> None:
        if not self.quiet:
            self._print(f"    {text}")

    def end(self, result: StepResult) -> None:
        failed = result.status == StepStatus.FAILED
        if not self.quiet:
            self._print(f"    {result.status}: {result.summary} ({result.duration:.1f} s)")
            for error in result.errors:
                if error not in result.summary:  # the reason, when the summary lacks it
                    self._print(f"    error: {error}")
            for fix in result.fixes:
                self._print(f"    fix: {fix}")
        elif failed:  # quiet: errors only, still the reason before the fix
            for error in result.errors or (result.summary,):
                self._print(f"error: {result.name}: {error}")
            for fix in result.fixes:
                self._print(f"  fix: {fix}")
        for error in result.errors:
            self.actions.error(error, title=f"ollama-provision {result.name}")
        if self.actions.enabled:
            self._print("::endgroup::")

    @contextlib.contextmanager
    def activity(self, text: str, *, said: str | None = None
                 ) -> Iterator[Callable[[str], None]]:
        """Something slow within a step that shows no progress of its own: on a terminal a
        live line (spinner, `text`, seconds) until it ends; in a log `text` at once, then
        what `update` says about every 10 s. `said`: a longer line that stays (printed
        first on a terminal; in a log it is the start line). The caller logs how it
        ended."""
        if self.quiet:
            yield _ignore
            return
        if said is not None and self.terminal:
            self.info(said)
        with activity(text if said is None or self.terminal else said, live=self.terminal,
                      console=lambda: self.console, write=self.info, indent="    ") as update:
            yield update


def _ignore(text: str) -> None:
    pass

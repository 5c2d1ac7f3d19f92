"""The two ways a long operation shows itself: a live view redrawn on a terminal, and
whole lines written to a log from any thread.

Both are bases: `pull`'s and the bundle commands' reporters and `fleet`'s views inherit
them.
"""

from __future__ import annotations

import threading
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live


class LiveView:
    """`with view:` shows `view.__rich__()` on `view.console`, redrawn at most
    `refresh_per_second` times; transient: what matters is printed as lines meanwhile.
    Re-entrant: an inner `with` (a library call that shows the same view) is a no-op."""

    console: Console
    refresh_per_second: float = 10.0
    _live: Live | None = None
    _depth = 0

    def __enter__(self) -> LiveView:
        from rich.live import Live  # tens of ms: only when a terminal is drawn

        self._depth += 1
        if self._live is None:
            self._live = Live(self, console=self.console, auto_refresh=True,
                              refresh_per_second=self.refresh_per_second, transient=True,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth <= 0 and self._live is not None:
            self._live.stop()
            self._live = None


class LineLog:
    """Whole lines to a stream, one writer at a time, flushed (a log read live)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def __enter__(self) -> LineLog:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

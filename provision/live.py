"""The two ways a long operation shows itself: a live area redrawn on a terminal, and
whole lines written to a log from any thread.

On a terminal exactly one thread writes while an area is up: the view's own (its
ticker). Any thread may hand it a line to print for good above the area (`say`); the
ticker prints the lines waiting and redraws the area, in turn, at most
`refresh_per_second` times a second and at once when a line waits. With two writers
(rich's refresh thread redrawing while a worker printed a line) the sequence that clears
the area went out twice and the second one erased the log above it (issue 13).

`LiveView` is the base of `pull`'s and the bundle commands' bars and `fleet`'s table;
`Activity` is one live line (a spinner, what is going on, for how long) for a slow wait.
`LineLog` is the base of the views for logs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.text import Text

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
LOG_EVERY = 10.0  # seconds between a slow wait's lines in a log


class LiveView:
    """`with view:` shows `view.__rich__()` on `view.console`, redrawn by the view's own
    thread; transient: what matters is printed as lines meanwhile (`say`). Re-entrant: an
    inner `with` (a library call that shows the same view) is a no-op."""

    console: Console
    refresh_per_second: float = 10.0
    _live: Live | None = None
    _depth = 0
    _said: list[Text]
    _wake: threading.Event
    _stop: threading.Event
    _ticker: threading.Thread | None = None
    _restore_echo: Callable[[], None] | None = None
    _lock = threading.Lock()  # guards the lines waiting (all views: rarely contended)

    def __enter__(self) -> LiveView:
        from rich.live import Live  # tens of ms: only when a terminal is drawn

        self._depth += 1
        if self._live is None:
            self._said, self._wake, self._stop = [], threading.Event(), threading.Event()
            self._restore_echo = _quiet_control_echo()
            live = Live(self, console=self.console, auto_refresh=False, transient=True,
                        redirect_stdout=False, redirect_stderr=False)
            live.start(refresh=True)
            with LiveView._lock:
                self._live = live
            self._ticker = threading.Thread(target=self._tick, name="live-view", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth > 0 or self._live is None:
            return
        self._stop.set()
        self._wake.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        try:
            self._draw()  # lines said at the very end: this thread is the only writer now
        finally:
            with LiveView._lock:
                live, self._live = self._live, None
            live.stop()
            if self._restore_echo is not None:
                self._restore_echo()
                self._restore_echo = None

    def say(self, mark: str, text: str) -> None:
        """Print `mark` (rich markup) and `text` (as it is: a server's text is never
        markup) as a line for good above the area; from any thread."""
        from rich.text import Text  # tens of ms: only when a terminal is drawn

        line = Text.from_markup(mark)
        line.append(text)
        with LiveView._lock:
            if self._live is not None:
                self._said.append(line)
                self._wake.set()
                return
        self.console.print(line)  # no area up: nothing to share the terminal with

    def _tick(self) -> None:
        period = 1.0 / self.refresh_per_second
        while not self._stop.is_set():
            self._wake.wait(period)
            self._wake.clear()
            if not self._stop.is_set():
                self._draw()

    def _draw(self) -> None:
        from rich.text import Text  # tens of ms: only when a terminal is drawn

        with LiveView._lock:
            lines, self._said = self._said, []
            live = self._live
        if live is None:
            return
        if lines:
            live.console.print(Text("\n").join(lines))
        live.refresh()


class Activity(LiveView):
    """One live line for something slow that shows no progress of its own (a server
    starting, a model loading): a spinner, the text, the seconds it has taken."""

    refresh_per_second = 10.0

    def __init__(self, console: Console, text: str, *, indent: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.text = text
        self.indent = indent
        self.clock = clock
        self.started = clock()

    def update(self, text: str) -> None:
        self.text = text

    def __rich__(self) -> RenderableType:
        from rich.text import Text  # tens of ms: only when a terminal is drawn

        elapsed = self.clock() - self.started
        frame = SPINNER[int(elapsed * 10) % len(SPINNER)]
        line = Text(f"{self.indent}{frame} ", style="cyan")
        line.append(self.text)
        line.append(f"  {elapsed:.0f} s", style="dim")
        line.truncate(max(1, self.console.width - 1), overflow="ellipsis")
        return line


@contextlib.contextmanager
def activity(text: str, *, live: bool, console: Callable[[], Console],
             write: Callable[[str], None], indent: str = "",
             clock: Callable[[], float] = time.monotonic) -> Iterator[Callable[[str], None]]:
    """Something that may take more than 2 s and shows no progress of its own. `live` (a
    terminal): an `Activity` line on `console()` until it ends; else (a log) `text` is
    written as the start line, and what `update(text)` says about every LOG_EVERY
    seconds. Yields `update`; the caller writes how it ended."""
    if live:
        shown = Activity(console(), text, indent=indent, clock=clock)
        with shown:
            yield shown.update
        return
    write(text)
    last = [clock()]

    def update(now_text: str) -> None:
        if clock() - last[0] >= LOG_EVERY:
            last[0] = clock()
            write(now_text)

    yield update


def _quiet_control_echo() -> Callable[[], None]:
    """While an area is up, a typed Ctrl-C must not be echoed as `^C`: the terminal writes
    it where the cursor is, at the end of the area's last row, and a full row then wraps,
    which throws the count of rows to erase off by one (a stale row stays). Turned off
    (ECHOCTL) on the controlling terminal while this process is in the foreground, and
    back on after."""
    try:
        import termios
    except ImportError:  # Windows: no such echo
        return _nothing
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
            return _nothing  # not a terminal, or a background job (SIGTTOU otherwise)
        before = termios.tcgetattr(fd)
        quiet = list(before)
        quiet[3] &= ~termios.ECHOCTL
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except (OSError, ValueError, AttributeError, termios.error):
        return _nothing

    def restore() -> None:
        with contextlib.suppress(OSError, ValueError, termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, before)

    return restore


def _nothing() -> None:
    pass


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

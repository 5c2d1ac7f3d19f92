"""Ctrl-C, SIGTERM and SIGHUP: one way to stop, and moments that are not stopped.

SIGTERM (systemd, `kill`, a CI job cancelled) and SIGHUP (a terminal closed) stop the
tool exactly as Ctrl-C does: a KeyboardInterrupt in the main thread, so every command
prints its "interrupted" line and its --json document and leaves a state to resume from.
The first signal interrupts; later ones are ignored while the tool reports and exits.

`deferred()` marks a short stretch that must not be cut in half (writing Codex's two
files): a signal arriving inside takes effect right after it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_SIGNALS = tuple(s for s in (getattr(signal, name, None) for name in
                             ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


class _State:
    deferring = 0
    pending: int | None = None
    fired = False


_state = _State()


def _interrupt(signum: int, frame: object) -> None:
    if _state.deferring:
        _state.pending = signum
        return
    if not _state.fired:
        _state.fired = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """For the duration of a command (main thread only): the three signals interrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.fired, _state.pending, _state.deferring = False, None, 0
    previous = {s: signal.signal(s, _interrupt) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """No interruption inside: a signal that arrives is acted on at the end."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if not _state.deferring and _state.pending is not None:
        _state.pending = None
        if not _state.fired:
            _state.fired = True
            raise KeyboardInterrupt

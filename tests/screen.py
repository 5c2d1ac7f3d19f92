"""What a person sees: the CLI run as its own process under a pseudo-terminal, its bytes
rendered by a terminal emulator (pyte), or run without a terminal, its log lines timed.

A terminal run (`run_in_terminal`) gives a `ScreenRun`: the final screen with its
scrollback (`lines`), every frame the terminal showed and when (`frames`), and the lines
the terminal had to wrap because they were wider than the screen (`wrapped`). The
assertions below state the rules of issue 13 for what a user notices:

- `assert_log_kept(run, ...)`: the whole step log is there at the end, in order, and
  the shell's line above it (nothing erased by a progress area that closed);
- `assert_marked_lines_kept(run)`: every line printed for good (`✓`, `↻`, `!`, `✗`,
  `==>`) is still there at the end, on a line of its own;
- `assert_fits(run)`: no line was wider than the screen (the terminal wrapped none);
- `assert_nothing_twice(lines)`: no line printed twice;
- `assert_moves(run, ...)`: during a long wait the screen changed at least every ~2 s.

A run without a terminal (`run_plain`) gives a `PlainRun`: stdout and stderr, and each
line with the time it arrived, for `assert_start_and_end` (anything that may take more
than 2 s writes a line when it starts, and one when it ends, to a log read live) and
`assert_no_escapes` (a log or a file gets no cursor or colour codes).

The bytes are replayed after the run, so a test can look at any moment of it; frames are
the screen after each read from the terminal, timed when the read returned.
`PREEMPTED_PRINTS` makes the race of issue 13 item 1 repeatable (see there).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Union

import pyte
from pyte import modes

from tests.tool import ROOT, cli_env

__all__ = [
    "PREEMPTED_PRINTS",
    "SIZES",
    "Chunk",
    "PlainRun",
    "ScreenRun",
    "assert_fits",
    "assert_log_kept",
    "assert_marked_lines_kept",
    "assert_moves",
    "assert_no_escapes",
    "assert_nothing_twice",
    "assert_start_and_end",
    "run_in_terminal",
    "run_plain",
    "terminal_env",
]

SIZES = ((80, 24), (120, 40))  # the terminals of issue 13: the smallest usual, a roomy one
STILL_LIMIT = 2.5  # seconds: "movement at least every ~2 s", with room for a loaded CI box
ESCAPE = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|.)")
SGR = re.compile(r"\x1b\[[0-9;]*m")

Pattern = Union[str, "re.Pattern[str]"]

# A busy machine, made repeatable (`run_in_terminal(preload=PREEMPTED_PRINTS)`): a thread
# printing a line above rich's live area is paused for 0.3 s between reading the area's
# height (to erase it) and writing, as a loaded 2-core machine sometimes pauses it; the
# area's own refresh (10 a second, another thread) runs in that gap. Printing that is
# safe draws the same screen either way; it only hooks rich's live display, so a display
# without it is run as it is.
PREEMPTED_PRINTS = """
import threading, time
import rich.live
_process = rich.live.Live.process_renderables
def _preempted(self, renderables):
    result = _process(self, renderables)
    if not isinstance(threading.current_thread(), rich.live._RefreshThread):
        time.sleep(0.3)
    return result
rich.live.Live.process_renderables = _preempted
"""


def terminal_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A user's terminal session: TERM set, no size in the environment (the tool must ask
    the terminal), no CI, no colour overrides, none of the developer's proxies."""
    env = dict(cli_env() if base is None else base)
    for name in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "CI", "GITHUB_ACTIONS",
                 "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_ENV", "TERM"):
        env.pop(name, None)
    env["TERM"] = "xterm-256color"
    env.update(extra)
    return env


# --- the terminal --------------------------------------------------------------------------


class _Screen(pyte.HistoryScreen):
    """A terminal with scrollback that notes every line it had to wrap (autowrap: a line
    wider than the screen)."""

    def __init__(self, columns: int, rows: int) -> None:
        super().__init__(columns, rows, history=100_000)
        self.wraps: list[str] = []

    def draw(self, data: str) -> None:
        for char in data:
            if self.cursor.x >= self.columns and modes.DECAWM in self.mode \
                    and pyte.screens.wcwidth(char) > 0:
                row = self.buffer[self.cursor.y]
                self.wraps.append("".join(row[x].data for x in range(self.columns)).rstrip())
            pyte.Screen.draw(self, char)

    def scrollback(self) -> list[str]:
        return ["".join(line[x].data for x in range(self.columns)).rstrip()
                for line in self.history.top]


@dataclass(frozen=True)
class Chunk:
    t: float  # seconds since the start of the run
    data: bytes


@dataclass
class ScreenRun:
    """A finished terminal run. `lines`: scrollback then screen, right-trimmed, without
    the blank rows below the last text; `frames`: (t, screen rows) after each read."""

    args: tuple[str, ...]
    code: int
    columns: int
    rows: int
    chunks: tuple[Chunk, ...]
    seconds: float
    stdout: str = ""  # when stdout was not the terminal
    stderr: str = ""  # when stderr was not the terminal
    _replay: tuple[list[str], list[str], list[tuple[float, tuple[str, ...]]]] | None = \
        field(default=None, repr=False)

    @property
    def prompt(self) -> str:
        """The line the shell left above the output: it must survive the run."""
        return "$ ollama-provision " + " ".join(self.args)

    @property
    def raw(self) -> bytes:
        return b"".join(c.data for c in self.chunks)

    def _replayed(self) -> tuple[list[str], list[str], list[tuple[float, tuple[str, ...]]]]:
        if self._replay is None:
            screen = _Screen(self.columns, self.rows)
            stream = pyte.ByteStream(screen)
            stream.feed(self.prompt.encode() + b"\r\n")  # the shell echoed the command
            screen.wraps.clear()  # a long command line wraps: not the tool's doing
            frames: list[tuple[float, tuple[str, ...]]] = [(0.0, tuple(screen.display))]
            for chunk in self.chunks:
                stream.feed(chunk.data)
                shown = tuple(screen.display)
                if shown != frames[-1][1]:
                    frames.append((chunk.t, shown))
            lines = screen.scrollback() + [row.rstrip() for row in screen.display]
            while lines and not lines[-1]:
                lines.pop()
            self._replay = (lines, screen.wraps, frames)
        return self._replay

    @property
    def lines(self) -> list[str]:
        return list(self._replayed()[0])

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def prompt_rows(self) -> int:
        return -(-len(self.prompt) // self.columns)

    @property
    def prompt_kept(self) -> bool:
        """The shell's line above the output is still there (nothing erased above)."""
        return "".join(self.lines[:self.prompt_rows]) == self.prompt

    @property
    def output(self) -> list[str]:
        """The tool's lines: what follows the shell's line (all lines if it was erased)."""
        return self.lines[self.prompt_rows:] if self.prompt_kept else self.lines

    def rows_with(self, pattern: Pattern) -> list[str]:
        """The final lines that show `pattern`."""
        return [line for line in self.lines if _matches(pattern, line)]

    @property
    def wrapped(self) -> list[str]:
        """The rows the terminal wrapped: each was the start of a line too wide for it."""
        return list(self._replayed()[1])

    @property
    def frames(self) -> list[tuple[float, tuple[str, ...]]]:
        """Each distinct screen shown, with the time it appeared (changes only)."""
        return list(self._replayed()[2])

    def first_time(self, pattern: Pattern) -> float | None:
        """When a frame first showed `pattern`."""
        for t, rows in self.frames:
            if any(_matches(pattern, row) for row in rows):
                return t
        return None

    def longest_still(self, start: float = 0.0, end: float | None = None) -> tuple[float, float]:
        """The longest time between `start` and `end` (default: the end of the run) in
        which the screen did not change: (seconds, when that still period began)."""
        end = self.seconds if end is None else end
        changes = [t for t, _ in self.frames if start < t < end]
        longest, began, last = 0.0, start, start
        for t in [*changes, end]:
            if t - last > longest:
                longest, began = t - last, last
            last = t
        return longest, began

    def describe(self) -> str:
        """The final screen, for failure messages."""
        ruler = "-" * self.columns
        return (f"`ollama-provision {' '.join(self.args)}` at {self.columns}x{self.rows}, "
                f"exit {self.code}, {self.seconds:.1f} s\n{ruler}\n{self.text}\n{ruler}"
                + (f"\nstdout:\n{self.stdout}" if self.stdout else "")
                + (f"\nstderr:\n{self.stderr}" if self.stderr else ""))


def _command(preload: str) -> list[str]:
    """`python -m provision`, with `preload` run first in the same process."""
    if not preload:
        return [sys.executable, "-m", "provision"]
    return [sys.executable, "-c", f"{preload}\nimport runpy\n"
            "runpy.run_module('provision', run_name='__main__', alter_sys=True)"]


def _set_size(fd: int, columns: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _controlling_terminal() -> None:  # in the child, after setsid: the pty becomes its tty
    with contextlib.suppress(OSError):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_in_terminal(*args: str, env: dict[str, str] | None = None, columns: int = 80,
                    rows: int = 24, timeout: float = 60.0, stdout: str = "terminal",
                    stderr: str = "terminal", keys: Sequence[tuple[float, bytes]] = (),
                    signal_when: tuple[Callable[[bytes], bool], int] | None = None,
                    preload: str = "") -> ScreenRun:
    """`ollama-provision ARGS` on a `columns` x `rows` pseudo-terminal (stdin, and stdout
    and stderr unless `"pipe"`), as a user runs it. `keys`: (seconds, bytes) typed at those
    times (b"\\x03" is Ctrl-C). `signal_when=(condition, signum)`: the signal as soon as
    the bytes so far satisfy the condition. `preload`: Python run in the tool's process
    before it starts (see `PREEMPTED_PRINTS`). Killed after `timeout` s (code -9)."""
    main_fd, child_fd = os.openpty()
    _set_size(child_fd, columns, rows)
    attrs = termios.tcgetattr(child_fd)  # a user's terminal: ^C is SIGINT, \n is \r\n
    attrs[3] |= termios.ISIG
    termios.tcsetattr(child_fd, termios.TCSANOW, attrs)
    pipes = {"terminal": child_fd, "pipe": subprocess.PIPE}
    began = time.monotonic()
    proc = subprocess.Popen(
        [*_command(preload), *args], cwd=ROOT,
        env=terminal_env() if env is None else env, stdin=child_fd,
        stdout=pipes[stdout], stderr=pipes[stderr], start_new_session=True,
        preexec_fn=_controlling_terminal)
    os.close(child_fd)
    captured: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, s=s: captured.__setitem__(n, s.read()),
                                daemon=True)
               for n, s in (("out", proc.stdout), ("err", proc.stderr)) if s is not None]
    for reader in readers:
        reader.start()
    chunks: list[Chunk] = []
    pending = sorted(keys)
    signalled = False
    exited_at: float | None = None
    while True:
        now = time.monotonic()
        if now - began > timeout and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        while pending and now - began >= pending[0][0]:
            os.write(main_fd, pending.pop(0)[1])
        ready, _, _ = select.select([main_fd], [], [], 0.05)
        if ready:
            try:
                data = os.read(main_fd, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                data = b""
            if not data:
                break
            chunks.append(Chunk(time.monotonic() - began, data))
            if signal_when is not None and not signalled and proc.poll() is None \
                    and signal_when[0](b"".join(c.data for c in chunks)):
                signalled = True
                proc.send_signal(signal_when[1])
        elif proc.poll() is not None:
            # Exited; a detached grandchild (a started `ollama serve`) may hold the
            # terminal open: give the last bytes a moment, then stop reading.
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > 0.3:
                break
    code = proc.wait(timeout=30)
    seconds = time.monotonic() - began
    os.close(main_fd)
    for reader in readers:
        reader.join(timeout=10)
    return ScreenRun(tuple(args), code, columns, rows, tuple(chunks), seconds,
                     stdout=captured.get("out", b"").decode(errors="replace"),
                     stderr=captured.get("err", b"").decode(errors="replace"))


# --- no terminal: a log ---------------------------------------------------------------------


@dataclass(frozen=True)
class PlainRun:
    args: tuple[str, ...]
    code: int
    out: str
    err: str
    events: tuple[tuple[float, str, str], ...]  # (seconds, "out" or "err", line)
    seconds: float

    @property
    def lines(self) -> list[str]:
        """stdout and stderr lines interleaved as they arrived (as a CI log shows them)."""
        return [line for _, _, line in self.events]

    def when(self, pattern: Pattern) -> float | None:
        """When the first line matching `pattern` arrived."""
        return next((t for t, _, line in self.events if _matches(pattern, line)), None)

    def describe(self) -> str:
        log = "\n".join(f"{t:6.2f} {s} | {line}" for t, s, line in self.events)
        return f"`ollama-provision {' '.join(self.args)}`, exit {self.code}:\n{log}"


def run_plain(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0,
              preload: str = "") -> PlainRun:
    """`ollama-provision ARGS` with stdout and stderr to pipes (a CI log), stdin closed;
    every line timed when it arrives."""
    began = time.monotonic()
    proc = subprocess.Popen([*_command(preload), *args], cwd=ROOT,
                            env=cli_env() if env is None else env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    events: list[tuple[float, str, str]] = []
    texts: dict[str, list[str]] = {"out": [], "err": []}
    lock = threading.Lock()

    def read(name: str, stream: object) -> None:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode(errors="replace")
            with lock:
                texts[name].append(line)
                events.append((time.monotonic() - began, name, line.rstrip("\n")))

    readers = [threading.Thread(target=read, args=(n, s), daemon=True)
               for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
    for reader in readers:
        reader.join(timeout=10)
    return PlainRun(tuple(args), code, "".join(texts["out"]), "".join(texts["err"]),
                    tuple(sorted(events, key=lambda e: e[0])), time.monotonic() - began)


# --- the rules ------------------------------------------------------------------------------


def _matches(pattern: Pattern, line: str) -> bool:
    return bool(pattern.search(line)) if isinstance(pattern, re.Pattern) else pattern in line


def find_in_order(lines: Sequence[str], patterns: Iterable[Pattern]) -> list[Pattern]:
    """The patterns not found, each looked for after the line that matched the one before."""
    missing: list[Pattern] = []
    at = 0
    for pattern in patterns:
        hit = next((i for i in range(at, len(lines)) if _matches(pattern, lines[i])), None)
        if hit is None:
            missing.append(pattern)
        else:
            at = hit + 1
    return missing


def assert_log_kept(run: ScreenRun, *patterns: Pattern) -> None:
    """The shell's line above the output, then every pattern, in this order, are on the
    final screen or in its scrollback: nothing was erased."""
    assert run.prompt_kept, f"the line above the output was erased\n{run.describe()}"
    missing = find_in_order(run.output, patterns)
    assert not missing, f"erased or never shown: {missing}\n{run.describe()}"


def assert_marked_lines_kept(run: ScreenRun, marks: tuple[str, ...] = ("✓ ", "↻ ", "! ", "✗ ",
                                                                    "==> ")) -> None:
    """Every line that was ever shown starting with one of `marks` (lines printed for good,
    never part of a live area) is still there at the end, on a line of its own. A mark
    found inside a row is a line printed over another: from the mark on, it counts too."""
    shown = set()
    for _, frame in run.frames:
        for row in frame:
            at = min((i for i in (row.find(m) for m in marks) if i >= 0), default=-1)
            if at >= 0 and row[at:].strip():
                shown.add(row[at:].rstrip())
    missing = sorted(r for r in shown if not any(line.startswith(r) for line in run.lines))
    assert not missing, f"shown, then erased: {missing}\n{run.describe()}"


def assert_fits(run: ScreenRun) -> None:
    """The terminal wrapped no line: nothing was wider than the screen."""
    assert not run.wrapped, (f"wider than {run.columns} columns (wrapped by the terminal): "
                             f"{run.wrapped}\n{run.describe()}")


def assert_nothing_twice(lines: Sequence[str], *, ignore: Callable[[str], bool] = lambda _: False,
                         context: str = "") -> None:
    """No non-blank line appears twice (`ignore`: lines allowed to repeat)."""
    seen: set[str] = set()
    twice = []
    for line in lines:
        key = line.strip()
        if not key or ignore(key):
            continue
        if key in seen:
            twice.append(key)
        seen.add(key)
    assert not twice, f"printed twice: {twice}\n{context or chr(10).join(lines)}"


def assert_moves(run: ScreenRun, *, start: Pattern | float | None = None,
                 end: Pattern | float | None = None, every: float = STILL_LIMIT) -> None:
    """Between `start` and `end` (a time, or the first frame showing a pattern; default:
    the first output and the end of the run) the screen never stood still longer than
    `every` seconds."""
    first = run.frames[1][0] if len(run.frames) > 1 else 0.0
    begin = first if start is None else start if isinstance(start, float) else \
        run.first_time(start)
    stop = run.seconds if end is None else end if isinstance(end, float) else \
        run.first_time(end)
    assert begin is not None, f"never shown: {start!r}\n{run.describe()}"
    assert stop is not None, f"never shown: {end!r}\n{run.describe()}"
    still, at = run.longest_still(begin, stop)
    assert still <= every, (f"the screen stood still for {still:.1f} s (from {at:.1f} s), "
                            f"more than {every:g} s\n{run.describe()}")


def assert_start_and_end(run: PlainRun, start: Pattern, end: Pattern, *,
                         apart: float = 0.0) -> None:
    """A log line matching `start` arrived before the slow part, one matching `end` after
    it: at least `apart` seconds between them (the start line was not held back)."""
    began, ended = run.when(start), run.when(end)
    assert began is not None, f"no start line {start!r}\n{run.describe()}"
    assert ended is not None, f"no end line {end!r}\n{run.describe()}"
    assert ended - began >= apart, (f"start line at {began:.1f} s, end line at {ended:.1f} s: "
                                    f"the start was not written when it began\n"
                                    f"{run.describe()}")


def assert_no_escapes(text: str, what: str = "output", *, colour: bool = False) -> None:
    """No escape sequence (cursor movement, erasing, cursor shown or hidden, synchronized
    output) in a log or a file; with `colour`, colours (SGR, `ESC[...m`) are allowed."""
    rest = SGR.sub("", text) if colour else text
    found = sorted(set(ESCAPE.findall(rest)))
    assert "\x1b" not in rest, f"escape codes in {what}: {found!r}\n{text!r}"

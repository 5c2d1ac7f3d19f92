"""Where text goes: results on stdout, messages and guidance on stderr.

Three modes: a rich view on a terminal, plain lines when not a terminal (CI logs,
pipes), and `--json` (one JSON document on stdout, nothing else there). rich is
imported only when a terminal view is actually drawn.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, Callable

from provision.live import activity
from provision.result import CommandResult

if TYPE_CHECKING:
    from rich.console import Console


def stream_is_terminal(stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """Styled output (colours, tables): a terminal, or forced like rich does it
    (FORCE_COLOR); TERM=dumb never is."""
    env = os.environ if environ is None else environ
    if env.get("TERM") == "dumb":
        return False
    if env.get("FORCE_COLOR"):
        return True
    return stream_is_live(stream, env)


def stream_is_live(stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """A display redrawn in place (cursor moves, erased rows): only a real terminal.
    FORCE_COLOR asks for colours, not for a live area: CI systems set it, and their logs
    would fill with cursor codes."""
    env = os.environ if environ is None else environ
    if env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Output:
    def __init__(
        self,
        *,
        json_mode: bool = False,
        quiet: bool = False,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        terminal: bool | None = None,
    ) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.terminal = (
            stream_is_terminal(self.stdout) if terminal is None else terminal
        ) and not json_mode
        self._console: Console | None = None
        self._err_console: Console | None = None

    # stderr: messages, warnings, guidance
    def info(self, message: str) -> None:
        if not self.quiet:
            print_wrapped(message, self.stderr)

    def warn(self, message: str) -> None:
        print_wrapped(f"warning: {message}", self.stderr)

    def error(self, message: str, hint: str | None = None) -> None:
        print_wrapped(f"error: {message}", self.stderr)
        if hint:
            print_wrapped(f"hint: {hint}", self.stderr)

    @contextlib.contextmanager
    def activity(self, text: str) -> Iterator[Callable[[str], None]]:
        """Something that may take more than 2 s and shows no progress of its own: on a
        terminal (stderr) a spinner with `text` and the seconds so far, gone when it ends;
        in a log `text` as its start line, then what `update(text)` says about every 10 s
        (what the command prints next is its end)."""
        if self.quiet:
            yield _ignore
            return
        with activity(text, live=stream_is_live(self.stderr), console=lambda: self.err_console,
                      write=self.info) as update:
            yield update

    # stdout: results
    def line(self, text: str = "") -> None:
        if not self.quiet:
            print_wrapped(text, self.stdout)

    def diagnosis(self, diagnosis: Any) -> None:
        """Why the server is not usable, and what to do: on stderr, in every mode."""
        self.error(diagnosis.message)
        for fix in diagnosis.fixes:
            self.info(f"  fix: {fix}")
        if diagnosis.detail:
            self.info(f"  ({diagnosis.detail})")

    def emit_result(self, result: CommandResult) -> None:
        """The command's `--json` document: its envelope, then its fields."""
        self.stdout.write(json.dumps(result.to_json(), indent=2, sort_keys=False) + "\n")
        self.stdout.flush()

    @property
    def console(self) -> Console:
        """rich console on stdout (terminal mode only)."""
        if self._console is None:
            from rich.console import Console  # tens of ms: only when a terminal is drawn

            self._console = Console(file=self.stdout, force_terminal=self.terminal,
                                    highlight=False)
        return self._console

    @property
    def err_console(self) -> Console:
        if self._err_console is None:
            from rich.console import Console  # tens of ms: only when a terminal is drawn

            self._err_console = Console(
                file=self.stderr, force_terminal=stream_is_terminal(self.stderr), highlight=False
            )
        return self._err_console


def _ignore(text: str) -> None:
    pass


def terminal_columns(stream: IO[str]) -> int | None:
    """The columns of the terminal `stream` is (None: not a terminal, a log)."""
    if not stream_is_live(stream):
        return None
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80


def print_wrapped(text: str, stream: IO[str]) -> None:
    """A line, wrapped under its own indent on a terminal (see `wrap_line`)."""
    print("\n".join(wrap_line(line, terminal_columns(stream)) for line in text.split("\n")),
          file=stream, flush=True)


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`1 model`, `2 models`, `0 models` (`plural` where it is not noun + s)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def human_bytes(n: float) -> str:
    """Like the Ollama CLI: decimal units, 1 decimal (4.7 GB, 85 MB)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def short_path(path: str | os.PathLike[str]) -> str:
    """A path as a person reads it: the home folder as `~` (a line with a full home path
    in it rarely fits 80 columns)."""
    text = str(path)
    home = os.path.expanduser("~").rstrip(os.sep)
    if home and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home):]
    return text


def wrap_line(text: str, width: int | None) -> str:
    """A line longer than `width` (a terminal's columns; None: a log, left whole) broken
    at spaces, each continuation indented two more than the line: one fact stays one
    block, and the terminal never wraps it at a random column."""
    if width is None or len(text) <= width:
        return text
    indent = text[:len(text) - len(text.lstrip(" "))] + "  "
    glued = _FIGURE.sub("\\1\xa0\\2", text)  # a figure stays with its unit
    return "\n".join(textwrap.wrap(glued, width, subsequent_indent=indent,
                                   break_long_words=False, break_on_hyphens=False)
                     ).replace("\xa0", " ")


_FIGURE = re.compile(r"(\d) ((?:[KMGT]i?)?B\b|s\b|tok(?:ens)?/s)")


def fit(width: int, head: str, *more: str) -> str:
    """`head`, then as many of `more` (in order, each with its own separator) as fit in
    `width` columns: a line that says less rather than one the terminal must wrap."""
    text = head
    for part in more:
        if len(text) + len(part) > width:
            break
        text += part
    return text


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def printable(text: str) -> str:
    """Control characters escaped (`\\n`, `\\x1b`): a name or a server's text shown on a
    terminal can neither forge a line of output nor move the cursor."""
    return text.translate(_CONTROL)

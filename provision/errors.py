"""Exit codes and the one error type the CLI turns into a one-line message.

Exit codes are part of the interface (documented in the README); scripts and CI
branch on them, so they never change meaning.
"""

from __future__ import annotations

EXIT_OK = 0  # ready / success
EXIT_NOT_READY = 1  # server reachable but not ready (missing model, failed pull, no fit)
EXIT_USAGE = 2  # bad flag, bad model name, bad config file
EXIT_UNREACHABLE = 3  # no Ollama server where we were told to look
EXIT_INTERRUPTED = 130  # Ctrl-C


class ProvisionError(Exception):
    """An error the user can act on: printed as one line (plus optional hint), no traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_USAGE, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint


class UsageError(ProvisionError):
    """Invalid input from the user: flags, names, files."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message, exit_code=EXIT_USAGE, hint=hint)

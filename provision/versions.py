"""Version strings of Ollama (`0.13.5`, `0.13.5-rc1`) and Codex (`codex-cli 0.169.0`)."""

from __future__ import annotations

import re

RESPONSES_API_MIN_OLLAMA = (0, 13, 4)  # Ollama gained /v1/responses, which current Codex uses

# A match starts only where a run of digits starts (the lookbehind), and each number is
# at most 9 digits: linear in the text's length, whatever a server sends (without them a
# run of 100,000 digits took over a minute to search).
_NUMBERS = re.compile(r"(?<![\d.])(\d{1,9})\.(\d{1,9})(?:\.(\d{1,9}))?(?!\d)")
MAX_TEXT = 200  # a version string is short; only its start is searched


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """First `X.Y[.Z]` in the text, or None (dev builds report `0.0.0`: treated as newest)."""
    if not text:
        return None
    match = _NUMBERS.search(text[:MAX_TEXT])
    if not match:
        return None
    version = (int(match[1]), int(match[2]), int(match[3] or 0))
    return None if version == (0, 0, 0) else version


def at_least(text: str | None, minimum: tuple[int, int, int]) -> bool:
    """Unknown or unparseable versions count as new enough (a dev build, a fork)."""
    version = parse_version(text)
    return version is None or version >= minimum


def format_version(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))

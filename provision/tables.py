"""Strict TOML tables (the apply manifest, the fleet inventory, [clients]): every key
known, every value checked, and every error one line naming the file, the key and what
was expected. A typo must not silently do nothing."""

from __future__ import annotations

import difflib
import sys
from typing import Any, Callable

from provision.errors import UsageError
from provision.names import parse_name
from provision.output import printable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

Check = Callable[[Any], bool]
# key -> (check, what is expected, the dataclass field it fills)
Schema = dict[str, tuple[Check, str, str]]

# Seconds (and rates) beyond this are typos that would overflow clocks and waits.
MAX_NUMBER = 10_000_000
SECONDS = "seconds (a number > 0) up to 10,000,000"


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def is_str(v: Any) -> bool:
    return isinstance(v, str)


def is_text(v: Any) -> bool:
    """A string with something in it."""
    return isinstance(v, str) and bool(v.strip())


def nonneg_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= MAX_NUMBER


def positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= MAX_NUMBER


def int_at_least(minimum: int) -> Check:
    return lambda v: (isinstance(v, int) and not isinstance(v, bool)
                      and minimum <= v <= 1_000_000_000)


def is_name_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v)


def is_table(v: Any) -> bool:
    return isinstance(v, dict)


def shown(value: Any) -> str:
    """A wrong value quoted in an error: one short line, whatever its size."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else \
        f"a number of {len(str(abs(value)))} digits"
    return printable(text if len(text) <= 80 else text[:80] + "...")


def fail(source: str, key: str, message: str) -> UsageError:
    return UsageError(f"{source}: {key}: {message}")


def did_you_mean(key: str, known: set[str] | dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def fields(source: str, prefix: str, table: Any, schema: Schema) -> dict[str, Any]:
    """The table's values by dataclass field, every key and value checked."""
    if not isinstance(table, dict):
        raise fail(source, prefix, "expected a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in schema:
            raise fail(source, f"{prefix}.{key}",
                       "unknown key" + did_you_mean(key, schema)
                       + f"; allowed: {', '.join(schema)}")
        check, expected, attr = schema[key]
        if not check(value):
            raise fail(source, f"{prefix}.{key}", f"expected {expected}, got {shown(value)}")
        values[attr] = tuple(value) if isinstance(value, list) else value
    return values


def check_name(source: str, key: str, text: str) -> None:
    """A model name by Ollama's rules, else an error naming the key."""
    try:
        parse_name(text)
    except UsageError as exc:
        raise fail(source, key, exc.message) from None


def load_sections(text: str, source: str, allowed: set[str]) -> dict[str, Any]:
    """Parse TOML whose top level may hold only the `allowed` sections."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: invalid TOML: {exc}") from None
    for key in data:
        if key not in allowed:
            raise fail(source, key, "unknown section" + did_you_mean(key, allowed)
                       + f"; allowed: {', '.join(sorted(allowed))}")
    return data

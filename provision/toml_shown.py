"""What of a TOML file may be shown (in a diff, in `--json`): only the values this tool
writes. Every other value is `***`: the user's other tables hold tokens under any name
(`PRIVATE_KEY`, an `X-Auth` header, `query_params = { key = ... }`), and a keyword list
of secret-looking names always misses one. Keys, table headers and comments stay, so a
diff still says what changed where.

`shown_lines(text, shown)` returns the file's lines (as `text.split("\\n")`), each redacted; the
text must be valid TOML (it always was parsed first), which keeps this scanner small.
"""

from __future__ import annotations

import bisect
import fnmatch
import re

from provision.redact import in_text

# (table path pattern, keys whose values are shown): what ollama-provision writes into
# Codex's files; another format names its own (provision/clients).
Shown = tuple[tuple[tuple[str, ...], frozenset[str]], ...]
CODEX: Shown = (
    (("model_providers", "*"),
     frozenset({"name", "base_url", "wire_api", "env_key", "env_http_headers"})),
    (("model_providers", "*", "env_http_headers"), frozenset({"*"})),  # variable NAMES
    (("profiles", "*"), frozenset({"model", "model_provider"})),
    ((), frozenset({"model", "model_provider", "profile"})),
)
HIDDEN = '"***"'

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def is_shown(path: tuple[str, ...], shown: Shown = CODEX) -> bool:
    """May the value at this key path be shown?"""
    if not path:
        return False
    table, key = path[:-1], path[-1]
    return any(len(pattern) == len(table) and ("*" in keys or key in keys)
               and all(fnmatch.fnmatchcase(t, p) for t, p in zip(table, pattern))
               for pattern, keys in shown)


def shown_lines(text: str, shown: Shown = CODEX) -> list[str]:
    lines = text.split("\n")
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    out = list(lines)
    table: tuple[str, ...] = ()
    pos = 0
    while pos < len(text):
        pos = _skip(text, pos, " \t\r\n")
        if pos >= len(text):
            break
        if text[pos] == "#":
            pos = _line_end(text, pos)
            continue
        if text[pos] == "[":
            double = text.startswith("[[", pos)
            keys, pos = _keys(text, pos + (2 if double else 1))
            table = tuple(keys)
            pos = _line_end(text, pos)
            continue
        keys, pos = _keys(text, pos)
        pos = _skip(text, pos, " \t")
        if pos >= len(text) or text[pos] != "=":
            pos = _line_end(text, pos)  # not expected in valid TOML: move on
            continue
        start = _skip(text, pos + 1, " \t")
        end = _value_end(text, start)
        path = table + tuple(keys)
        first = _line_of(starts, start)
        last = _line_of(starts, max(start, end - 1))
        if is_shown(path, shown):
            for i in range(first, last + 1):
                out[i] = in_text(out[i])
        else:
            line_start = starts[first]
            head = text[line_start:start]
            rest = text[end:_line_end(text, end)] if last == first else ""
            hidden = _inline_table(text, start, end) if first == last else None
            out[first] = head + (hidden or HIDDEN) + rest
            for i in range(first + 1, last + 1):
                out[i] = HIDDEN
        pos = end
    return out


def _inline_table(text: str, start: int, end: int) -> str | None:
    """`{ Authorization = "***", X-Org = "***" }`: an inline table's keys, values hidden
    (None when the value is not an inline table)."""
    if text[start] != "{":
        return None
    keys: list[str] = []
    pos = start + 1
    while pos < end:
        pos = _skip(text, pos, " \t,")
        if pos >= end or text[pos] == "}":
            break
        key_start = pos
        _, pos = _keys(text, pos)
        keys.append(text[key_start:pos].strip())
        pos = _skip(text, pos, " \t")
        if pos >= end or text[pos] != "=":
            return None
        pos = _value_end_in(text, _skip(text, pos + 1, " \t"), end)
    return "{ " + ", ".join(f"{key} = {HIDDEN}" for key in keys) + " }" if keys else "{}"


def _value_end_in(text: str, pos: int, limit: int) -> int:
    """The end of a value inside an inline table: up to its `,` or closing `}`."""
    if pos < limit and text[pos] in "'\"[{":
        return _value_end(text, pos)
    while pos < limit and text[pos] not in ",}":
        pos += 1
    return pos


def _line_of(starts: list[int], pos: int) -> int:
    return bisect.bisect_right(starts, pos) - 1


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _keys(text: str, pos: int) -> tuple[list[str], int]:
    """A dotted key (bare or quoted parts); stops before `=` or `]`."""
    keys: list[str] = []
    while pos < len(text):
        pos = _skip(text, pos, " \t")
        char = text[pos] if pos < len(text) else ""
        if char in ("'", '"'):
            end = _string_end(text, pos)
            keys.append(_unquote(text[pos:end]))
            pos = end
        else:
            match = _BARE.match(text, pos)
            if not match:
                break
            keys.append(match[0])
            pos = match.end()
        pos = _skip(text, pos, " \t")
        if pos < len(text) and text[pos] == ".":
            pos += 1
            continue
        break
    if text.startswith("]]", pos):
        pos += 2
    elif text.startswith("]", pos):
        pos += 1
    return keys, pos


def _unquote(token: str) -> str:
    if token.startswith('"'):
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token[1:-1]


def _string_end(text: str, pos: int) -> int:
    """Just past the string starting at `pos` (any of TOML's four kinds)."""
    for quote in ('"""', "'''"):
        if text.startswith(quote, pos):
            i = pos + 3
            while True:
                found = text.find(quote, i)
                if found < 0:
                    return len(text)
                if quote == "'''" or not _escaped(text, found):
                    end = found + 3
                    while end < len(text) and text[end] == quote[0] and end - found < 5:
                        end += 1  # up to two quotes of the content right before the closer
                    return end
                i = found + 1
    quote = text[pos]
    i = pos + 1
    while i < len(text) and text[i] != "\n":
        if text[i] == "\\" and quote == '"':
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return i


def _escaped(text: str, pos: int) -> bool:
    backslashes = 0
    while pos - backslashes - 1 >= 0 and text[pos - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _value_end(text: str, pos: int) -> int:
    """Just past the value starting at `pos`: a string, an array or inline table (nested,
    over several lines), or a scalar up to the comment or the line's end."""
    if pos >= len(text):
        return pos
    if text[pos] in ("'", '"'):
        return _string_end(text, pos)
    if text[pos] in "[{":
        depth = 0
        i = pos
        while i < len(text):
            char = text[i]
            if char in ("'", '"'):
                i = _string_end(text, i)
                continue
            if char == "#":
                i = _line_end(text, i)
                continue
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return i
    end = _line_end(text, pos)
    comment = text.find("#", pos, end)  # a scalar holds no '#' (strings are handled above)
    return (comment if comment >= 0 else end)

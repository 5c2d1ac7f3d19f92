"""Edit a TOML file that someone else owns without losing a byte of it.

tomlkit keeps comments, key order and formatting (Codex edits its own config the same
way, with Rust's toml_edit); tomli-w would rewrite the whole file. tomlkit has quirks
around dotted keys and inline tables, so every edit is checked: the result is parsed
again with the strict parser (tomllib, independent of tomlkit) and must hold exactly
the data the edit means, else the next strategy is tried, else nothing is changed.
Each operation is applied and checked on its own, so a failure names the operation.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import tomlkit

from provision.errors import UsageError
from provision.toml_shown import CODEX, shown_lines

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

TablePath = tuple[str, ...]


@dataclass(frozen=True)
class SetKeys:
    """Make `table` exist and give these keys these values; other keys are left alone."""

    table: TablePath
    values: tuple[tuple[str, Any], ...]
    comment: str = ""  # a comment line above the table, when the table is new

    @classmethod
    def of(cls, table: TablePath, values: Mapping[str, Any], comment: str = "") -> SetKeys:
        return cls(tuple(table), tuple(values.items()), comment)


@dataclass(frozen=True)
class DeleteTable:
    table: TablePath


@dataclass(frozen=True)
class RenameTable:
    """Give a table a new last key, keeping its contents (and, when possible, its text)."""

    table: TablePath
    new_name: str


@dataclass(frozen=True)
class SetArrayEntry:
    """In the array of tables `table` (`[[models.llms]]`), the first entry holding all of
    `match` gets `values`, its other keys left alone; with no such entry, one is added
    (match and values). Other entries stay as they are."""

    table: TablePath
    match: tuple[tuple[str, Any], ...]
    values: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, table: TablePath, match: Mapping[str, Any],
           values: Mapping[str, Any]) -> SetArrayEntry:
        return cls(tuple(table), tuple(match.items()), tuple(values.items()))


Op = Union[SetKeys, DeleteTable, RenameTable, SetArrayEntry]


class TomlError(UsageError):
    """The file is not valid TOML, or cannot be edited safely: nothing was changed."""


@dataclass(frozen=True)
class ParsedToml:
    data: dict[str, Any]
    crlf: bool  # the file uses CRLF line endings throughout
    notes: tuple[str, ...] = field(default=())


# --- parsing -----------------------------------------------------------------------------


def loads(text: str, *, source: str = "TOML") -> dict[str, Any]:
    """Strict parse; invalid TOML is one line naming the place, as a UsageError."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlError(f"{source}: invalid TOML {_where(exc)}; nothing was changed",
                        hint="fix the file (or move it away) and run again") from None


def _where(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", text)
    reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", text)
    if match:
        return f"at line {match[1]}, column {match[2]}: {reason}"
    if "end of document" in text:
        return f"at the end of the file: {reason}"
    return f": {reason}"


def decode(raw: bytes, *, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TomlError(f"{source}: not UTF-8 text (byte {exc.start}); nothing was changed",
                        hint="TOML files must be UTF-8") from None


def is_crlf(text: str) -> bool:
    """CRLF throughout (mixed endings are left as they are and edited as LF)."""
    crlf = text.count("\r\n")
    return crlf > 0 and crlf == text.count("\n")


# --- the meaning of an edit, on plain data -----------------------------------------------


def apply_ops(data: Mapping[str, Any], ops: Sequence[Op]) -> dict[str, Any]:
    result = _deep_copy(data)
    for op in ops:
        _apply_op(result, op)
    return result


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _apply_op(data: dict[str, Any], op: Op) -> None:
    if isinstance(op, SetArrayEntry):
        _apply_array_entry(data, op)
        return
    if isinstance(op, SetKeys):
        node = data
        for key in op.table:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise TomlError(f"'{'.'.join(op.table)}' is not a table in this file; "
                                "nothing was changed")
        for key, value in op.values:
            node[key] = _deep_copy(value)
        return
    parent = get_table(data, op.table[:-1])
    if parent is None or op.table[-1] not in parent:
        return
    if isinstance(op, DeleteTable):
        del parent[op.table[-1]]
    else:
        parent[op.new_name] = parent.pop(op.table[-1])


def _apply_array_entry(data: dict[str, Any], op: SetArrayEntry) -> None:
    node: Any = data
    for key in op.table[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise TomlError(f"'{'.'.join(op.table)}' is not in a table in this file; "
                            "nothing was changed")
    entries = node.setdefault(op.table[-1], [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise TomlError(f"'{'.'.join(op.table)}' is not an array of tables in this file; "
                        "nothing was changed")
    index = find_entry(entries, dict(op.match))
    if index is None:
        entries.append({**dict(op.match), **_deep_copy(dict(op.values))})
    else:
        entries[index].update(_deep_copy(dict(op.values)))


def find_entry(entries: Sequence[Any], match: Mapping[str, Any]) -> int | None:
    """The index of the first table in `entries` holding every key of `match`."""
    for index, entry in enumerate(entries):
        if isinstance(entry, Mapping) and all(
                k in entry and _unwrap(entry[k]) == v for k, v in match.items()):
            return index
    return None


def get_table(data: Mapping[str, Any], path: TablePath) -> dict[str, Any] | None:
    node: Any = data
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, dict) else None


# --- editing the text --------------------------------------------------------------------


def edit_text(text: str, ops: Sequence[Op], *, source: str = "TOML") -> str:
    """The text with `ops` applied, everything else byte for byte as it was.

    Raises TomlError when the text is invalid or an edit cannot be made safely.
    Returns `text` itself when the data already is what the ops ask for (idempotent).
    """
    crlf = is_crlf(text)
    work = text.replace("\r\n", "\n") if crlf else text
    current = loads(work, source=source)
    if _same(apply_ops(current, ops), current):
        return text
    for op in ops:
        wanted = apply_ops(current, [op])
        if _same(wanted, current):
            continue
        work = _apply_text(work, op, current, wanted, source)
        current = wanted
    return work.replace("\n", "\r\n") if crlf else work


def _apply_text(
    text: str, op: Op, current: dict[str, Any], wanted: dict[str, Any], source: str
) -> str:
    for strategy in _strategies(op, current):
        try:
            candidate = strategy(text, op)
        except Exception:  # noqa: BLE001 - tomlkit's internal errors: try the next way
            continue
        try:
            if _same(tomllib.loads(candidate), wanted):
                return candidate
        except tomllib.TOMLDecodeError:
            continue
    raise TomlError(
        f"{source}: cannot {_describe(op)} without disturbing the rest of the file "
        "(an unusual layout, e.g. dotted keys); nothing was changed",
        hint="make that edit by hand, or move the table to a [section] of its own",
    )


def _same(a: Any, b: Any) -> bool:
    """Equal data, empty tables aside: removing [profiles.x] may or may not leave an empty
    [profiles], depending on how the file spelled it, and Codex reads both alike."""
    return _pruned(a) == _pruned(b)


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        items = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v != {}}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _describe(op: Op) -> str:
    name = ".".join(op.table) or "the top level"
    if isinstance(op, SetArrayEntry):
        which = ", ".join(f"{k} = {v!r}" for k, v in op.match)
        return f"set {', '.join(k for k, _ in op.values)} in the [[{name}]] entry ({which})"
    if isinstance(op, SetKeys):
        return f"set {', '.join(k for k, _ in op.values)} in [{name}]"
    if isinstance(op, DeleteTable):
        return f"remove [{name}]"
    return f"rename [{name}] to {op.new_name}"


Strategy = Callable[[str, Any], str]


def _strategies(op: Op, current: dict[str, Any]) -> list[Strategy]:
    if isinstance(op, SetArrayEntry):
        return [_set_array_entry, _append_array_entry]
    if isinstance(op, SetKeys):
        if not op.table:
            return [_set_top_level, _set_in_place]
        if get_table(current, op.table) is not None:
            return [_set_in_place]
        # A new table: appended at the end, where it disturbs nothing; tomlkit's own
        # placement next to its siblings as a fallback (an inline parent table).
        return [_append_table, _set_in_place]
    if isinstance(op, DeleteTable):
        return [_delete_with_tomlkit]
    return [_rename_headers, _move_and_append, _move_in_place]


def _set_in_place(text: str, op: SetKeys) -> str:
    doc = tomlkit.parse(text)
    node: Any = doc
    for i, key in enumerate(op.table):
        if key not in node:
            node[key] = _nested(op.table[i + 1 :], dict(op.values))
            return doc.as_string()
        node = node[key]
    for key, value in op.values:
        if key in node and _unwrap(node[key]) == value:
            continue  # unchanged values keep their exact spelling
        node[key] = _item(value)
    return doc.as_string()


def _set_top_level(text: str, op: SetKeys) -> str:
    """New top-level keys go after the last top-level key (tomlkit would put them just
    above the first table, between that table and the comment that introduces it)."""
    doc = tomlkit.parse(text)
    new: list[tuple[str, Any]] = []
    for key, value in op.values:
        if key in doc:
            if _unwrap(doc[key]) != value:
                doc[key] = _item(value)
        else:
            new.append((key, value))
    if not new:
        return doc.as_string()
    last = None
    for key, item in doc.body:
        if key is not None and not isinstance(item, (tomlkit.items.Table, tomlkit.items.AoT)):
            last = key
    if last is not None:
        for key, value in new:
            doc._insert_after(last, key, _item(value))  # private, but checked like all edits
            last = key
        return doc.as_string()
    lines = "".join(f"{tomlkit.key(k).as_string()} = {tomlkit.item(_item(v)).as_string()}\n"
                    for k, v in new)
    if not text.strip():
        return "".join(f"# {line}\n" for line in op.comment.splitlines()) + lines
    return _insert_before_tables(doc.as_string(), lines)


def _insert_before_tables(text: str, lines: str) -> str:
    """No top-level keys yet: after the file's opening comment block, when it is set off
    by a blank line (a header for the whole file), else at the very top."""
    head = re.match(r"(?:[ \t]*(?:#[^\n]*)?\n)*", text)
    leading = head[0] if head else ""
    cut = leading.rfind("\n\n") + 2 if "\n\n" in leading else 0
    rest = text[cut:]
    separator = "\n" if rest.strip() and not rest.startswith("\n") else ""
    return text[:cut] + lines + separator + rest


def _nested(path: TablePath, values: dict[str, Any]) -> dict[str, Any]:
    for key in reversed(path):
        values = {key: values}
    return values


def _unwrap(item: Any) -> Any:
    return item.unwrap() if hasattr(item, "unwrap") else item


def _item(value: Any) -> Any:
    """Our small tables (env_http_headers) as inline tables, as users write them."""
    if isinstance(value, Mapping):
        table = tomlkit.inline_table()
        table.update({k: _item(v) for k, v in value.items()})
        return table
    return value


def render_table(path: TablePath, values: Mapping[str, Any], comment: str = "") -> str:
    """A `[a.b]` table as text (sub-tables of a moved table become their own headers)."""
    doc = tomlkit.document()
    node: Any = doc
    for key in path[:-1]:
        node[key] = tomlkit.table(is_super_table=True)
        node = node[key]
    table = tomlkit.table()
    for key, value in values.items():
        table[key] = value if _has_table(value) else _item(value)
    node[path[-1]] = table
    body = doc.as_string().rstrip("\n") + "\n"
    prefix = "".join(f"# {line}\n" for line in comment.splitlines())
    return prefix + body


def _has_table(value: Any) -> bool:
    return isinstance(value, Mapping) and any(isinstance(v, Mapping) for v in value.values())


def _append_table(text: str, op: SetKeys) -> str:
    return _join_block(text, render_table(op.table, dict(op.values), op.comment))


def _join_block(text: str, block: str) -> str:
    """`block` after the text, set off by one blank line."""
    if not text.strip():
        return block
    if not text.endswith("\n"):
        text += "\n"
    if not text.endswith("\n\n"):
        text += "\n"
    return text + block


def _delete_with_tomlkit(text: str, op: DeleteTable) -> str:
    doc = tomlkit.parse(text)
    node: Any = doc
    for key in op.table[:-1]:
        node = node[key]
    del node[op.table[-1]]
    return doc.as_string()


_KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\')'


def _key_pattern(key: str) -> str:
    return rf'(?:{re.escape(key)}|"{re.escape(key)}"|\'{re.escape(key)}\')'


def _rename_headers(text: str, op: RenameTable) -> str:
    """Rename in the `[a.b]` / `[a.b.c]` / `[[a.b.c]]` header lines: text and comments stay."""
    *parents, last = op.table
    head = r"\s*\.\s*".join(_key_pattern(k) for k in parents)
    sep = r"\s*\.\s*" if parents else ""
    pattern = re.compile(
        rf"^(?P<pre>[ \t]*\[\[?[ \t]*{head}{sep})(?P<key>{_key_pattern(last)})(?=[ \t]*[.\]])",
        re.MULTILINE,
    )
    new_key = tomlkit.key(op.new_name).as_string()
    renamed, count = pattern.subn(lambda m: m["pre"] + new_key, text)
    if not count:
        raise ValueError("no header to rename")
    return renamed


def _move(text: str, op: RenameTable) -> tuple[str, SetKeys]:
    """Fallback (inline or dotted-key tables): remove it, then add it under the new name."""
    data = tomllib.loads(text)
    parent = get_table(data, op.table[:-1]) or {}
    values = parent[op.table[-1]]
    removed = _delete_with_tomlkit(text, DeleteTable(op.table))
    return removed, SetKeys.of((*op.table[:-1], op.new_name), values)


def _move_and_append(text: str, op: RenameTable) -> str:
    return _append_table(*_move(text, op))


def _move_in_place(text: str, op: RenameTable) -> str:
    return _set_in_place(*_move(text, op))


def _set_array_entry(text: str, op: SetArrayEntry) -> str:
    """With tomlkit: the matching entry's keys changed in place, else a new entry after
    the array's last one (an inline array gets an inline table)."""
    doc = tomlkit.parse(text)
    node: Any = doc
    for key in op.table[:-1]:
        node = node[key]
    entries = node[op.table[-1]]  # a KeyError (no such array) falls back to appending
    index = find_entry(entries, dict(op.match))
    if index is not None:
        entry = entries[index]
        for key, value in op.values:
            if key not in entry or _unwrap(entry[key]) != value:
                entry[key] = _item(value)
        return doc.as_string()
    values = {**dict(op.match), **dict(op.values)}
    if isinstance(entries, tomlkit.items.AoT):
        table = tomlkit.table()
        for key, value in values.items():
            table[key] = _item(value)
        before = entries.as_string()
        # Set off by blank lines: one before it, unless the last entry ends with one, and
        # one after it, unless nothing follows the array.
        table.trivia.indent = "" if before.endswith("\n\n") else "\n"
        if not text.rstrip().endswith(before.rstrip()):
            table.add(tomlkit.nl())
        entries.append(table)
        return doc.as_string()
    entries.append(_item(values))
    return doc.as_string()


def _append_array_entry(text: str, op: SetArrayEntry) -> str:
    """A new `[[a.b]]` entry at the end of the file, where it disturbs nothing."""
    return _join_block(text, render_array_entry(op.table, {**dict(op.match),
                                                           **dict(op.values)}))


def render_array_entry(path: TablePath, values: Mapping[str, Any]) -> str:
    header = ".".join(tomlkit.key(k).as_string() for k in path)
    lines = "".join(f"{tomlkit.key(k).as_string()} = {tomlkit.item(_item(v)).as_string()}\n"
                    for k, v in values.items())
    return f"[[{header}]]\n{lines}"


# --- showing an edit ---------------------------------------------------------------------

_SECRET_KEY = (
    r"[\w.-]*(?:api[_-]?key|token|secret|passw(?:or)?d|authorization|cookie|credential)[\w.-]*"
)
_SECRET_VALUE = re.compile(
    rf"""(?P<key>(?:"{_SECRET_KEY}"|'{_SECRET_KEY}'|{_SECRET_KEY})\s*=\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'[^']*')""",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"""^["'][A-Z_][A-Z0-9_]*["']$""")


def redact(line: str) -> str:
    """Hide what looks like a secret in a line of TOML (for diffs shown to the user).

    Values of secret-looking keys become "***" unless they are an environment variable's
    NAME (what env_key / env_http_headers hold); `Bearer x` and `user:pass@` too.
    """

    def hide(match: re.Match[str]) -> str:
        if _ENV_NAME.match(match["value"]):
            return match[0]
        return match["key"] + '"***"'

    line = _SECRET_VALUE.sub(hide, line)
    line = re.sub(r"(?i)\b(bearer|basic)\s+[^\s\"']+", r"\1 ***", line)
    return re.sub(r"(://)[^/@\s\"']+@", r"\1***@", line)


def unified_diff(old: str, new: str, *, label: str, shown: Any = "codex") -> str:
    """A unified diff of two texts, line endings shown as LF. In a TOML file of someone
    else's only the values this tool writes are shown (`shown`: "codex", or the
    (table, keys) pairs of another format, see provision/toml_shown.py), every other value
    is "***"; `shown=None` (a file that is the tool's own) hides only what looks like a
    secret, line by line."""
    keys = CODEX if shown == "codex" else shown

    def lines_of(text: str) -> list[str]:
        if not text:
            return []
        text = text.replace("\r\n", "\n")
        lines = shown_lines(text, keys) if keys is not None else \
            [redact(line) for line in text.split("\n")]
        return lines[:-1] if lines and lines[-1] == "" and text.endswith("\n") else lines

    diff = difflib.unified_diff(
        lines_of(old), lines_of(new),
        fromfile=f"{label} (before)" if old else "/dev/null",
        tofile=f"{label} (after)", lineterm="",
    )
    return "".join(line + "\n" for line in diff)

"""A tool's file, changed as carefully as Codex's config (provision.clients.codex): under
its lock, backed up, replaced atomically (safe_file); a dry run only shows the diff.
A TOML config is edited format-preserving and checked (toml_edit); a file of this
tool's own (an env file) is replaced whole."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from provision import safe_file
from provision.errors import UsageError
from provision.toml_edit import Op, decode, edit_text, loads, unified_diff

Planner = Callable[[dict[str, Any]], "tuple[Op, ...]"]
FileStatus = Literal["created", "changed", "unchanged", "would-create", "would-change"]


@dataclass(frozen=True)
class FileResult:
    """What happened to one file of a tool's (or would, in a dry run)."""

    path: str
    role: str  # "config", "profile" or "output"
    status: FileStatus
    backup: str | None = None
    diff: str = ""

    @property
    def changed(self) -> bool:
        return self.status != "unchanged"


def edit_toml_file(path: Path, plan: Planner, *, dry_run: bool = False,
                   role: str = "config", shown: Any = ()
                   ) -> tuple[FileResult, dict[str, Any]]:
    """Apply the ops `plan` makes from the file's current data; the result and the data
    as it is (or would be) after the edit. `shown`: the (table, keys) whose values the
    diff may show (provision/toml_shown.py); every other value is hidden."""
    path = _checked(path)

    def change(old: str) -> str:
        return edit_text(old, plan(loads(old, source=str(path))), source=str(path))

    with _lock(path, dry_run):
        result, new = _change(path, change, role, dry_run, shown)
    return result, loads(new, source=str(path))


def replace_file(path: Path, text: str, *, dry_run: bool = False,
                 role: str = "output") -> FileResult:
    path = _checked(path)
    with _lock(path, dry_run):
        return _change(path, lambda _old: text, role, dry_run, None)[0]


def _checked(path: Path) -> Path:
    path = Path(os.path.expanduser(str(path)))
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name")
    return path


def _lock(path: Path, dry_run: bool) -> Any:
    return contextlib.nullcontext() if dry_run else safe_file.locked(path)


def _change(path: Path, change: Callable[[str], str], role: str, dry_run: bool,
            shown: Any) -> tuple[FileResult, str]:
    state = safe_file.read_state(path)
    old = decode(state.raw, source=str(path)) if state.raw is not None else ""
    new = change(old)
    if old == new and state.exists:
        return FileResult(str(path), role, "unchanged"), new
    verb = "change" if state.exists else "create"
    diff = unified_diff(old, new, label=str(path), shown=shown)
    if dry_run:
        return FileResult(str(path), role, f"would-{verb}", None, diff), new
    if state.exists and not state.writable:
        raise UsageError(f"{path} is read-only: not changing it",
                         hint=f"make it writable (chmod u+w {path}) to let this tool edit it")
    safe_file.remove_stale_temps(state.real_path.parent, state.real_path.name)
    backup = safe_file.backup(state) if state.exists else None
    safe_file.write_atomic(state, new.encode("utf-8"))
    return FileResult(str(path), role, f"{verb}d", str(backup) if backup else None, diff), new

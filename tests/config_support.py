"""Helpers for the `config` tests: running the command, the corpus, the Codex binaries."""

from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from provision.cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "data" / "codex_configs"
CURRENT_CODEX = "0.171.0"  # .ci/install-codex CODEX_VERSION
OLD_CODEX = ("0.58.0", "0.94.0")
REQUIRE_CODEX = os.environ.get("OLLAMA_PROVISION_REQUIRE_CODEX") == "1"


def run_config(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["config", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def config_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_config(capsys, "--json", *args)
    return code, json.loads(out)


def corpus_text(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def home_with(tmp_path: Path, corpus: str | None = None, *, name: str = "home") -> Path:
    home = tmp_path / name
    home.mkdir()
    if corpus is not None:
        (home / "config.toml").write_bytes(corpus_text(corpus))
    return home


def load(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def without(data: dict[str, Any], *paths: tuple[str, ...]) -> dict[str, Any]:
    """The data with these keys taken out (and the tables left empty dropped)."""
    data = json.loads(json.dumps(data))
    for path in paths:
        node: Any = data
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return _pruned(data)


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        items = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v != {}}
    return value


def removed_lines(old: str, new: str) -> list[str]:
    """Lines of `old` that are not in `new` (deleted or replaced), line endings aside (a
    last line without one gets one when something is appended after it)."""
    a, b = old.splitlines(), new.splitlines()
    gone: list[str] = []
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag in ("delete", "replace"):
            gone.extend(a[i1:i2])
    return gone


def codex_bin(version: str | None = None) -> Path | None:
    """The pinned codex from .ci/install-codex (CODEX_BIN / CODEX_BIN_0_58_0 override)."""
    if version is None or version == CURRENT_CODEX:
        env, default = "CODEX_BIN", ROOT / ".ci/node/node_modules/.bin/codex"
    else:
        env = "CODEX_BIN_" + version.replace(".", "_")
        default = ROOT / f".ci/node/codex-{version}/node_modules/.bin/codex"
    path = Path(os.environ.get(env) or default)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def need_codex(version: str | None = None) -> Path:
    """The codex binary, or skip (fail when OLLAMA_PROVISION_REQUIRE_CODEX=1, as in CI)."""
    path = codex_bin(version)
    if path is None:
        why = (f"codex {version or CURRENT_CODEX} is not installed: run .ci/install-codex "
               "(or set CODEX_BIN)")
        if REQUIRE_CODEX:
            pytest.fail(why + " - OLLAMA_PROVISION_REQUIRE_CODEX=1 requires it")
        pytest.skip(why)
    return path

"""The installed Codex CLI: where it is, which release, and whether it loads a config.

Codex is the consumer of what `config` writes, so after writing we ask it:
`codex doctor --json` (0.131+) reports `checks["config.load"]`; older releases have no
doctor, and `codex mcp list` (which loads the config and touches nothing) fails with
the load error instead. Codex 0.134+ reads `--profile NAME` from NAME.config.toml, which
doctor does not load, so the profile gets its own `codex --profile NAME mcp list`.

Codex is run with proxies pointing at a closed local port: doctor's network checks
then fail at once instead of reaching out to OpenAI on the user's behalf (we read only
the config verdict), and nothing here ever waits on the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from provision.toml_edit import redact
from provision.versions import parse_version

VERSION_TIMEOUT_S = 15.0
CHECK_TIMEOUT_S = 30.0
_NO_NETWORK = "http://127.0.0.1:9"  # the discard port: refused at once


@dataclass(frozen=True)
class CodexInstall:
    binary: str | None  # None: no codex found
    version: str | None = None  # "0.169.0"; None when unknown
    problem: str | None = None  # why the version is unknown, for a warning


@dataclass(frozen=True)
class CodexCheck:
    """What the real Codex said about a config."""

    check: str  # the command that was asked, e.g. "codex doctor --json"
    status: Literal["ok", "fail", "error"]  # error: the check itself could not run
    message: str = ""


def find_codex(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return shutil.which("codex", path=env.get("PATH", os.defpath))


def detect(binary: str | None, environ: Mapping[str, str] | None = None) -> CodexInstall:
    """`codex --version` prints `codex-cli 0.169.0`."""
    if binary is None:
        return CodexInstall(None)
    try:
        done = _run([binary, "--version"], environ, timeout=VERSION_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CodexInstall(binary, None, f"`{binary} --version` failed: {_why(exc)}")
    parsed = parse_version(done.stdout)
    if done.returncode != 0 or parsed is None:
        text = (done.stdout + done.stderr).strip().splitlines()
        return CodexInstall(binary, None, f"`{binary} --version` said "
                            f"'{text[0][:80] if text else done.returncode}'")
    return CodexInstall(binary, ".".join(map(str, parsed)))


def doctor(binary: str, codex_home: Path, environ: Mapping[str, str] | None = None) -> CodexCheck:
    check = "codex doctor --json"
    try:
        done = _run([binary, "doctor", "--json"], environ, codex_home=codex_home)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CodexCheck(check, "error", _why(exc))
    try:
        report = json.loads(done.stdout[done.stdout.index("{"):])
        load = report["checks"]["config.load"]
    except (ValueError, KeyError, TypeError):
        return CodexCheck(check, "error", "no config.load check in its output: "
                       + _first_error(done.stderr or done.stdout))
    # "warning": loaded, with startup warnings (unknown keys, deprecated settings).
    status = "ok" if load.get("status") in ("ok", "warning") else "fail"
    details = load.get("details") if isinstance(load.get("details"), dict) else {}
    parts = [str(load.get("summary") or "")]
    if load.get("status") == "warning" and details.get("startup warning"):
        parts.append("Codex warns: " + " ".join(str(details["startup warning"]).split()))
    if details.get("error"):
        parts.append(str(details["error"]))
    if details.get("line"):
        parts.append(f"line {details['line']}, column {details.get('column', '?')}")
    return CodexCheck(check, status, redact("; ".join(p for p in parts if p)))


def load_check(
    binary: str,
    codex_home: Path,
    *,
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> CodexCheck:
    """`codex [--profile NAME] mcp list`: exit 0 when the config (and profile) loads."""
    args = [binary, *(["--profile", profile] if profile else []), "mcp", "list"]
    check = "codex " + " ".join(args[1:])
    try:
        done = _run(args, environ, codex_home=codex_home)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CodexCheck(check, "error", _why(exc))
    if done.returncode == 0:
        return CodexCheck(check, "ok", "config loaded")
    return CodexCheck(check, "fail", _first_error(done.stderr))


def _run(
    args: list[str],
    environ: Mapping[str, str] | None,
    *,
    codex_home: Path | None = None,
    timeout: float = CHECK_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ if environ is None else environ)
    if codex_home is not None:
        env["CODEX_HOME"] = str(codex_home)
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        env[key] = _NO_NETWORK
    for key in ("NO_PROXY", "no_proxy"):
        env.pop(key, None)
    env.update({"RUST_BACKTRACE": "0", "NO_COLOR": "1"})
    return subprocess.run(
        args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, check=False, errors="replace",
        cwd=str(codex_home) if codex_home is not None and codex_home.is_dir() else None,
    )


def _first_error(text: str) -> str:
    """The cause Codex prints (`Caused by:` then the reason), without backtrace noise."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("WARNING:")]
    if "Caused by:" in lines:
        after = lines[lines.index("Caused by:") + 1:]
        reason = next((line for line in after if not line.startswith("Stack backtrace")), "")
        if reason:
            return redact(reason)
    errors = [line for line in lines if line.lower().startswith("error")]
    return redact((errors or lines or ["no output"])[0])


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"no answer within {exc.timeout:g} s"
    return str(getattr(exc, "strerror", None) or exc)

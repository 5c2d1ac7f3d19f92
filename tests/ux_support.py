"""What the tests of a new user's first run share: the user's environment, their
manifest, an installed-but-stopped Ollama, and the test double's coding models.

The tests themselves (tests/test_ux_*.py) hold issue 13: each asserts what a user
notices, by running the CLI as its own process under a terminal or into a log
(tests/screen.py) against the test double.
"""

from __future__ import annotations

import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.double import OllamaTestServer, make_catalog_model
from tests.screen import SIZES, terminal_env
from tests.tool import ROOT

SIZE_IDS = [f"{columns}x{rows}" for columns, rows in SIZES]


SMALL = '[[models]]\nname = "llama3.2:1b"\nnum_ctx = 4096\n'
CODERS = (("qwen2.5-coder:32b", "32B"), ("qwen2.5-coder:14b", "14B"),
          ("qwen2.5-coder:7b", "7B"))
# A 2-core machine without a GPU, as issue 13 measured it: `hardware` estimates
# qwen2.5-coder:14b at 3.2-5.0 tokens/s and qwen2.5-coder:7b at 6.3-9.7 with this memory
# bandwidth (GB/s).
SLOW_CPU = "ram=24G,gpu=none,ram-bw=50"
# Where Ollama's installers put it: a machine with any of these has Ollama installed.
INSTALLED_AT = ("/usr/local/bin/ollama", "/usr/bin/ollama", "/etc/systemd/system/ollama.service",
                "/usr/lib/systemd/system/ollama.service", "/lib/systemd/system/ollama.service")


def user_env(home: Path, server: OllamaTestServer | str | None = None,
             **extra: str) -> dict[str, str]:
    """A new user's terminal session: a HOME of their own (Codex's config in ~/.codex),
    no `ollama` or `codex` on PATH, near-instant retry backoff. `server`: the Ollama at
    OLLAMA_HOST, which is also the registry the tool reads (a double is its own
    registry)."""
    home.mkdir(parents=True, exist_ok=True)
    env = terminal_env(HOME=str(home), PATH="/usr/bin:/bin",
                       OLLAMA_PROVISION_RETRY_BASE="0.01")
    for name in ("CODEX_HOME", "OLLAMA_MODELS", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_NUM_PARALLEL",
                 "XDG_STATE_HOME"):
        env.pop(name, None)
    if isinstance(server, OllamaTestServer):
        env.update(OLLAMA_HOST=server.url, OLLAMA_PROVISION_REGISTRY=server.url)
    elif server is not None:
        env["OLLAMA_HOST"] = server
    env.update(extra)
    return env


def short_dir() -> Path:
    """A folder with a path as short as a user's home (/home/alice): what the tool prints
    of it should not make a line too wide where a real home would not."""
    return Path(tempfile.mkdtemp(prefix="u13-"))


@pytest.fixture(name="home")
def home_fixture() -> Iterator[Path]:
    """A new user's home folder (import it into a test module as `home_fixture`)."""
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name="homes", scope="module")
def homes_fixture() -> Iterator[Callable[[], Path]]:
    """`homes()`: more home folders, for runs a module's tests share (import it as
    `homes_fixture`); removed after the module."""
    made: list[Path] = []

    def make() -> Path:
        made.append(short_dir())
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def manifest(folder: Path, text: str, name: str = "manifest.toml") -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def add_coders(srv: OllamaTestServer) -> None:
    """The built-in default's coding models, which the double's catalog lacks."""
    for name, params in CODERS:
        srv.add_model(make_catalog_model(name, arch="qwen2", params=params))


def installed_here() -> bool:
    """Ollama is installed on this machine (then "not installed" cannot be shown)."""
    return any(Path(p).exists() for p in INSTALLED_AT)


def stopped_ollama(folder: Path, *, serves: bool = False) -> str:
    """A folder for PATH holding an installed `ollama`; with `serves`, its `ollama serve`
    runs the test double on OLLAMA_HOST's port (else nothing ever listens)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "ollama"
    serve = (f'cd {ROOT}\nexec {sys.executable} -m tests.double --port "${{OLLAMA_HOST##*:}}"\n'
             if serves else "exit 1\n")
    exe.write_text(f'#!/bin/sh\n[ "$1" = serve ] || {{ echo "ollama version is 0.13.5"; '
                   f'exit 0; }}\n{serve}')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return f"{bin_dir}:/usr/bin:/bin"


SPEED = re.compile(r"(\d+(?:\.\d+)?) (B|KB|MB|GB)/s")
UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def speeds(row: str) -> list[float]:
    """Every speed a row shows, in bytes per second."""
    return [float(n) * UNITS[u] for n, u in SPEED.findall(row)]

"""The tool run as a user runs it against a real server: its own process, its own HOME,
nothing from the developer's shell pointing elsewhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.real.server import scrubbed_environ
from tests.real.shared import REPO


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: HOME of its own, no OLLAMA_MODELS (the tool has
    to learn where a server keeps models), nothing pointing elsewhere."""
    env = scrubbed_environ()
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), OLLAMA_PROVISION_RETRY_BASE="0.05", COLUMNS="80",
               TERM="dumb", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *args: str,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`ollama-provision ARGS` as its own process, stdin closed, output captured."""
    return subprocess.run([sys.executable, "-m", "provision", *args], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=str(REPO))

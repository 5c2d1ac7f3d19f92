"""The tool run as a user runs it against a real server: its own process, its own HOME,
nothing from the developer's shell pointing elsewhere."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

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


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`ollama-provision ARGS` started as its own process, to be interrupted."""
    return subprocess.Popen([sys.executable, "-m", "provision", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, cwd=str(REPO))


def interrupt_when(proc: subprocess.Popen[str], ready: Callable[[], bool],
                   timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Ctrl-C (SIGINT) as soon as `ready()`; what the process printed and its exit code."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
            proc.kill()
            raise AssertionError(f"never got to the point of interruption (exit "
                                 f"{proc.poll()}):\n{out[-2000:]}\n{err[-2000:]}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def one_error(stderr: str) -> str:
    """The single `error:` line a failure prints (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]

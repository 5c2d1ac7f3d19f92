"""The tool as its own process, measured: `run_cli(...)` reports its exit code, output,
wall time and peak RSS (`ru_maxrss` of that process alone, from `wait4`), what the tests
of hostile servers and `scripts/bench_hostile.py` measure; `cli_env` is the environment
of such a run, without the developer's proxies or servers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "Run", "cli_env", "run_cli"]



@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    seconds: float
    peak_rss: int  # bytes, the tool's process alone

    @property
    def peak_mb(self) -> float:
        return self.peak_rss / 1e6


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a test run: none of the developer's proxies or servers."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
           and k not in ("OLLAMA_HOST", "FORCE_COLOR", "OLLAMA_PROVISION_REGISTRY",
                         "CODEX_HOME")}
    env.update(extra)
    return env


# Forks and runs the tool, then reports the tool's own peak RSS. A launcher, because
# Linux carries the parent's memory high-water mark into a forked child's ru_maxrss
# (across exec too): measured straight from pytest, the tool would "use" pytest's size.
_LAUNCHER = """
import os, sys
report = sys.argv[1]
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
with open(report, "w") as f:
    f.write(f"{pid}\\n")
_, status, usage = os.wait4(pid, 0)
with open(report, "a") as f:
    f.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}\\n")
"""


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0,
            signal_after: tuple[float, int] | None = None,
            signal_when: tuple[Callable[[], bool], int] | None = None) -> Run:
    """`python -m provision ARGS` as its own process; killed (and reported with code -9)
    after `timeout` s. `signal_after=(seconds, signum)` sends it a signal meanwhile;
    `signal_when=(condition, signum)` as soon as the condition holds (polled)."""
    with tempfile.TemporaryDirectory() as work:
        report = Path(work) / "report"
        out_path, err_path = Path(work) / "out", Path(work) / "err"
        begin = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            launcher = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(report), sys.executable, "-m",
                 "provision", *args], cwd=ROOT, env=cli_env() if env is None else env,
                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        pid = _child_pid(report)
        timers: list[threading.Thread] = [threading.Timer(timeout, _kill,
                                                          (pid, signal.SIGKILL))]
        if signal_after is not None:
            timers.append(threading.Timer(signal_after[0], _kill, (pid, signal_after[1])))
        done = threading.Event()
        if signal_when is not None:
            timers.append(threading.Thread(target=_signal_when, daemon=True,
                                           args=(pid, *signal_when, done)))
        for timer in timers:
            timer.start()
        try:
            launcher.wait()
        finally:
            done.set()
            for timer in timers:
                if isinstance(timer, threading.Timer):
                    timer.cancel()
        seconds = time.monotonic() - begin
        maxrss, code = report.read_text().splitlines()[1].split()
        peak = int(maxrss) * (1 if sys.platform == "darwin" else 1024)
        return Run(int(code), out_path.read_text(errors="replace"),
                   err_path.read_text(errors="replace"), seconds, peak)


def _signal_when(pid: int, condition: Callable[[], bool], signum: int,
                 done: threading.Event) -> None:
    while not done.wait(0.02):
        if condition():
            _kill(pid, signum)
            return


def _child_pid(report: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(report.read_text().splitlines()[0])
        time.sleep(0.005)
    raise RuntimeError("the launcher did not start the tool")


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)

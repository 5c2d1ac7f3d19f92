"""Start a local `ollama serve` that is installed but not running, and wait for it.

The server is started detached (its own session), so it keeps running after this tool
exits, as `ollama serve &` would; its output goes to a log file whose path is reported.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from provision.errors import EXIT_UNREACHABLE, ProvisionError
from provision.host import ServerAddress
from provision.local_install import LocalInstall
from provision.probe import ProbeResult, wait_for_server


@dataclass(frozen=True)
class StartedServer:
    pid: int
    log_path: Path
    command: tuple[str, ...]
    result: ProbeResult


def default_log_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ollama-provision" / "ollama-serve.log"


def start_server(
    address: ServerAddress,
    install: LocalInstall,
    *,
    wait: float,
    log_path: Path | None = None,
    environ: dict[str, str] | None = None,
) -> StartedServer:
    if not address.is_loopback:
        raise ProvisionError(
            f"cannot start a server at {address.netloc}: it is not this machine",
            exit_code=EXIT_UNREACHABLE,
        )
    if not install.binary:
        raise ProvisionError(
            "cannot start Ollama: no `ollama` executable found"
            + (" (the macOS app starts it: open -a Ollama)" if install.mac_app else ""),
            exit_code=EXIT_UNREACHABLE,
        )
    env = dict(os.environ if environ is None else environ)
    env["OLLAMA_HOST"] = address.netloc  # serve exactly where we will look
    log = log_path or default_log_path(env)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = (install.binary, "serve")
    with open(log, "ab") as sink:
        sink.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} ollama-provision: "
                   f"OLLAMA_HOST={address.netloc} {' '.join(command)}\n".encode())
        sink.flush()
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            start_new_session=True,
        )
    deadline = time.monotonic() + max(wait, 1.0)
    result = wait_for_server(address, max(wait, 1.0))
    while not result.reachable and process.poll() is None and time.monotonic() < deadline:
        result = wait_for_server(address, deadline - time.monotonic())
    if not result.reachable:
        code = process.poll()
        tail = _tail(log)
        why = f"exited with code {code}" if code is not None else f"did not answer in {wait:g} s"
        raise ProvisionError(
            f"started `{' '.join(command)}` but it {why}; log: {log}"
            + (f": {tail}" if tail else ""),
            exit_code=EXIT_UNREACHABLE,
        )
    return StartedServer(pid=process.pid, log_path=log, command=command, result=result)


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])

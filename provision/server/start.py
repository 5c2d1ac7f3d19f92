"""Start a local `ollama serve` that is installed but not running, and wait for it.

The server is started detached (its own session), so it keeps running after this tool
exits, as `ollama serve &` would; its output goes to a log file whose path is reported.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from provision.errors import EXIT_NOT_READY, EXIT_UNREACHABLE, ProvisionError
from provision.output import printable
from provision.redact import in_text
from provision.safe_file import NEW_DIR_MODE, NEW_FILE_MODE, ensure_dir
from provision.server.client import OllamaServer
from provision.server.facts import ServerFacts
from provision.server.local_install import LocalInstall


@dataclass(frozen=True)
class StartedServer:
    pid: int
    log_path: Path
    command: tuple[str, ...]
    facts: ServerFacts


def default_log_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ollama-provision" / "ollama-serve.log"


def start_server(
    server: OllamaServer,
    install: LocalInstall,
    *,
    wait: float,
    log_path: Path | None = None,
) -> StartedServer:
    address = server.address
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
    env = dict(server.environ)
    env["OLLAMA_HOST"] = address.netloc  # serve exactly where we will look
    log = log_path or default_log_path(env)
    command = (install.binary, "serve")
    with _private_log(log) as sink:
        sink.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} ollama-provision: "
                   f"OLLAMA_HOST={address.netloc} {' '.join(command)}\n".encode())
        sink.flush()
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            start_new_session=True,
        )
    deadline = time.monotonic() + max(wait, 1.0)
    facts = server.wait_until_up(max(wait, 1.0))
    while not facts.reachable and process.poll() is None and time.monotonic() < deadline:
        facts = server.wait_until_up(deadline - time.monotonic())
    if not facts.reachable:
        code = process.poll()
        tail = _tail(log)
        why = f"exited with code {code}" if code is not None else f"did not answer in {wait:g} s"
        raise ProvisionError(
            f"started `{' '.join(command)}` but it {why}; log: {log}"
            + (f": {tail}" if tail else ""),
            exit_code=EXIT_UNREACHABLE,
        )
    return StartedServer(pid=process.pid, log_path=log, command=command, facts=facts)


def _private_log(path: Path) -> IO[bytes]:
    """The log, appended to: 0600 in a 0700 directory. Ollama writes its environment at
    start (proxy URLs with their passwords), so no one else may read it; a log or a folder
    of ours left wider by an older version is narrowed."""
    ensure_dir(path.parent)
    with contextlib.suppress(OSError):  # not ours to change (a shared XDG_STATE_HOME)
        if path.parent.name == "ollama-provision":
            os.chmod(path.parent, NEW_DIR_MODE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, NEW_FILE_MODE)
        os.fchmod(fd, NEW_FILE_MODE)
    except OSError as exc:
        raise ProvisionError(f"cannot write the server's log {path}: {exc.strerror}",
                             exit_code=EXIT_NOT_READY) from None
    return os.fdopen(fd, "ab")


def _tail(path: Path, lines: int = 1) -> str:
    """The log's last line(s), shown in an error: credentials hidden, at most 300 chars."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 64 * 1024))
            text = log.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return printable(in_text(" | ".join(line.strip() for line in text[-lines:])))[:300]

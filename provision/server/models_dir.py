"""Where the local Ollama server keeps its models, and how much room is left there.

The server itself is the authority, so for a server on this machine it is asked first:

1. `/api/show` of a model it has: the modelfile's `FROM <models>/blobs/sha256-...` line
   names the blob, and so the folder;
2. the environment of the `ollama serve` process listening on that port (its
   `OLLAMA_MODELS`, else its `HOME`), when this user may read it;

then the guesses: `OLLAMA_MODELS` in this environment, else the default for how Ollama
was installed: the Linux service install runs as the `ollama` user
(`/usr/share/ollama/.ollama/models`), everything else uses `~/.ollama/models`
(`%USERPROFILE%\\.ollama\\models` on Windows). Only meaningful for a server on this machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from provision.server.address import DEFAULT_PORT
from provision.server.client import OllamaServer, ServerError
from provision.server.local_install import LocalInstall, detect_install

log = logging.getLogger(__name__)

SERVICE_MODELS_DIR = "/usr/share/ollama/.ollama/models"
# Where each source is named for people ("12 GiB free in /srv/models (<this>)").
SOURCES = {
    "server": "as the server says",
    "server process": "the server's environment",
    "OLLAMA_MODELS": "OLLAMA_MODELS here, a guess",
    "service install": "service default, a guess",
    "default": "Ollama's default, a guess",
}


@dataclass(frozen=True)
class ModelsDir:
    path: Path
    source: str  # a key of SOURCES
    free_bytes: int | None  # free space on its file system (None: could not tell)

    @property
    def described(self) -> str:
        return SOURCES.get(self.source, self.source)


def models_dir(environ: dict[str, str] | None = None,
               install: LocalInstall | None = None,
               server: OllamaServer | None = None) -> ModelsDir:
    env = os.environ if environ is None else environ
    learned = server_models_dir(server) if server is not None and \
        server.address.is_loopback else None
    if learned is not None:
        path, source = learned
    elif env.get("OLLAMA_MODELS", "").strip():
        path, source = Path(env["OLLAMA_MODELS"].strip()).expanduser(), "OLLAMA_MODELS"
    else:
        install = install if install is not None else detect_install(environ=dict(env))
        if install.systemd_unit and Path(SERVICE_MODELS_DIR).parent.exists():
            path, source = Path(SERVICE_MODELS_DIR), "service install"
        else:
            home = env.get("USERPROFILE") if os.name == "nt" else None
            path = Path(home or Path.home()) / ".ollama" / "models"
            source = "default"
    return ModelsDir(path=path, source=source, free_bytes=free_space(path))


def server_models_dir(server: OllamaServer) -> tuple[Path, str] | None:
    """The models folder of this machine's server, as it says itself."""
    found = _from_show(server)
    if found is not None:
        return found, "server"
    found = _from_process(server.address.port)
    if found is not None:
        return found, "server process"
    return None


def _from_show(server: OllamaServer) -> Path | None:
    try:
        for model in server.tags().models[:3]:  # the first that names a blob file will do
            show = server.show(model.name)
            path = show.models_folder if show is not None else None
            if path is not None and path.is_dir():
                return path
    except ServerError as exc:
        log.debug("models folder: /api/show did not tell: %s", exc)
    return None


def _from_process(port: int) -> Path | None:
    """OLLAMA_MODELS (else HOME/.ollama/models) of the `ollama serve` on this port."""
    import psutil  # some 10 ms: only for a local server that did not say where

    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "serve" not in cmdline[1:2] or not (proc.info.get("name") or "").startswith("ollama"):
            continue
        with contextlib.suppress(psutil.Error, OSError):
            env = proc.environ()
            host = env.get("OLLAMA_HOST", "").strip().strip("\"'")
            listens = int(host.rsplit(":", 1)[1]) if re.search(r":\d+/?$", host) \
                else DEFAULT_PORT
            if listens != port:
                continue
            if env.get("OLLAMA_MODELS", "").strip():
                return Path(env["OLLAMA_MODELS"].strip()).expanduser()
            if env.get("HOME"):
                return Path(env["HOME"]) / ".ollama" / "models"
    return None


def free_space(path: Path) -> int | None:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    current = path
    while not current.exists() and current.parent != current:
        current = current.parent
    try:
        return shutil.disk_usage(current).free
    except OSError:
        return None

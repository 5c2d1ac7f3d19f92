"""Where the local Ollama server keeps its models, and how much room is left there.

`OLLAMA_MODELS` when set; else the default for how Ollama was installed: the Linux
service install runs as the `ollama` user (`/usr/share/ollama/.ollama/models`),
everything else uses `~/.ollama/models` (`%USERPROFILE%\\.ollama\\models` on Windows).
Only meaningful for a server on this machine.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from provision.local_install import LocalInstall, detect_install

SERVICE_MODELS_DIR = "/usr/share/ollama/.ollama/models"


@dataclass(frozen=True)
class ModelsDir:
    path: Path
    source: str  # "OLLAMA_MODELS", "service install" or "default"
    free_bytes: int | None  # free space on its file system (None: could not tell)


def models_dir(environ: dict[str, str] | None = None,
               install: LocalInstall | None = None) -> ModelsDir:
    env = os.environ if environ is None else environ
    if env.get("OLLAMA_MODELS", "").strip():
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


def free_space(path: Path) -> int | None:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    current = path
    while not current.exists() and current.parent != current:
        current = current.parent
    try:
        return shutil.disk_usage(current).free
    except OSError:
        return None

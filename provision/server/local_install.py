"""Is Ollama installed on this machine, and how would one start or install it?

Only consulted when a *local* server does not answer: a remote address tells us
nothing about this machine's install. Pure file-system checks, no subprocesses, so
the diagnosis stays instant.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

_UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
_BINARY_DIRS = ("usr/local/bin", "usr/bin", "opt/homebrew/bin", "usr/local/opt/ollama/bin")
_MAC_APPS = ("Applications/Ollama.app",)

INSTALL_STEPS = {
    "linux": [
        "curl -fsSL https://ollama.com/install.sh | sh",
        "(manual install without the script: https://github.com/ollama/ollama/blob/main/docs/linux.md)",
    ],
    "darwin": [
        "download the app: https://ollama.com/download/mac (then open it once)",
        "or: brew install ollama && ollama serve",
    ],
    "win32": [
        "download the installer: https://ollama.com/download/windows",
        "or: winget install Ollama.Ollama",
    ],
}
DOCKER_STEPS = [
    "docker run -d -v ollama:/root/.ollama -p 11434:11434 --name ollama ollama/ollama",
    "(with NVIDIA GPUs add --gpus=all)",
]


@dataclass(frozen=True)
class LocalInstall:
    binary: str | None = None  # path of the `ollama` executable
    systemd_unit: str | None = None  # path of ollama.service
    mac_app: str | None = None  # path of Ollama.app

    @property
    def installed(self) -> bool:
        return bool(self.binary or self.systemd_unit or self.mac_app)


def detect_install(
    *, root: str = "/", environ: dict[str, str] | None = None, platform: str = sys.platform
) -> LocalInstall:
    """Look for Ollama on PATH and in the places its installers put it.

    `root` lets tests point the fixed locations at a fake tree.
    """
    env = os.environ if environ is None else environ
    binary = shutil.which("ollama", path=env.get("PATH", os.defpath))
    base = Path(root)
    if binary is None:
        candidates = [base / d / "ollama" for d in _BINARY_DIRS]
        if platform == "win32" and env.get("LOCALAPPDATA"):
            candidates.append(Path(env["LOCALAPPDATA"]) / "Programs" / "Ollama" / "ollama.exe")
        binary = next((str(p) for p in candidates if p.is_file()), None)
    unit = None
    if platform.startswith("linux"):
        unit = next(
            (str(base / d / "ollama.service") for d in _UNIT_DIRS
             if (base / d / "ollama.service").is_file()),
            None,
        )
    app = None
    if platform == "darwin":
        homes = [base / a for a in _MAC_APPS] + [Path.home() / a for a in _MAC_APPS]
        app = next((str(p) for p in homes if p.is_dir()), None)
    return LocalInstall(binary=binary, systemd_unit=unit, mac_app=app)


def start_steps(install: LocalInstall, platform: str = sys.platform) -> list[str]:
    """The exact command(s) that start the installed server on this system."""
    if install.systemd_unit:
        return ["sudo systemctl start ollama", "(logs: journalctl -u ollama -e)"]
    if install.mac_app:
        return ["open -a Ollama"]
    if platform == "win32":
        return ["start the Ollama app from the Start menu, or run: ollama serve"]
    return ["ollama serve   (keep it running; or in the background: nohup ollama serve "
            ">ollama.log 2>&1 &)"]


def install_steps(platform: str = sys.platform) -> list[str]:
    key = "linux" if platform.startswith("linux") else platform
    steps = list(INSTALL_STEPS.get(key, ["see https://ollama.com/download"]))
    if key != "win32":
        steps += ["or with Docker: " + DOCKER_STEPS[0]]
    return steps

"""Where the real components are, whether they can run here, and a runnable copy.

`OLLAMA_PROVISION_SHARED` overrides where they are: it may name the shared folder
(`.../shared`, which holds `ollama/`) or that `ollama` folder itself; both are read
the same way. Unset, it is `../shared/ollama` beside the repository, as CI checks it
out. When the real server cannot run here the tests that need it skip, saying why;
`OLLAMA_PROVISION_REQUIRE_OLLAMA=1` (CI) turns that into a failure.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_ENV = "OLLAMA_PROVISION_SHARED"
REQUIRE_ENV = "OLLAMA_PROVISION_REQUIRE_OLLAMA"
TINY = "tiny:latest"


def shared_ollama() -> Path:
    """The folder holding bin/ollama, lib/ollama, models/, tiny.gguf and registry/."""
    base = os.environ.get(SHARED_ENV)
    root = Path(base) if base else REPO / ".." / "shared"
    return (root if (root / "bin" / "ollama").is_file() else root / "ollama").resolve()


def why_no_server() -> str | None:
    """Why the real server cannot run on this machine (None: it can)."""
    binary = shared_ollama() / "bin" / "ollama"
    if not binary.is_file():
        return f"no Ollama binary at {binary} (the shared components are not there; " \
               f"{SHARED_ENV} says where they are)"
    if not sys.platform.startswith("linux"):
        return "the shared Ollama build is for Linux"
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "cannot read /proc/cpuinfo to check the CPU"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    missing = [f for f in ("avx2", "fma", "f16c") if f not in flags]
    if missing:
        return f"this CPU lacks {', '.join(missing)}, which the shared Ollama build needs"
    return None


def require_server() -> None:
    """Skip the test when the real server cannot run here, or fail where CI needs it."""
    import pytest

    reason = why_no_server()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but the real Ollama cannot run: {reason}")
    pytest.skip(f"real Ollama not available: {reason}")


def runnable_copy(dest: Path) -> Path:
    """bin/ollama + lib/ollama laid out in `dest` so that the server can start
    llama-server; returns `dest` (what `RealOllama` takes).

    The server finds lib/ollama beside its own executable. A copy of shared/ made without
    symlink support holds each library link as a small text file naming its target
    (`libllama.so.0` containing `libllama.so.0.1.0`), which the dynamic loader rejects
    ("file too short"): such files become real symlinks again here. Everything else is
    hard-linked where it can be (no bytes copied).
    """
    src = shared_ollama()
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    (dest / "lib" / "ollama").mkdir(parents=True, exist_ok=True)
    link_or_copy(src / "bin" / "ollama", dest / "bin" / "ollama")
    for item in sorted((src / "lib" / "ollama").iterdir()):
        target = dest / "lib" / "ollama" / item.name
        if item.is_symlink():
            target.symlink_to(os.readlink(item))
        elif item.is_file() and item.stat().st_size < 256:
            name = item.read_bytes().strip().decode("ascii", "replace")
            if "/" not in name and (item.parent / name).exists():
                target.symlink_to(name)
            else:
                link_or_copy(item, target)
        elif item.is_file():
            link_or_copy(item, target)
    return dest


def writable_copy(source: Path, target: Path) -> Path:
    """A copy of a read-only folder (shared/ is read-only in CI) a server can write to."""
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return target


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)

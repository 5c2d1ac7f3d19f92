"""Real components for the integration tests: Ollama 0.32.15, its registry, the CLI.

`../shared/ollama` (beside the repository; `OLLAMA_PROVISION_SHARED` overrides) holds a
real Ollama build, a tiny model and a real OCI registry (see its README). Nothing here
imitates them: servers are started as processes, each with its own port, models folder
and HOME, and the CLI runs as a separate process against them, as a user runs it.

When the server cannot run here (no binary, a CPU without AVX2/FMA/F16C) the tests are
skipped with the reason; with OLLAMA_PROVISION_REQUIRE_OLLAMA=1 (set by .ci/run) that
is a failure instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRE_ENV = "OLLAMA_PROVISION_REQUIRE_OLLAMA"
TINY = "tiny:latest"
# Variables from the developer's shell that would point the CLI or a server elsewhere.
_SCRUBBED = ("OLLAMA_HOST", "OLLAMA_MODELS", "OLLAMA_PROVISION_REGISTRY", "HTTP_PROXY",
             "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy",
             "FORCE_COLOR", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "CODEX_HOME",
             "OLLAMA_CONTEXT_LENGTH", "OLLAMA_NUM_PARALLEL", "OLLAMA_KV_CACHE_TYPE",
             "OLLAMA_FLASH_ATTENTION", "OLLAMA_KEEP_ALIVE")


def shared_ollama() -> Path:
    """OLLAMA_PROVISION_SHARED names the ollama folder itself (as tests/real_ollama.py
    reads it) or the shared folder holding it; default ../shared/ollama."""
    base = os.environ.get("OLLAMA_PROVISION_SHARED")
    root = Path(base) if base else REPO / ".." / "shared"
    return (root if (root / "bin" / "ollama").is_file() else root / "ollama").resolve()


def why_no_server() -> str | None:
    """Why the real server cannot run on this machine (None: it can)."""
    binary = shared_ollama() / "bin" / "ollama"
    if not binary.is_file():
        return f"no Ollama binary at {binary} (the shared components are not there)"
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
    reason = why_no_server()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but the real Ollama cannot run: {reason}")
    pytest.skip(f"real Ollama not available: {reason}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runnable_copy(dest: Path) -> Path:
    """bin/ollama + lib/ollama laid out so that the server can start llama-server.

    The server finds lib/ollama beside its own executable. A copy of shared/ made without
    symlink support holds each library link as a small text file naming its target
    (`libllama.so.0` containing `libllama.so.0.1.0`), which the dynamic loader rejects
    ("file too short"): such files become real symlinks again here.
    """
    src = shared_ollama()
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    (dest / "lib" / "ollama").mkdir(parents=True, exist_ok=True)
    _link_or_copy(src / "bin" / "ollama", dest / "bin" / "ollama")
    for item in sorted((src / "lib" / "ollama").iterdir()):
        target = dest / "lib" / "ollama" / item.name
        if item.is_symlink():
            target.symlink_to(os.readlink(item))
        elif item.is_file() and item.stat().st_size < 256:
            name = item.read_bytes().strip().decode("ascii", "replace")
            if "/" not in name and (item.parent / name).exists():
                target.symlink_to(name)
            else:
                _link_or_copy(item, target)
        elif item.is_file():
            _link_or_copy(item, target)
    return dest


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _get(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


def post(url: str, body: dict[str, Any], timeout: float = 60.0) -> Any:
    """POST JSON and return the decoded answer (the last line of a stream)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        lines = [line for line in response.read().decode().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


@dataclass
class RealOllama:
    """One `ollama serve` process: its own port, models folder, HOME and log."""

    dist: Path
    root: Path
    models_from: Path | None = None  # copied into the models folder before starting
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def log(self) -> Path:
        return self.root / "serve.log"

    def start(self) -> RealOllama:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "home").mkdir(exist_ok=True)
        if not self.models.exists():
            if self.models_from is not None:
                shutil.copytree(self.models_from, self.models)
                for path in [self.models, *self.models.rglob("*")]:
                    path.chmod(path.stat().st_mode | 0o200)
            else:
                self.models.mkdir()
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        env.update(OLLAMA_HOST=self.host, OLLAMA_MODELS=str(self.models),
                   HOME=str(self.root / "home"), **self.env)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.dist / "bin" / "ollama"), "serve"], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ollama serve exited ({self.process.returncode}):\n"
                                   + self.log_tail())
            with contextlib.suppress(OSError, ValueError):
                _get(self.url + "/api/version", timeout=1)
                return self
            time.sleep(0.1)
        raise RuntimeError("ollama serve did not answer in 30 s:\n" + self.log_tail())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # Its own session: llama-server children go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    # -- the server's own API, for arranging and checking (not what is under test) --

    def api(self, path: str, body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        if body is None:
            return _get(self.url + path, timeout=timeout)
        return post(self.url + path, body, timeout=timeout)

    def names(self) -> list[str]:
        return sorted(m["name"] for m in self.api("/api/tags")["models"])

    def loaded(self) -> list[dict[str, Any]]:
        return list(self.api("/api/ps")["models"])

    def delete(self, name: str) -> None:
        request = urllib.request.Request(
            self.url + "/api/delete", data=json.dumps({"model": name}).encode(),
            method="DELETE", headers={"Content-Type": "application/json"})
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=30).read()  # noqa: S310

    def ollama(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The real `ollama` CLI against this server (cp, push, create)."""
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        env.update(OLLAMA_HOST=self.host, HOME=str(self.root / "home"))
        return subprocess.run([str(self.dist / "bin" / "ollama"), *args], env=env,
                              capture_output=True, text=True, timeout=timeout, check=True)

    def publish(self, name: str, registry: Registry, ref: str) -> str:
        """Copy `name` to the registry as `ref` (`library/tiny:latest`) and push it."""
        target = f"{registry.host}/{ref}"
        self.ollama("cp", name, target)
        self.ollama("push", "--insecure", target)
        return target


@dataclass
class Registry:
    """The shared real OCI registry (docker distribution) with its redirecting front."""

    state: Path
    port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        script = shared_ollama() / "registry" / "start.sh"
        out = subprocess.run(["bash", str(script), str(self.state)], capture_output=True,
                             text=True, timeout=60, check=True)
        self.port = int(out.stdout.strip().splitlines()[-1])
        return self

    def stop(self) -> None:
        subprocess.run(["bash", str(shared_ollama() / "registry" / "stop.sh"),
                        str(self.state)], capture_output=True, timeout=30, check=False)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: HOME of its own, no OLLAMA_MODELS (the tool has
    to learn where a server keeps models), nothing pointing elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
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


@contextlib.contextmanager
def servers(dist: Path, root: Path, count: int, *, with_tiny: bool = True,
            **env: str) -> Iterator[list[RealOllama]]:
    started: list[RealOllama] = []
    try:
        for i in range(count):
            srv = RealOllama(dist, root / f"ollama-{i}",
                             models_from=shared_ollama() / "models" if with_tiny else None,
                             env=dict(env))
            started.append(srv.start())
        yield started
    finally:
        for srv in started:
            srv.stop()


def create_from_gguf(srv: RealOllama, name: str, gguf_path: Path, *,
                     parameters: dict[str, Any] | None = None) -> str:
    """Create model `name` on `srv` from a GGUF file, as `ollama create` does: the blob
    goes into the server's store (linked there, not sent over HTTP: it may be GBs), then
    /api/create names it. Returns the blob's digest."""
    from tests.integration.synthetic_gguf import sha256_file

    digest = sha256_file(gguf_path)
    blob = srv.models / "blobs" / digest.replace(":", "-")
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        _link_or_copy(gguf_path, blob)
    body: dict[str, Any] = {"model": name, "files": {gguf_path.name: digest}, "stream": False}
    if parameters:
        body["parameters"] = parameters
    answer = srv.api("/api/create", body, timeout=600)
    if not isinstance(answer, dict) or answer.get("status") != "success":
        raise RuntimeError(f"create {name}: {answer}")
    return digest


def load(srv: RealOllama, name: str, num_ctx: int) -> dict[str, Any]:
    """Load `name` at `num_ctx` (no generation) and return its /api/ps entry."""
    srv.api("/api/generate", {"model": name, "prompt": "", "stream": False,
                              "options": {"num_ctx": num_ctx}}, timeout=600)
    return next(m for m in srv.loaded() if m["name"].startswith(name))


def unload(srv: RealOllama, name: str) -> None:
    srv.api("/api/generate", {"model": name, "keep_alive": 0, "stream": False}, timeout=120)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(m["name"].startswith(name)
                                              for m in srv.loaded()):
        time.sleep(0.1)

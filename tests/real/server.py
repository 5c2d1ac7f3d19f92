"""`RealOllama`: one real `ollama serve` process, with its own port, models folder, HOME
and log; and what tests do to arrange one (load, unload, create from a GGUF file)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.real.gguf import sha256_file
from tests.real.shared import link_or_copy, shared_ollama, writable_copy

if TYPE_CHECKING:
    from tests.real.registry import Registry

# Variables from the developer's shell that would point the CLI or a server elsewhere.
SCRUBBED = ("OLLAMA_HOST", "OLLAMA_MODELS", "OLLAMA_PROVISION_REGISTRY", "HTTP_PROXY",
            "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy",
            "FORCE_COLOR", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "CODEX_HOME",
            "OLLAMA_CONTEXT_LENGTH", "OLLAMA_NUM_PARALLEL", "OLLAMA_KV_CACHE_TYPE",
            "OLLAMA_FLASH_ATTENTION", "OLLAMA_KEEP_ALIVE")


_FROM_BLOB = re.compile(r"^FROM \S*sha256[-:]([0-9a-f]{64})$", re.MULTILINE)


def model_facts(show: dict[str, Any]) -> dict[str, Any]:
    """What a user can tell about a model from `/api/show`: its weights, prompt,
    parameters, licence, details and abilities (what must match between a pulled copy
    and one provisioned another way)."""
    found = _FROM_BLOB.search(str(show.get("modelfile") or ""))
    return {"weights": f"sha256:{found.group(1)}" if found else None,
            **{key: show.get(key) for key in ("template", "system", "parameters", "license",
                                              "details", "capabilities")}}


def scrubbed_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in SCRUBBED}


def closed_proxies() -> dict[str, str]:
    """Proxy variables pointing at a loopback port where nothing listens. A real server
    reaches for ollama.com at start (recommendations, cloud tags): through these it fails
    at once on this machine, so tests send traffic only to loopback (which Go's and the
    tool's HTTP clients never proxy)."""
    closed = f"http://127.0.0.1:{free_port()}"
    return {"HTTPS_PROXY": closed, "HTTP_PROXY": closed, "https_proxy": closed,
            "http_proxy": closed, "NO_PROXY": "", "no_proxy": ""}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RealOllama:
    """`ollama serve` from `dist` (a `runnable_copy`), under `root`: `root/models` (or
    `models`), filled from `models_from` when given; `root/home`; `root/serve.log`.
    `prefix` runs the server under another command (e.g. in a mount namespace)."""

    def __init__(self, dist: Path, root: Path, *, models_from: Path | None = None,
                 models: Path | None = None, prefix: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        self.dist = dist
        self.root = root
        self.models = models or root / "models"
        self.models_from = models_from
        self.prefix = list(prefix)
        self.extra_env = dict(env or {})
        self.offline = closed_proxies()
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def binary(self) -> Path:
        return self.dist / "bin" / "ollama"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "serve.log"

    @property
    def env(self) -> dict[str, str]:
        """The server's environment (also the real `ollama` client's, with `ollama`)."""
        return {**scrubbed_environ(), **self.offline, "OLLAMA_HOST": self.host,
                "OLLAMA_MODELS": str(self.models), "HOME": str(self.root / "home"),
                **self.extra_env}

    def start(self) -> RealOllama:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "home").mkdir(exist_ok=True)
        if not self.models.exists():
            if self.models_from is not None:
                writable_copy(self.models_from, self.models)
            else:
                self.models.mkdir(parents=True)
        self.port = free_port()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, str(self.binary), "serve"], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ollama serve exited ({self.process.returncode}):\n"
                                   + self.log_tail())
            with contextlib.suppress(OSError, ValueError):
                self.api("/api/version", timeout=1)
                return self
            time.sleep(0.1)
        self.stop()
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

    def api(self, path: str, body: dict[str, Any] | None = None, *, method: str | None = None,
            timeout: float = 60) -> Any:
        """GET (no body) or POST JSON; the decoded answer (the last line of a stream).
        An HTTP error status raises `urllib.error.HTTPError`."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            lines = [line for line in response.read().decode().splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None

    def show(self, name: str) -> dict[str, Any]:
        return self.api("/api/show", {"model": name})

    def weights(self, name: str) -> str | None:
        """`sha256:<hex>` of the weights the server uses for `name` (the FROM line of its
        modelfile, as `/api/show` gives it), None when it has no such model."""
        try:
            modelfile = str(self.show(name).get("modelfile") or "")
        except urllib.error.HTTPError:
            return None
        found = _FROM_BLOB.search(modelfile)
        return f"sha256:{found.group(1)}" if found else None

    def tags(self) -> dict[str, str]:
        """name -> manifest digest, as /api/tags lists them (newest first)."""
        return {m["name"]: m["digest"] for m in self.api("/api/tags")["models"]}

    def names(self) -> list[str]:
        return sorted(self.tags())

    def loaded(self) -> list[dict[str, Any]]:
        return list(self.api("/api/ps")["models"])

    def generate(self, name: str) -> dict[str, Any]:
        """A short generation that unloads the model after."""
        return self.api("/api/generate", {"model": name, "prompt": "Say hi", "stream": False,
                                          "options": {"num_predict": 4}, "keep_alive": 0},
                        timeout=120)

    def delete(self, name: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            self.api("/api/delete", {"model": name}, method="DELETE", timeout=30)

    def blob_files(self) -> list[str]:
        folder = self.models / "blobs"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def blob_posts(self) -> int:
        """Blob uploads the server received (its own request log)."""
        return self.log.read_text(errors="replace").count('POST     "/api/blobs/')

    def ollama(self, *args: str, cwd: Path | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The real `ollama` CLI against this server (cp, push, create); it must succeed."""
        done = subprocess.run([str(self.binary), *args], env=self.env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"ollama {' '.join(args)}: {done.stderr[-500:]}")
        return done

    def publish(self, name: str, registry: Registry, ref: str) -> str:
        """Copy `name` to the registry as `ref` (`library/tiny:latest`) and push it;
        returns the name it has there."""
        target = f"{registry.host}/{ref}"
        self.ollama("cp", name, target)
        self.ollama("push", "--insecure", target)
        return target


@contextlib.contextmanager
def servers(dist: Path, root: Path, count: int, *, with_tiny: bool = True,
            **env: str) -> Iterator[list[RealOllama]]:
    """`count` started servers (holding `tiny` unless told not to), stopped after."""
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
    digest = sha256_file(gguf_path)
    blob = srv.models / "blobs" / digest.replace(":", "-")
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        link_or_copy(gguf_path, blob)
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

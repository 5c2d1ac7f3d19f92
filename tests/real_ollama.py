"""The real Ollama and the real registry from ../shared/ollama, for tests and benchmarks.

`install()` finds the real `ollama` binary (OLLAMA_PROVISION_SHARED overrides where the
shared folder is); `RealOllama` runs one server with its own port, models folder and
HOME; `RealRegistry` runs the OCI registry with Ollama's redirect in front.

When the real server cannot run here the tests skip, saying why; CI sets
OLLAMA_PROVISION_REQUIRE_OLLAMA=1 to make that a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.ollama_server import free_port

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OLLAMA_PROVISION_SHARED") or REPO / ".." / "shared" / "ollama")
REQUIRE_ENV = "OLLAMA_PROVISION_REQUIRE_OLLAMA"
NEEDED_CPU_FLAGS = ("avx2", "fma", "f16c")


class Unavailable(Exception):
    """The real component cannot run here (the reason is the message)."""


def unavailable(reason: str) -> None:
    """Skip, or fail when CI requires the real server."""
    import pytest

    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


def install(scratch: Path) -> Path:
    """The `ollama` binary to run. Copies of the shared folder can lose their symbolic
    links (each becomes a small file holding its target's name, and llama-server then
    fails with `file too short`): those get a copy in `scratch` with the links made again."""
    binary = SHARED / "bin" / "ollama"
    if not binary.is_file():
        raise Unavailable(f"no real Ollama at {SHARED} (set OLLAMA_PROVISION_SHARED)")
    flags = _cpu_flags()
    missing = [f for f in NEEDED_CPU_FLAGS if flags and f not in flags]
    if missing:
        raise Unavailable(f"this CPU lacks {', '.join(missing)}, which the real Ollama needs")
    lib = SHARED / "lib" / "ollama"
    if not any(_flattened_link(p) for p in lib.iterdir()) if lib.is_dir() else True:
        return binary
    root = scratch / "ollama"
    if not (root / "bin" / "ollama").exists():
        for part in ("bin", "lib/ollama"):
            (root / part).mkdir(parents=True, exist_ok=True)
            for source in (SHARED / part).iterdir():
                target = root / part / source.name
                link = _flattened_link(source)
                if link:
                    target.symlink_to(link)
                else:
                    shutil.copy2(source, target)
    return root / "bin" / "ollama"


def _flattened_link(path: Path) -> str | None:
    if not path.is_file() or path.is_symlink() or path.stat().st_size > 255:
        return None
    try:
        text = path.read_text().strip()
    except (UnicodeDecodeError, OSError):
        return None
    return text if text and "/" not in text and (path.parent / text).is_file() else None


def _cpu_flags() -> set[str]:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()  # not Linux: let the server itself tell
    line = next((x for x in info.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


class RealOllama:
    """`ollama serve` on a loopback port of its own, stopped by its process id."""

    def __init__(self, binary: Path, root: Path, *, models: Path | None = None,
                 prefix: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.binary = binary
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.models = models or root / "models"
        self.models.mkdir(parents=True, exist_ok=True)
        (root / "home").mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "serve.log"
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "HOME": str(root / "home"), "OLLAMA_HOST": f"127.0.0.1:{self.port}",
                    "OLLAMA_MODELS": str(self.models), **(env or {})}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([*prefix, str(binary), "serve"], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"the real Ollama did not start: {self.log_tail()}")
            try:
                if self.api("GET", "/api/version")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise Unavailable(f"the real Ollama did not answer within 30 s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def api(self, method: str, path: str, body: Any = None,
            timeout: float = 120) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def show(self, name: str) -> dict[str, Any]:
        status, body = self.api("POST", "/api/show", {"model": name})
        assert status == 200, body
        return body

    def tags(self) -> dict[str, str]:
        """name → manifest digest, as /api/tags lists them."""
        return {m["name"]: m["digest"] for m in self.api("GET", "/api/tags")[1]["models"]}

    def generate(self, name: str) -> dict[str, Any]:
        status, body = self.api("POST", "/api/generate", {
            "model": name, "prompt": "Say hi", "stream": False,
            "options": {"num_predict": 4}, "keep_alive": 0})
        assert status == 200, body
        return body

    def blob_files(self) -> list[str]:
        folder = self.models / "blobs"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def blob_posts(self) -> int:
        """Blob uploads the server received (its own request log)."""
        return self.log.read_text(errors="replace").count('POST     "/api/blobs/')

    def cli(self, *args: str, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The real `ollama` client against this server."""
        done = subprocess.run([str(self.binary), *args], env=self.env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"ollama {' '.join(args)}: {done.stderr[-500:]}"
        return done

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the session it leads: its runners too
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class RealRegistry:
    """The real OCI registry (docker distribution) behind Ollama's redirect proxy."""

    def __init__(self, state: Path) -> None:
        self.state = state
        done = subprocess.run(["bash", str(SHARED / "registry" / "start.sh"), str(state)],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise Unavailable(f"the real registry did not start: {done.stderr.strip()[-300:]}")
        self.port = int(done.stdout.strip())
        self.host = f"127.0.0.1:{self.port}"

    def name(self, model: str) -> str:
        return f"{self.host}/library/{model}"

    def blob_gets(self) -> int:
        """Blob downloads asked of the registry: its proxy logs the redirect that answers
        each one first (not the redirected request itself)."""
        log = self.state / "run" / "proxy.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return sum(1 for x in text.splitlines()
                   if '"GET /v2/' in x and "/blobs/" in x and x.endswith(" 307 -"))

    def stop(self) -> None:
        subprocess.run(["bash", str(SHARED / "registry" / "stop.sh"), str(self.state)],
                       capture_output=True, timeout=60)


def publish(server: RealOllama, registry: RealRegistry, local: str, remote: str) -> str:
    """Push a model the server has to the registry as `remote` (ollama cp + push)."""
    name = registry.name(remote)
    server.cli("cp", local, name)
    server.cli("push", "--insecure", name)
    return name


def synthetic_gguf(path: Path, extra_bytes: int, seed: int) -> Path:
    """`tiny`'s GGUF plus an unused tensor of `extra_bytes` (filled with `seed`): a model
    large enough to interrupt, that Ollama creates but cannot load (the extra tensor)."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(SHARED / "tiny.gguf")
    writer = gguf.GGUFWriter(str(path), arch=reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    count = extra_bytes // 2
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype,
                               tensor.data.nbytes, tensor.tensor_type)
    writer.add_tensor_info("pad.weight", (count,), np.dtype(np.float16), count * 2,
                           gguf.GGMLQuantizationType.F16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data)
    # The padding tensor in 1 MiB pieces (a model of several GB is never in memory).
    out = writer.fout[0]
    writer.tensors[0].pop("pad.weight")
    writer.write_padding(out, out.tell())
    piece = np.full((1 << 19,), seed, dtype=np.float16).tobytes()
    left = count * 2
    while left > 0:
        out.write(piece[:left])
        left -= len(piece)
    writer.write_padding(out, count * 2)
    writer.close()
    return path

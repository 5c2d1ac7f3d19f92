"""The real OCI registry (docker distribution) from the shared folder, behind the
redirecting front Ollama needs (see the shared folder's README)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.real.shared import shared_ollama


class Registry:
    """`registry/start.sh STATE` .. `stop.sh STATE`; models are pushed to it as
    `<host>/library/<model>:<tag>` with `--insecure`."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        done = subprocess.run(["bash", str(shared_ollama() / "registry" / "start.sh"),
                               str(self.state)], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"the real registry did not start: {done.stderr.strip()[-300:]}")
        self.port = int(done.stdout.strip().splitlines()[-1])
        return self

    def stop(self) -> None:
        subprocess.run(["bash", str(shared_ollama() / "registry" / "stop.sh"), str(self.state)],
                       capture_output=True, timeout=60, check=False)

    def blob_gets(self) -> int:
        """Blob downloads asked of the registry: its front logs the redirect that answers
        each one first (not the redirected request itself)."""
        log = self.state / "run" / "proxy.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return sum(1 for x in text.splitlines()
                   if '"GET /v2/' in x and "/blobs/" in x and x.endswith(" 307 -"))

    def manifest(self, ref: str) -> dict[str, Any]:
        """The manifest it serves for `repository:tag` (`library/tiny:latest`)."""
        repository, tag = ref.rsplit(":", 1)
        request = urllib.request.Request(
            f"http://{self.host}/v2/{repository}/manifests/{tag}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())

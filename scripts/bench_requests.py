"""Benchmark: requests the tool sends to an Ollama server, per endpoint, per command.

Runs the CLI as its own process (`python -m provision`) against the test double (which
records every request it answers) and prints, for each case, how many requests went to
each Ollama endpoint, and to the registry:

- `check MODEL`;
- `apply` of 1 and of 5 models: fresh (nothing installed) and no-op (run again);
- `apply` of 3 `choose` candidates and 1 named model (the case of issue 12);
- `fleet` of 3 hosts and 2 models, fresh and no-op: per host.

The goal for a no-op `apply`: at most one each of `/api/version`, `/api/tags`,
`/api/ps`, one `/api/show` per model and one load and one generation per model.

    python scripts/bench_requests.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.double import OllamaTestServer  # noqa: E402

GIB = 1 << 30
FIVE = ("llama3.2:1b", "qwen2.5:0.5b", "llama3.2:3b", "tiny", "nomic-embed-text")


def run(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "provision", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True,
                          timeout=300)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)}: exit {done.returncode}\n{done.stderr}")


def counts(srv: OllamaTestServer, since: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for rec in srv.requests[since:]:
        path = rec.path
        if path.startswith(("/v2/", "/token")):
            path = "registry"
        elif path.startswith("/api/blobs/"):
            path = "/api/blobs"
        seen[f"{rec.method} {path}" if path.startswith("/api/blobs") else path] += 1
    return seen


def show(case: str, seen: Counter[str]) -> None:
    ollama = {k: v for k, v in seen.items() if k != "registry"}
    parts = ", ".join(f"{path} {n}" for path, n in sorted(ollama.items()))
    registry = f"; registry {seen['registry']}" if seen["registry"] else ""
    print(f"{case:<34} {sum(ollama.values()):3d}  {parts}{registry}")


def environment(home: Path, srv_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OLLAMA_", "GITHUB_", "HTTP_PROXY", "HTTPS_PROXY"))}
    env.update(HOME=str(home), CODEX_HOME=str(home / "codex"), OLLAMA_HOST=srv_url,
               OLLAMA_PROVISION_REGISTRY=srv_url, OLLAMA_MODELS=str(home / "models"),
               OLLAMA_PROVISION_RETRY_BASE="0", PATH="/usr/bin:/bin",
               PYTHONPATH=str(ROOT))
    return env


def manifest(home: Path, models: list[str], choose: tuple[str, ...] = ()) -> str:
    lines = []
    if choose:
        lines += ["[[models]]", "choose = [" + ", ".join(f'"{c}"' for c in choose) + "]", ""]
    for name in models:
        lines += ["[[models]]", f'name = "{name}"', ""]
    path = home / "manifest.toml"
    path.write_text("\n".join(lines))
    return str(path)


def bench_check(home: Path) -> None:
    with OllamaTestServer(installed=["llama3.2:1b"]) as srv:
        run(["check", "--json", "llama3.2:1b"], environment(home, srv.url))
        show("check (1 model)", counts(srv, 0))


def bench_apply(home: Path, models: list[str], label: str,
                choose: tuple[str, ...] = ()) -> None:
    with OllamaTestServer(vram=[24 * GIB], memory=64 * GIB) as srv:
        env = environment(home, srv.url)
        args = ["apply", "--json", "-f", manifest(home, models, choose),
                "--codex-version", "0.169.0"]
        run(args, env)
        show(f"apply {label}, fresh", counts(srv, 0))
        before = len(srv.requests)
        run(args, env)
        show(f"apply {label}, no-op", counts(srv, before))


def bench_fleet(home: Path) -> None:
    registry = OllamaTestServer().start()
    hosts = [OllamaTestServer(upstream=registry).start() for _ in range(3)]
    try:
        lines = []
        for i, srv in enumerate(hosts):
            lines += ["[[hosts]]", f'name = "h{i}"', f'url = "{srv.url}"', ""]
        lines += ["[groups.all]", "[[groups.all.models]]", 'name = "llama3.2:1b"',
                  "[[groups.all.models]]", 'name = "qwen2.5:0.5b"']
        inventory = home / "fleet.toml"
        inventory.write_text("\n".join(lines) + "\n")
        env = environment(home, registry.url)
        for label in ("fresh", "no-op"):
            marks = [len(srv.requests) for srv in hosts]
            run(["fleet", "--json", "-i", str(inventory)], env)
            for i, srv in enumerate(hosts):
                show(f"fleet (2 models), {label}, host h{i}", counts(srv, marks[i]))
    finally:
        for srv in (*hosts, registry):
            srv.stop()


def main() -> None:
    print(f"{'case':<34} {'all':>3}  requests per endpoint (Ollama), and to the registry")
    with tempfile.TemporaryDirectory() as tmp:
        for i, bench in enumerate((
                lambda home: bench_check(home),
                lambda home: bench_apply(home, ["llama3.2:1b"], "1 model"),
                lambda home: bench_apply(home, list(FIVE), "5 models"),
                lambda home: bench_apply(home, ["llama3.2:1b"], "3 choose + 1 model",
                                         ("llama3.1:8b", "llama3.2:3b", "qwen2.5:0.5b")),
                lambda home: bench_fleet(home))):
            home = Path(tmp) / str(i)
            home.mkdir()
            bench(home)


if __name__ == "__main__":
    main()

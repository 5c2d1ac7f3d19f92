"""Hostile and broken servers: the tool's peak memory and wall time, case by case.

Each case runs the tool as its own process (`python -m provision ...`) against a
`HostileServer` (tests/double/hostile.py) that misbehaves on one path and relays the rest
to an Ollama test double, and prints: the command's exit code, its wall time, its peak RSS
(`ru_maxrss` of the tool's process alone) and the limit that ended it. Every figure must
stay within the limits of provision/http.py (README, "Limits"): a few tens of MB, and
the deadline of the request or command, whatever the server does. The slow cases (a byte
a second) run at once, as they only wait.

    python scripts/bench_hostile.py [--only SUBSTRING]

Before these limits (issue 11): an endless /api/tags grew to 596 MB in 30 s, a 2 MB gzip
bomb took 3.85 GB, a million models 1.87 GB and 28.6 s, slow headers kept `check` busy
past 90 s, a registry ignoring Range had the whole blob read (2.5 GB for llama3.2:1b).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.double import OllamaTestServer  # noqa: E402
from tests.double.hostile import (  # noqa: E402
    HostileServer,
    answer,
    deep_json,
    endless_headers,
    endless_json,
    gzip_bomb,
    ignore_range,
    many_models,
    slow_body,
    slow_headers,
)
from tests.tool import Run, cli_env, run_cli  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    limit: str  # what ends it (README, "Limits")
    setup: Callable[[OllamaTestServer, HostileServer, Path], tuple[list[str], dict[str, str]]]
    slow: bool = False
    installed: tuple[str, ...] = ()  # on the Ollama double behind the hostile server


def _on(path: str, behaviour: object, *args: str) -> Callable[..., tuple[list[str], dict]]:
    def setup(up: OllamaTestServer, srv: HostileServer, tmp: Path) -> tuple[list[str], dict]:
        srv.on(path, behaviour)  # type: ignore[arg-type]
        return [a.replace("{srv}", srv.url).replace("{up}", up.url).replace("{tmp}", str(tmp))
                for a in args], {}
    return setup


def _registry(path: str, behaviour: object, *args: str) -> Callable[..., tuple[list, dict]]:
    def setup(up: OllamaTestServer, srv: HostileServer, tmp: Path) -> tuple[list[str], dict]:
        srv.on(path, behaviour)  # type: ignore[arg-type]
        return [a.replace("{up}", up.url) for a in args], {"OLLAMA_PROVISION_REGISTRY": srv.url}
    return setup


def _fleet(path: str, behaviour: object) -> Callable[..., tuple[list, dict]]:
    def setup(up: OllamaTestServer, srv: HostileServer, tmp: Path) -> tuple[list[str], dict]:
        srv.on(path, behaviour)  # type: ignore[arg-type]
        inventory = tmp / "fleet.toml"
        inventory.write_text(f'[[hosts]]\nurl = "{srv.url}"\n[groups.all]\n'
                             '[[groups.all.models]]\nname = "llama3.2:1b"\n')
        return ["fleet", "-i", str(inventory)], {}
    return setup


def _stuck(up: OllamaTestServer, srv: HostileServer, tmp: Path) -> tuple[list[str], dict]:
    up.add_fault("stuck", after_bytes=650_000_000, times=None)
    return ["pull", "--host", up.url, "--stall-timeout", "3", "--retries", "2",
            "--retry-base", "0.01", "llama3.2:1b"], {"OLLAMA_PROVISION_REGISTRY": up.url}


CONFIG = ["--codex-home", "{tmp}/codex", "--no-validate", "m"]
CASES = [
    Case("endless /api/tags: check", "8 MiB", _on("/api/tags", endless_json(), "check",
                                                  "--host", "{srv}")),
    Case("endless /api/tags: pull", "8 MiB", _on("/api/tags", endless_json(), "pull",
                                                 "--host", "{srv}", "llama3.2:1b")),
    Case("endless /api/tags: config", "8 MiB", _on("/api/tags", endless_json(), "config",
                                                   "--host", "{srv}", *CONFIG)),
    Case("endless /api/tags: fleet", "8 MiB", _fleet("/api/tags", endless_json())),
    Case("1,000,000 models in /api/tags", "8 MiB", _on("/api/tags", many_models(),
                                                       "check", "--host", "{srv}")),
    Case("gzip bomb /api/version (4 GiB)", "64 KiB decoded",
         _on("/api/version", gzip_bomb(), "check", "--host", "{srv}")),
    Case("gzip bomb /api/tags (4 GiB)", "8 MiB decoded",
         _on("/api/tags", gzip_bomb(b'{"models":['), "check", "--host", "{srv}")),
    Case("8 MiB of {} in /api/tags", "60,000 containers",
         _on("/api/tags", answer(200, b'{"models":[' + b"{}," * 2_796_000 + b"{}]}"),
             "check", "--host", "{srv}")),
    Case("/api/show: 4 MiB of keys (worst shape)", "100,000 members",
         _on("/api/show", answer(200, b'{"model_info":{' + b",".join(
             b'"%d":""' % i for i in range(330_000)) + b"}}"), "hardware", "--host", "{srv}",
             "llama3.2:1b"), installed=("llama3.2:1b",)),
    Case("/api/show: 4 MiB of strings (worst shape)", "parsed: within the caps",
         _on("/api/show", answer(200, b'{"x":[' + b'"",' * 1_398_000 + b'""]}'), "hardware",
             "--host", "{srv}", "llama3.2:1b"), installed=("llama3.2:1b",)),
    Case("JSON 100,000 deep in /api/tags", "60,000 containers",
         _on("/api/tags", deep_json(), "check", "--host", "{srv}")),
    Case("JSON 50,000 deep in /api/tags", "parse depth",
         _on("/api/tags", deep_json(50_000), "check", "--host", "{srv}")),
    Case("endless headers /api/version", "100 KiB headers",
         _on("/api/version", endless_headers(), "check", "--host", "{srv}")),
    Case("60,000-digit version", "64 KiB, linear",
         _on("/api/version", answer(200, '{"version":"' + "9" * 60_000 + '"}'), "check",
             "--host", "{srv}")),
    Case("endless pull line", "1 MiB line",
         _on("/api/pull", endless_json(b'{"status":"', b"x" * 1000), "pull", "--host",
             "{srv}", "--no-disk-check", "llama3.2:1b")),
    Case("registry ignores Range (1.3 GB blob)", "4 MiB header",
         _registry("/v2/*/blobs/*", ignore_range(), "hardware", "--host", "{up}",
                   "llama3.2:1b")),
    Case("registry ignores Range (4.9 GB blob)", "4 MiB header",
         _registry("/v2/*/blobs/*", ignore_range(), "hardware", "--host", "{up}",
                   "llama3.1:8b")),
    Case("pull stuck at 50 % on every attempt", "stall 3 s x 3", _stuck, slow=True),
    Case("headers 1 byte/s: check", "10 s (first answer)",
         _on("/api/version", slow_headers(1.0), "check", "--host", "{srv}"), slow=True),
    Case("headers 1 byte/s: config", "10 s (first answer)",
         _on("/api/version", slow_headers(1.0), "config", "--host", "{srv}", *CONFIG),
         slow=True),
    Case("body 1 byte/s /api/tags: check", "30 s (one request)",
         _on("/api/tags", slow_body(interval=1.0), "check", "--host", "{srv}"), slow=True),
    Case("slow registry: hardware", "30 s (registry request)",
         _registry("/v2/*", slow_headers(1.0), "hardware", "--host", "{up}", "llama3.2:1b"),
         slow=True),
]


def run_case(case: Case) -> tuple[Case, Run, int]:
    with tempfile.TemporaryDirectory() as work, \
            OllamaTestServer(installed=case.installed) as up, HostileServer(up.url) as srv:
        tmp = Path(work)
        args, extra = case.setup(up, srv, tmp)
        env = cli_env(HOME=str(tmp), OLLAMA_MODELS=str(tmp / "models"),
                      OLLAMA_PROVISION_RETRY_BASE="0", PATH=os.defpath, **extra)
        run = run_cli(*args, env=env, timeout=300)
        return case, run, sum(srv.sent.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="cases whose name contains this")
    args = parser.parse_args()
    cases = [c for c in CASES if args.only in c.name]
    results = [run_case(c) for c in cases if not c.slow]
    slow = [c for c in cases if c.slow]
    if slow:
        with concurrent.futures.ThreadPoolExecutor(len(slow)) as pool:
            results += list(pool.map(run_case, slow))
    width = max(len(c.name) for c, _, _ in results)
    print(f"{'case'.ljust(width)}  exit  wall s  peak RSS  sent      limit that ended it")
    for case, run, sent in results:
        print(f"{case.name.ljust(width)}  {run.code:>4}  {run.seconds:6.1f}  "
              f"{run.peak_mb:5.0f} MB  {sent / 1e6:6.1f} MB  {case.limit}")
    worst = max(results, key=lambda r: r[1].peak_rss)
    print(f"\nhighest peak RSS: {worst[1].peak_mb:.0f} MB ({worst[0].name}); "
          f"tracebacks: {sum('Traceback' in r.err for _, r, _ in results)}")


if __name__ == "__main__":
    main()

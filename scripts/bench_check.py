"""Benchmark: `ollama-provision check --json` as a whole process vs a bare urllib GET.

Starts the test double with 100 installed models, then times, alternating, N runs of
  A) `ollama-provision check --json`          (the console script, a fresh process)
  B) `python -c "urllib GET /api/tags"`       (the least a script could do)
and prints both medians and their ratio. Goal: ratio <= 2.5.

    python scripts/bench_check.py [--runs 21]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.double import OllamaTestServer, make_catalog_model  # noqa: E402

BARE = (
    "import json, urllib.request, sys;"
    "r = urllib.request.urlopen(sys.argv[1] + '/api/tags', timeout=5);"
    "print(len(json.load(r)['models']))"
)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    models = [make_catalog_model(f"bench-model-{i:03d}:latest", params="1B") for i in range(100)]
    tool = shutil.which("ollama-provision", path=str(Path(sys.executable).parent)) or shutil.which(
        "ollama-provision")
    if tool is None:
        raise SystemExit("ollama-provision is not installed in this environment")
    with OllamaTestServer(catalog=models, installed=[m.name for m in models]) as srv:
        env = dict(os.environ, OLLAMA_HOST=srv.url)
        check_cmd = [tool, "check", "--json"]
        bare_cmd = [sys.executable, "-c", BARE, srv.url]
        for cmd in (check_cmd, bare_cmd):  # warm the OS caches
            timed(cmd, env)
        tool_times, bare_times = [], []
        for _ in range(args.runs):
            tool_times.append(timed(check_cmd, env))
            bare_times.append(timed(bare_cmd, env))
    tool_median = statistics.median(tool_times)
    bare_median = statistics.median(bare_times)
    print(f"server: test double with 100 installed models, {args.runs} runs each")
    print(f"ollama-provision check --json : median {tool_median * 1000:7.1f} ms")
    print(f"bare python urllib GET        : median {bare_median * 1000:7.1f} ms")
    print(f"ratio                          : {tool_median / bare_median:.2f}  (goal <= 2.5)")


if __name__ == "__main__":
    main()

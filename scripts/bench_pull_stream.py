"""How much CPU does `pull` spend reading and showing a pull stream?

The test double (in a separate process, so its own CPU is not counted) streams a pull of
100,000 progress events as fast as it can. We measure this process's CPU time
(`time.process_time`, all threads: reader, watchdog, rich's refresh thread) for

- bare: an httpx stream + `json.loads` per line, nothing else;
- the tool: `pull_models()` drawing terminal bars (a rich console forced to terminal mode,
  writing to /dev/null) and, separately, writing plain CI-log lines;

and print the figures and the ratio tool / bare. Goal: ratio <= 1.5.

    python scripts/bench_pull_stream.py [--events 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.double` (also in the server process)

MODEL = "llama3.2:1b"


def _serve(events: int, ready: Any, stop: Any) -> None:
    """The server process: every pull streams about `events` progress lines, no pauses."""
    from tests.double import OllamaTestServer

    class FloodServer(OllamaTestServer):
        # The double paces downloads by real time; here every line advances a fixed step
        # (1/events of the weights blob), so a pull is exactly `events` lines long.
        step = 1.0

        def _advance(self, dl: Any, limit: float) -> None:
            dl.completed = min(limit, dl.completed + self.step)

    srv = FloodServer(tick=0.0)
    weights = max(x["size"] for x in srv.manifest(MODEL)["layers"])
    FloodServer.step = weights / events
    srv.start()
    ready.put(srv.url)
    try:
        while not stop.wait(0.05):
            # Each run pulls from scratch: forget the model and its blobs.
            if srv.installed_names():
                srv.remove(MODEL)
    finally:
        srv.stop()


def _fresh(url: str) -> None:
    """Wait until the server has forgotten the last pull (the model is gone)."""
    import httpx

    for _ in range(200):
        if not httpx.get(url + "/api/tags", trust_env=False).json()["models"]:
            return
        time.sleep(0.02)
    raise RuntimeError("the benchmark server kept the model")


def bare(url: str) -> tuple[float, int]:
    import httpx

    _fresh(url)
    started = time.process_time()
    progress = 0
    with httpx.Client(base_url=url, trust_env=False, timeout=60) as http, \
            http.stream("POST", "/api/pull", json={"model": MODEL}) as response:
        for line in response.iter_lines():
            if line and "digest" in json.loads(line):
                progress += 1
    return time.process_time() - started, progress


def tool(url: str, display: str) -> tuple[float, int]:
    from rich.console import Console

    from provision.models.progress import PlainReporter, TerminalReporter
    from provision.models.pull import PullOptions, pull_models
    from provision.names import parse_name
    from provision.server import OllamaServer, parse_host

    _fresh(url)
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed below
    reporter: Any
    if display == "terminal":
        reporter = TerminalReporter(Console(file=sink, force_terminal=True, width=120))
    else:
        reporter = PlainReporter(sink)
    started = time.process_time()
    with reporter:
        [outcome] = pull_models(OllamaServer(parse_host(url)), [parse_name(MODEL)],
                                PullOptions(check_disk=False), reporter)
    elapsed = time.process_time() - started
    sink.close()
    if outcome.status != "pulled":
        raise RuntimeError(f"pull failed: {outcome}")
    return elapsed, outcome.size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(args.events, ready, stop), daemon=True)
    server.start()
    try:
        url = ready.get(timeout=60)
        bare(url)  # warm-up: imports, the double's lazily built model
        tool(url, "terminal")
        tool(url, "plain")
        times: dict[str, list[float]] = {"bare": [], "terminal": [], "plain": []}
        events = 0
        for _ in range(args.rounds):  # interleaved: machine noise hits all alike
            cpu, events = bare(url)
            times["bare"].append(cpu)
            times["terminal"].append(tool(url, "terminal")[0])
            times["plain"].append(tool(url, "plain")[0])
    finally:
        stop.set()
        server.join(timeout=10)

    base = statistics.median(times["bare"])
    print(f"progress events per pull: {events:,} ({args.rounds} rounds, medians of CPU time)")
    print(f"bare consumer (httpx + json.loads per line): {base * 1000:8.1f} ms")
    for name in ("terminal", "plain"):
        value = statistics.median(times[name])
        print(f"ollama-provision pull, {name + ' display:':18} {value * 1000:8.1f} ms  "
              f"ratio {value / base:.2f}")
    worst = max(statistics.median(times["terminal"]), statistics.median(times["plain"]))
    print(f"goal: ratio <= 1.5 -> {'met' if worst / base <= 1.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

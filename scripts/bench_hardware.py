"""Benchmark: the machine probe, and the estimate for 10 models not yet pulled.

Starts the test double (its registry serves realistic GGUF headers: ~7.5 MiB for the
Llama-3 family, ~5.6 MiB for Qwen2.5), then prints:
  - the wall time of `probe_machine()` (median of N runs after one warm-up run, and the
    first, cold run), goal < 200 ms;
  - per model: wall time of `from_registry()`, HTTP requests and bytes read, counted
    by the tool and by the server; goals <= 4 requests and <= 4 MiB per model;
  - the same for `--full-header` (exact per-layer sizes), for comparison.

    python scripts/bench_hardware.py [--runs 21]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provision.hardware.machine import probe_machine  # noqa: E402
from provision.hardware.needs import from_registry  # noqa: E402
from provision.models.registry import RegistryClient  # noqa: E402
from provision.names import parse_name  # noqa: E402
from tests.double import OllamaTestServer  # noqa: E402

MODELS = ["llama3.2:1b", "llama3.2:3b", "llama3.2", "llama3.1:8b", "llama3.1",
          "llama3.1:70b", "qwen2.5:14b", "qwen2.5:0.5b", "nomic-embed-text", "tiny"]
MIB = 1 << 20


def bench_probe(runs: int) -> None:
    start = time.perf_counter()
    machine = probe_machine()
    cold = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        probe_machine()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"machine probe: cold {cold * 1000:.1f} ms, median of {runs} {median * 1000:.1f} ms, "
          f"max {max(times) * 1000:.1f} ms  (goal < 200 ms: {'ok' if median < 0.2 else 'MISSED'})")
    gpus = ", ".join(g.name for g in machine.gpus) or "no GPU"
    print(f"  ({machine.cpu.model}, {machine.cpu.logical} CPUs, "
          f"{machine.memory.total / (1 << 30):.1f} GiB RAM, {gpus})")


def bench_models(srv: OllamaTestServer, *, header_budget: int | None, label: str) -> None:
    env = {"OLLAMA_PROVISION_REGISTRY": srv.url}
    print(f"\n{label}")
    print(f"{'model':<26}{'ms':>8}{'requests':>10}{'read':>12}{'served':>12}{'header':>10}"
          f"  layers")
    total_time = 0.0
    worst_requests = worst_bytes = 0
    for name in MODELS:
        before = len(srv.requests)
        kwargs = {"header_budget": header_budget} if header_budget else {}
        with RegistryClient(environ=env) as registry:
            start = time.perf_counter()
            needs = from_registry(parse_name(name), registry, **kwargs)
            elapsed = time.perf_counter() - start
        served = sum(r.bytes_sent for r in srv.requests[before:] if r.path.startswith("/v2/"))
        header = srv.catalog_model(name).artifacts().weights.header_size
        total_time += elapsed
        worst_requests = max(worst_requests, needs.requests)
        worst_bytes = max(worst_bytes, needs.bytes_read)
        print(f"{needs.name:<26}{elapsed * 1000:>8.1f}{needs.requests:>10}"
              f"{needs.bytes_read / MIB:>9.2f} MiB{served / MIB:>8.2f} MiB"
              f"{header / MIB:>6.1f} MiB  {'exact' if needs.exact_layers else 'derived'}")
    print(f"all {len(MODELS)}: {total_time * 1000:.0f} ms; worst {worst_requests} requests, "
          f"{worst_bytes / MIB:.2f} MiB per model")
    if header_budget is None:
        ok = worst_requests <= 4 and worst_bytes <= 4 * MIB
        print(f"(goal <= 4 requests and <= 4 MiB per model: {'ok' if ok else 'MISSED'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    os.environ.pop("OLLAMA_PROVISION_REGISTRY", None)
    bench_probe(args.runs)
    with OllamaTestServer() as srv:
        for name in MODELS:  # the double builds its artifacts once; not the tool's time
            srv.catalog_model(name).artifacts()
        bench_models(srv, header_budget=None, label="estimate from the registry (default)")
        bench_models(srv, header_budget=1 << 30, label="with --full-header (for comparison)")


if __name__ == "__main__":
    main()

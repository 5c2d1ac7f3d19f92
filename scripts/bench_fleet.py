"""`fleet` at scale: 200 test servers on loopback, 3 models each, some slow or failing.

The test doubles run in separate processes (several dozen per process), so their CPU and
memory are not the tool's. The tool runs as its own process, exactly as a user runs it
(`ollama-provision fleet -i INVENTORY --json`), twice:

- one host: a single normal server doing the whole job (check, plan, pull 3 models,
  verify) — the reference time;
- the fleet: 200 servers doing the same job at once, among them slow ones (every
  request answered 0.1 s late, a far-away host), hanging ones (they accept and never
  answer), dead ones (nothing listens) and broken ones (every pull fails on the server).

Printed: both wall times and their ratio, the time the last normal host finished, the
tool's peak RSS (its own `ru_maxrss`), and whether every host ended as it should: every
normal and slow host ready with exactly what the single host got, every injected
failure failed. Goals: fleet wall <= 1.5x one host; peak RSS <= 250 MB; no host's
failure changes another's outcome.

    python scripts/bench_fleet.py [--hosts 200] [--per-process 50] [--rate 1e8]

On a small machine the tool and all 200 test servers share the same few CPUs; the
figures printed include both processes' CPU time. With a fast download (`--rate 4e8`, a
host done in ~6 s) the bursts at the start and at the end of every host (probe, list,
verify) land at once and a 2-CPU machine saturates; at a realistic per-server rate they
spread out.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.double` (in the server processes)

MODELS = ("llama3.2:1b", "qwen2.5:0.5b", "nomic-embed-text:latest")
LATENCY = 0.1  # seconds added to every request of a slow host
TICK = 0.06  # seconds between progress lines, as a real Ollama sends them


def serve(kinds: list[str], rate: float) -> None:
    """A server process: one double per kind; prints their URLs, runs until stdin closes."""
    from tests.double import OllamaTestServer

    servers = []
    for kind in kinds:
        srv = OllamaTestServer(download_rate=rate, tick=TICK).start()
        if kind == "slow":
            srv.add_fault("slow_headers", endpoint=None, seconds=LATENCY, times=None)
        elif kind == "hanging":
            srv.add_fault("slow_headers", endpoint=None, seconds=3600, times=None)
        elif kind == "broken":
            srv.add_fault("registry_unreachable", times=None)
        servers.append(srv)
    for model in MODELS:  # build the GGUF headers now, not during the measured run
        servers[0].manifest(model)
    print(json.dumps([s.url for s in servers]), flush=True)
    sys.stdin.read()


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _inventory(path: Path, hosts: list[tuple[str, str, str]], registry: str) -> None:
    lines = ["[fleet]", "read_timeout = 5", "connect_timeout = 2", ""]
    for name, kind, url in hosts:
        lines += ["[[hosts]]", f'name = "{name}"', f'url = "{url}"',
                  f'labels = {{ kind = "{kind}" }}', ""]
    lines += ["[pull]", "retries = 1", "", "[verify]", "num_predict = 4", "", "[groups.all]"]
    for model in MODELS:
        lines += ["[[groups.all.models]]", f'name = "{model}"']
    path.write_text("\n".join(lines) + "\n")


TOOL = """
import resource, sys
from provision.cli import main
code = main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
print(usage.ru_utime + usage.ru_stime, usage.ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _run_tool(inventory: Path, registry: str) -> tuple[float, dict[str, Any], int, float]:
    """(wall seconds, the --json document, peak RSS in KiB, CPU seconds)."""
    env = {**os.environ, "OLLAMA_PROVISION_REGISTRY": registry,
           "OLLAMA_PROVISION_RETRY_BASE": "0.1", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", TOOL, "fleet", "-q", "--json", "-i",
                           str(inventory)], env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(f"the tool failed (exit {done.returncode}):\n{done.stderr}")
    cpu, peak = done.stderr.strip().splitlines()[-1].split()
    return wall, json.loads(done.stdout), int(peak), float(cpu)


def _servers_cpu(procs: list[subprocess.Popen[str]]) -> float:
    import psutil

    return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs)


def _outcome(host: dict[str, Any]) -> tuple[Any, ...]:
    """What a host ended with, comparable between hosts."""
    return (host["state"], tuple((m["name"], m["status"], m["action"],
                                  bool(m["verification"] and m["verification"]["ok"]))
                                 for m in host["models"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--per-process", type=int, default=50)
    parser.add_argument("--rate", type=float, default=1e8,
                        help="download bytes/s per server (default 100 MB/s: ~20 s a host)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve.split(","), args.rate)
        return 0

    # 200 hosts: most normal, 5 % slow, 2 % each hanging, dead and broken.
    n = args.hosts
    odd = {"slow": max(1, n // 20), "hanging": max(1, n // 50), "dead": max(1, n // 50),
           "broken": max(1, n // 50)}
    kinds = ["normal"] * (n - sum(odd.values()))
    for kind, count in odd.items():
        kinds += [kind] * count
    kinds.sort(key=lambda k: hash(k) % 7)  # interleave them in the inventory
    served = [k for k in kinds if k != "dead"] + ["normal", "normal"]  # + reference, registry
    procs, urls = [], []
    for i in range(0, len(served), args.per_process):
        chunk = served[i:i + args.per_process]
        proc = subprocess.Popen([sys.executable, __file__, "--serve", ",".join(chunk),
                                 "--rate", str(args.rate)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
    try:
        for proc in procs:
            assert proc.stdout is not None
            urls += json.loads(proc.stdout.readline())
        registry, reference = urls.pop(), urls.pop()
        hosts, it = [], iter(urls)
        for i, kind in enumerate(kinds):
            hosts.append((f"{kind}-{i:03d}", kind, _dead_url() if kind == "dead" else next(it)))
        with tempfile.TemporaryDirectory() as tmp:
            one, fleet = Path(tmp) / "one.toml", Path(tmp) / "fleet.toml"
            _inventory(one, [("reference", "normal", reference)], registry)
            _inventory(fleet, hosts, registry)
            one_wall, one_doc, one_peak, one_cpu = _run_tool(one, registry)
            servers_before = _servers_cpu(procs)
            fleet_wall, doc, peak, cpu = _run_tool(fleet, registry)
            servers_cpu = _servers_cpu(procs) - servers_before
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=30)

    expected = _outcome(one_doc["hosts"][0])
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for host in doc["hosts"]:
        by_kind.setdefault(host["labels"]["kind"], []).append(host)
    healthy = by_kind.get("normal", []) + by_kind.get("slow", [])
    wrong = [h["name"] for h in healthy if _outcome(h) != expected]
    wrong += [h["name"] for k in ("hanging", "dead", "broken") for h in by_kind.get(k, [])
              if h["ready"]]
    last_normal = max(h["duration"] for h in by_kind.get("normal", []))
    slow = [h["duration"] for h in by_kind.get("slow", [])]
    ratio = fleet_wall / one_wall

    print(f"hosts: {n} ({', '.join(f'{len(v)} {k}' for k, v in sorted(by_kind.items()))}), "
          f"{len(MODELS)} models each, download {args.rate / 1e6:.0f} MB/s per server")
    print(f"one host:  wall {one_wall:.2f} s, tool CPU {one_cpu:.2f} s, peak RSS "
          f"{one_peak / 1024:.0f} MB, {expected[0]}")
    print(f"fleet:     wall {fleet_wall:.2f} s, tool CPU {cpu:.2f} s, peak RSS "
          f"{peak / 1024:.0f} MB, concurrency {doc['options']['concurrency']}, "
          f"exit {doc['exit_code']}; the test servers' CPU {servers_cpu:.2f} s "
          f"({os.cpu_count()} CPUs)")
    print(f"           last normal host done after {last_normal:.2f} s; slow hosts "
          f"{min(slow):.2f}-{max(slow):.2f} s" if slow else "")
    print(f"           states: {json.dumps(doc['summary'])}")
    print(f"ratio fleet/one host: {ratio:.2f} (goal <= 1.5) "
          f"{'ok' if ratio <= 1.5 else 'MISSED'}")
    print(f"peak RSS: {peak / 1024:.0f} MB (goal <= 250 MB) "
          f"{'ok' if peak / 1024 <= 250 else 'MISSED'}")
    print(f"isolation: {len(healthy)} healthy hosts identical to the single host, "
          f"{sum(len(by_kind.get(k, [])) for k in ('hanging', 'dead', 'broken'))} injected "
          f"failures failed: {'ok' if not wrong else 'MISSED: ' + ', '.join(wrong[:10])}")
    return 0 if ratio <= 1.5 and peak / 1024 <= 250 and not wrong else 1


if __name__ == "__main__":
    raise SystemExit(main())

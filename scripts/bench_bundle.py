"""Model bundles against real servers: registry traffic, upload speed, memory.

Everything is real: the Ollama 0.32.15 and the OCI registry from ../shared/ollama (see
tests/real/), on loopback, with synthetic models made from `tiny`'s GGUF plus
padding (Ollama creates them; nothing here loads them).

1. Registry traffic for N servers (1, 4, 16): the model is bundled once from the
   registry, then pushed to N fresh servers at once (one thread per server, as `fleet`
   will). Printed: bytes the bundle took from the registry, blob requests the registry
   served while the servers were provisioned (its proxy's log), bytes sent to the
   servers, wall time; and what N servers pulling would have taken from the registry.
   Goal: the registry gives each model once, whatever N.
2. Upload throughput: one blob pushed from a bundle to a fresh server, against a plain
   HTTP upload of the same blob file to the same endpoint (`curl -T`, else Python's
   http.client), best of 3 each. Goal: >= 80 %.
3. Peak RSS (the process's own VmHWM) of `bundle create` of a model of several GB
   from the registry, of `bundle push` of it, and of `fleet --seed` of it to two fresh
   servers (downloaded into an empty cache, uploaded twice). Goal: <= 200 MB.
4. `fleet --seed` for N servers (1, 4, 16): the CLI run as a user runs it, on N fresh
   servers with an empty cache, then once more on N other fresh servers with the cache
   it left. Printed: the registry's blob requests (its proxy's log) and the bytes the
   summary says came from the registry and went to the hosts, wall time. Goal: each
   model from the registry once whatever N, and nothing on the second run.

    python scripts/bench_bundle.py [--model-mb 100] [--servers 1,4,16] [--big-gb 3]

Big files go to a temporary folder (default under /tmp: --tmp DIR) removed at the end.
On a small machine the servers, the registry and the tool share the CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provision.bundle import (  # noqa: E402
    BundleReader,
    PushOptions,
    RegistrySource,
    create_bundle,
    push_models,
)
from provision.models.pull import BlobProgress, StatusChanged  # noqa: E402
from provision.models.registry import RegistryClient  # noqa: E402
from provision.names import parse_name  # noqa: E402
from provision.output import human_bytes  # noqa: E402
from provision.server import OllamaServer, parse_host  # noqa: E402
from tests.real import RealOllama, Registry, runnable_copy, why_no_server  # noqa: E402
from tests.real.gguf import padded_tiny  # noqa: E402


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dist = runnable_copy(root / "dist")
        self.servers: list[RealOllama] = []
        self.count = 0

    def server(self, models: Path | None = None) -> RealOllama:
        self.count += 1
        server = RealOllama(self.dist, self.root / f"server{self.count}", models=models).start()
        self.servers.append(server)
        return server

    def retire(self, server: RealOllama) -> None:
        server.stop()
        self.servers.remove(server)
        shutil.rmtree(server.root, ignore_errors=True)

    def close(self) -> None:
        for server in list(self.servers):
            server.stop()


def make_model(bench: Bench, seed: RealOllama, name: str, size: int, value: int) -> None:
    gguf = padded_tiny(bench.root / f"{name}.gguf", size, value)
    modelfile = bench.root / f"{name}.Modelfile"
    modelfile.write_text(f"FROM {gguf}\n")
    seed.ollama("create", name, "-f", str(modelfile), timeout=3600)
    gguf.unlink()


def bundle_from_registry(name: str, path: Path) -> tuple[int, float]:
    client = RegistryClient(insecure=True)
    started = time.monotonic()
    result = create_bundle([parse_name(name)], RegistrySource(client), path)
    return result.fetched, time.monotonic() - started


def registry_traffic(bench: Bench, registry: Registry, name: str, counts: list[int],
                     size: int) -> None:
    print(f"\n1. registry traffic: {name} ({human_bytes(size)}), bundled once, pushed to N "
          "servers at once")
    for n in counts:
        bundle = bench.root / f"n{n}.tar"
        gets_before = registry.blob_gets()
        fetched, took = bundle_from_registry(name, bundle)
        bundle_gets = registry.blob_gets() - gets_before
        servers = [bench.server() for _ in range(n)]
        reader = BundleReader(bundle)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=n) as pool:
            outcomes = list(pool.map(
                lambda s, r=reader: push_models(
                    r, OllamaServer(parse_host(s.url)))[0], servers))
        wall = time.monotonic() - started
        push_gets = registry.blob_gets() - gets_before - bundle_gets
        sent = sum(o.bytes_sent for o in outcomes)
        ok = all(o.status == "created" for o in outcomes)
        print(f"  N={n:2d}: registry gave {human_bytes(fetched)} ({bundle_gets} blob "
              f"requests) to the bundle in {took:.1f}s,\n"
              f"        then {push_gets} blob requests while {n} server"
              f"{'s were' if n > 1 else ' was'} provisioned;\n"
              f"        sent {human_bytes(sent)} in {wall:.1f}s "
              f"({'all created' if ok else 'NOT ALL CREATED'}); N pulls: "
              f"{human_bytes(n * size)} from the registry")
        for server in servers:
            bench.retire(server)
        bundle.unlink()


class UploadClock:
    """A reporter that notes when the upload's first and last bytes went."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None

    def handle(self, event: object) -> None:
        if isinstance(event, BlobProgress):
            now = time.monotonic()
            self.first = self.first or now
            self.last = now
        elif isinstance(event, StatusChanged) and event.status == "creating the model":
            self.last = time.monotonic()


def httpx_upload(path: Path, url: str) -> float:
    """The same file, the same HTTP client as the tool, 1 MiB chunks, nothing checked."""
    import httpx

    def chunks():
        with path.open("rb") as body:
            while data := body.read(1 << 20):
                yield data

    started = time.monotonic()
    with httpx.Client(trust_env=False, timeout=600) as client:
        client.post(f"{url}/api/blobs/{path.name.replace('-', ':', 1)}", content=chunks(),
                    headers={"Content-Length": str(path.stat().st_size)}).raise_for_status()
    return time.monotonic() - started


def plain_upload(path: Path, url: str) -> float:
    digest = path.name.replace("-", ":", 1)
    started = time.monotonic()
    if shutil.which("curl"):
        subprocess.run(["curl", "-sS", "-o", "/dev/null", "-X", "POST", "-T", str(path),
                        f"{url}/api/blobs/{digest}"], check=True)
    else:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        with path.open("rb") as body:
            connection.request("POST", f"/api/blobs/{digest}", body=body,
                               headers={"Content-Length": str(path.stat().st_size)})
        connection.getresponse().read()
    return time.monotonic() - started


def upload_throughput(bench: Bench, seed: RealOllama, registry: Registry, name: str,
                      model: str, size: int) -> None:
    print(f"\n2. upload throughput on loopback: the weights of {model} "
          f"({human_bytes(size)}), best of 3")
    bundle = bench.root / "upload.tar"
    bundle_from_registry(name, bundle)
    reader = BundleReader(bundle)
    blob = max(reader.index.blobs, key=lambda b: b.size)
    blob_file = seed.models / "blobs" / blob.digest.replace(":", "-")
    plain, raw, ours = [], [], []
    for _ in range(3):
        for upload, times in ((plain_upload, plain), (httpx_upload, raw)):
            server = bench.server()
            times.append(upload(blob_file, server.url))
            bench.retire(server)
        server = bench.server()
        clock = UploadClock()
        push_models(reader, OllamaServer(parse_host(server.url)), options=PushOptions(),
                    reporter=clock)
        ours.append((clock.last or 0) - (clock.first or 0))
        bench.retire(server)
    best_plain, best_ours = blob.size / min(plain), blob.size / max(min(ours), 1e-9)
    best_raw = blob.size / min(raw)
    via = "curl -T" if shutil.which("curl") else "http.client"
    print(f"  plain HTTP upload of the blob file ({via}): {human_bytes(best_plain)}/s\n"
          f"  the same with httpx, 1 MiB chunks, nothing checked: {human_bytes(best_raw)}/s\n"
          f"  bundle push (read from the bundle, sha256 checked, paced): "
          f"{human_bytes(best_ours)}/s\n"
          f"  = {best_ours / best_plain:.0%} of {via}, {best_ours / best_raw:.0%} of raw "
          "httpx (goal >= 80 %)")
    bundle.unlink()


def peak_rss(command: list[str], env: dict[str, str] | None = None
             ) -> tuple[int, float, int]:
    """(peak RSS bytes, seconds, exit code) of a command run as its own process: its
    VmHWM, read until it exits (wait4's ru_maxrss would also count the memory of this
    process, which the child shares until it execs)."""
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    status = Path(f"/proc/{proc.pid}/status")
    peak = 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (OSError, ValueError):
            pass  # it is exiting
        time.sleep(0.02)
    return peak, time.monotonic() - started, proc.returncode


def big_model_memory(bench: Bench, seed: RealOllama, registry: Registry,
                     big: int) -> None:
    print(f"\n3. peak RSS with a model of {human_bytes(big)}")
    make_model(bench, seed, "big-rss", big, 7)
    name = seed.publish("big-rss", registry, "library/big-rss:latest")
    bundle = bench.root / "big.tar"
    tool = [sys.executable, "-m", "provision", "bundle"]
    rss, took, code = peak_rss([*tool, "create", name, "--insecure", "-o", str(bundle), "-q"])
    print(f"  bundle create (from the registry): peak RSS {human_bytes(rss)}, {took:.1f}s, "
          f"{human_bytes(bundle.stat().st_size / took)}/s, exit {code} (goal <= 200 MB)")
    server = bench.server()
    rss, took, code = peak_rss([*tool, "push", str(bundle), "--host", server.url, "-q"])
    print(f"  bundle push (to a fresh server, its create included): peak RSS "
          f"{human_bytes(rss)}, {took:.1f}s, exit {code} (goal <= 200 MB)")
    rss, took, code = peak_rss([*tool, "verify", str(bundle), "-q"])
    print(f"  bundle verify: peak RSS {human_bytes(rss)}, {took:.1f}s, "
          f"{human_bytes(bundle.stat().st_size / took)}/s, exit {code}")
    bench.retire(server)
    bundle.unlink()
    servers = [bench.server(), bench.server()]
    inventory = bench.root / "seed-big.toml"
    inventory.write_text("".join(f'[[hosts]]\nname = "s{i}"\nurl = "{s.url}"\n\n'
                                 for i, s in enumerate(servers))
                         + f'[groups.all]\n[[groups.all.models]]\nname = "{name}"\n\n'
                         "[pull]\ninsecure = true\n")
    cache = bench.root / "seed-big-cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    rss, took, code = peak_rss([sys.executable, "-m", "provision", "fleet", "-i",
                                str(inventory), "--seed", "--no-verify", "-q"], env)
    print(f"  fleet --seed to 2 servers (empty cache: downloaded once, uploaded twice): "
          f"peak RSS {human_bytes(rss)}, {took:.1f}s, exit {code} (goal <= 200 MB)")
    for server in servers:
        bench.retire(server)
    shutil.rmtree(cache, ignore_errors=True)


def seed_traffic(bench: Bench, registry: Registry, name: str, counts: list[int],
                 size: int) -> None:
    print(f"\n4. fleet --seed: {name} ({human_bytes(size)}) to N fresh servers, through "
          "the tool's cache")
    env = {**os.environ, "XDG_CACHE_HOME": str(bench.root / "seed-cache")}
    env.pop("OLLAMA_HOST", None)
    for n in counts:
        shutil.rmtree(bench.root / "seed-cache", ignore_errors=True)
        for attempt in ("empty cache", "cache kept"):
            servers = [bench.server() for _ in range(n)]
            inventory = bench.root / f"seed-{n}.toml"
            inventory.write_text("".join(f'[[hosts]]\nname = "s{i}"\nurl = "{s.url}"\n\n'
                                         for i, s in enumerate(servers))
                                 + f'[groups.all]\n[[groups.all.models]]\nname = "{name}"\n\n'
                                 "[pull]\ninsecure = true\n")
            gets = registry.blob_gets()
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "provision", "fleet", "-i",
                                   str(inventory), "--seed", "--no-verify", "--json"],
                                  cwd=REPO, env=env, capture_output=True, text=True)
            took = time.monotonic() - started
            for server in servers:
                bench.retire(server)
            try:
                seed = json.loads(done.stdout)["seed"]
            except (ValueError, KeyError, TypeError):
                print(f"  N={n:2d}: exit {done.returncode}, no seed figures: "
                      f"{done.stderr.strip()[-200:]}")
                continue
            print(f"  N={n:2d}, {attempt}: {registry.blob_gets() - gets} registry blob "
                  f"requests, {human_bytes(seed['registry_bytes'])} from the registry, "
                  f"{human_bytes(seed['sent_bytes'])} sent, {took:.1f}s, exit "
                  f"{done.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-mb", type=int, default=100,
                        help="size of the model pushed to N servers (default 100)")
    parser.add_argument("--servers", default="1,4,16", help="the N to try (default 1,4,16)")
    parser.add_argument("--big-gb", type=float, default=3.0,
                        help="size of the model for the memory figures (default 3; 0 skips)")
    parser.add_argument("--tmp", type=Path, default=None, help="where big files go")
    args = parser.parse_args()
    reason = why_no_server()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    root = Path(tempfile.mkdtemp(prefix="bench-bundle-", dir=args.tmp))
    bench = None
    registry = None
    try:
        bench = Bench(root)
        registry = Registry(root / "registry").start()
        seed = bench.server()
        size = args.model_mb * 1_000_000
        make_model(bench, seed, "bench", size, 3)
        name = seed.publish("bench", registry, "library/bench:latest")
        total = sum(layer["size"] for layer in _layers(seed, "bench"))
        print(f"machine: {os.cpu_count()} CPUs; real Ollama "
              f"{seed.api('/api/version')['version']}; registry at "
              f"{registry.host}; files in {root}")
        registry_traffic(bench, registry, name, [int(x) for x in args.servers.split(",")],
                         total)
        upload_throughput(bench, seed, registry, name, "bench", size)
        seed_traffic(bench, registry, name, [int(x) for x in args.servers.split(",")], total)
        if args.big_gb > 0:
            big_model_memory(bench, seed, registry, int(args.big_gb * 1e9))
    except RuntimeError as exc:  # a server or the registry did not start
        print(f"cannot run: {exc}", file=sys.stderr)
        return 1
    finally:
        if bench is not None:
            bench.close()
        if registry is not None:
            registry.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _layers(server: RealOllama, model: str) -> list[dict]:
    import json

    path = server.models / "manifests" / "registry.ollama.ai" / "library" / model / "latest"
    manifest = json.loads(path.read_text())
    return [manifest["config"], *manifest["layers"]]


if __name__ == "__main__":
    raise SystemExit(main())

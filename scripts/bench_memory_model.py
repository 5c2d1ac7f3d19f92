#!/usr/bin/env python3
"""How close is the memory estimate to what a real Ollama reports once a model is loaded?

Writes llama-shaped GGUF files of realistic sizes (Qwen2.5-0.5B's and Llama-3.2-1B's
dimensions, F16 and Q8_0, with the `gguf` package; the weights are zeros in a sparse
file, which is all a memory estimate needs), creates each on the real Ollama in
../shared/ollama (OLLAMA_PROVISION_SHARED overrides), loads it at two context lengths,
and prints the tool's prediction (`ollama-provision hardware --json --num-ctx N`, run as
a user would) against the size `/api/ps` reports, with llama-server's own buffer sizes
from the server log. Goal: within 10 % for every case.

    python scripts/bench_memory_model.py [--contexts 2048,8192] [--shapes 0.5b,1b]

It needs a few GB in the temp folder for the models' blobs while it runs (removed at
the end) and a CPU the shared build runs on (AVX2/FMA/F16C). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.real import (  # noqa: E402
    RealOllama,
    cli_env,
    create_from_gguf,
    load,
    run_cli,
    runnable_copy,
    unload,
    why_no_server,
)
from tests.real.gguf import SHAPES, write_gguf  # noqa: E402

MIB = 1 << 20
_BUFFER = re.compile(r"(\S+)\s+(model|KV|compute|output|RS) buffer size\s*=\s*([\d.]+) MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", default="2048,8192")
    parser.add_argument("--shapes", default="0.5b,1b")
    parser.add_argument("--types", default="F16,Q8_0")
    args = parser.parse_args(argv)
    reason = why_no_server()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    contexts = [int(c) for c in args.contexts.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    rows: list[dict[str, object]] = []
    srv = RealOllama(runnable_copy(work / "dist"), work / "server").start()
    try:
        env = cli_env(work / "home", OLLAMA_HOST=srv.host)
        for key in args.shapes.split(","):
            shape = SHAPES[key]
            for file_type in args.types.split(","):
                name = f"bench-{key}-{file_type.lower().replace('_', '')}"
                gguf = work / f"{name}.gguf"
                write_gguf(gguf, shape, file_type)
                create_from_gguf(srv, name, gguf)
                gguf.unlink()
                for ctx in contexts:
                    rows.append(_case(srv, env, name, ctx))
                    print(_row(rows[-1]), flush=True)
                srv.delete(name)
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    worst = max(abs(float(r["error"])) for r in rows)
    print(f"\nworst error {worst:.1%} over {len(rows)} cases "
          f"({'within' if worst <= 0.10 else 'OUTSIDE'} the 10 % goal)")
    return 0 if worst <= 0.10 else 1


def _case(srv: RealOllama, env: dict[str, str], name: str, ctx: int) -> dict[str, object]:
    result = run_cli(env, "hardware", "--json", "--num-ctx", str(ctx), name)
    model = json.loads(result.stdout)["models"][0]
    offset = srv.log.stat().st_size
    started = time.perf_counter()
    loaded = load(srv, name, ctx)
    seconds = time.perf_counter() - started
    log = srv.log.read_text(errors="replace")[offset:]
    buffers = {kind: float(mib) for _, kind, mib in _BUFFER.findall(log)}
    unload(srv, name)
    predicted, real = int(model["memory"]["total"]), int(loaded["size"])
    return {"model": name, "num_ctx": ctx, "predicted": predicted, "ps": real,
            "error": (predicted - real) / real, "buffers": buffers,
            "memory": model["memory"], "load_s": seconds}


def _row(r: dict[str, object]) -> str:
    b = r["buffers"]
    assert isinstance(b, dict)
    m = r["memory"]
    assert isinstance(m, dict)
    return (f"{r['model']:<18} ctx {r['num_ctx']:>5}  predicted {int(r['predicted']) / MIB:8.1f}"
            f" MiB  /api/ps {int(r['ps']) / MIB:8.1f} MiB  {float(r['error']):+7.2%}   "
            f"[server: model {b.get('model', 0):.0f} KV {b.get('KV', 0):.0f} compute "
            f"{b.get('compute', 0):.1f} output {b.get('output', 0):.2f} | tool: weights "
            f"{int(m['weights']) / MIB:.0f} KV {int(m['kv_cache']) / MIB:.0f} compute+output "
            f"{int(m['graph']) / MIB:.1f}]")


if __name__ == "__main__":
    raise SystemExit(main())

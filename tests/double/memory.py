"""Where a model runs and what it costs: weights + KV cache + compute graph, placed on
the GPUs (Ollama's per-GPU minimum), the rest in system memory, or the load fails."""

from __future__ import annotations

import time
from typing import Any

from tests.double.catalog import CatalogModel
from tests.double.names import parse_name
from tests.double.state import Installed, Loaded, Placement
from tests.double.store import ModelStore
from tests.double.transport import ApiError, Stopping
from tests.double.wire import GIB, MIB, human_bytes2, parse_keep_alive, version_tuple

GPU_MINIMUM = 457 * MIB  # Ollama's per-GPU minimum (CUDA/ROCm)


class MemoryModel(ModelStore):
    """Placement and loading (`/api/ps`, `/api/generate`): size = weights + KV cache
    (f16, num_ctx x num_parallel, capped at the trained context) + compute graph."""

    def load(self, name: str, keep_alive: Any = None, num_ctx: int | None = None) -> None:
        """Load an installed model as /api/generate would (raises on memory errors)."""
        inst = self._get_installed(parse_name(name))
        if inst is None:
            raise KeyError(name)
        self._load(inst, {"num_ctx": num_ctx} if num_ctx else {}, keep_alive)

    def loaded_names(self) -> list[str]:
        return [m.name for m in self._loaded_sorted()]

    def placement(self, name: str, num_ctx: int | None = None) -> Placement:
        """Where a model would run (size, size_vram, cpu_bytes, tokens/s); a load fails
        when cpu_bytes > memory."""
        inst = self._get_installed(parse_name(name))
        model = inst.source if inst else self.catalog_model(name)
        weights = inst.weights.size if inst else model.artifacts(
            self._revisions.get(model.key, 0)).weights.size
        return self._placement(model, weights, num_ctx)

    # ---- internals -----------------------------------------------------------------------
    def _default_ctx(self) -> int:
        version = version_tuple(self.version)
        if version < (0, 6, 7):
            return 2048
        if version < (0, 15, 5):
            return 4096
        total = sum(self.vram)
        return 262144 if total >= 47 * GIB else 32768 if total >= 23 * GIB else 4096

    def _placement(self, model: CatalogModel, weights: int, num_ctx: int | None,
                   params: dict[str, Any] | None = None) -> Placement:
        ctx = int(num_ctx or (params or {}).get("num_ctx") or self._default_ctx())
        ctx = min(ctx * self.num_parallel, model.context_length)
        blocks = model.block_count
        kv = ctx * blocks * model.head_count_kv * (model.head_dim_k + model.head_dim_v) * 2
        e, h, v = model.embedding_length, model.head_count, model.vocab_size
        graph = 4 * 512 * max(1 + 4 * e + ctx * (1 + h), e + v)
        total = weights + kv + graph
        if not self.vram:
            vram_bytes = 0
        elif any(total + GPU_MINIMUM <= g for g in self.vram):
            vram_bytes = total
        else:
            per_layer = (weights + kv) / (blocks + 1)
            layers = 0
            for g in self.vram:
                room = g - GPU_MINIMUM - graph
                if room >= 2 * per_layer:
                    layers += int(room // per_layer)
            layers = min(layers, blocks + 1)
            vram_bytes = total if layers >= blocks + 1 else int(total * layers / (blocks + 1))
        cpu = total - vram_bytes
        if self.tokens_per_second:
            tps = float(self.tokens_per_second)
        else:
            gpu_w = weights * vram_bytes / total
            seconds = (gpu_w / self.gpu_bandwidth + (weights - gpu_w) / self.cpu_bandwidth) / 0.7
            tps = 1.0 / seconds if seconds > 0 else 1000.0
        return Placement(total, vram_bytes, cpu, ctx, tps)

    def _load(self, inst: Installed, options: dict[str, Any],
              keep_alive: Any) -> tuple[Loaded, int]:
        """Load (or refresh) a model; returns it and the load duration in ns."""
        params = inst.params()
        num_ctx = options.get("num_ctx") or params.get("num_ctx")
        place = self._placement(inst.source, inst.weights.size, num_ctx)
        if place.cpu_bytes > self.memory:
            raise ApiError(500, f"model requires more system memory "
                                 f"({human_bytes2(place.cpu_bytes)}) than is available "
                                 f"({human_bytes2(self.memory)})")
        seconds = parse_keep_alive(keep_alive)
        now = time.time_ns()
        expires = now + (int(seconds * 1e9) if seconds is not None else 200 * 365 * 86400 * 10**9)
        with self._lock:
            current = self._loaded.get(inst.name.key)
            runner = self._runner_for(inst) if current is None else None
            if runner is not None and runner.context_length == place.context_length:
                # As Ollama 0.32: a runner already loaded with these weights and this
                # context serves the model too, and `/api/ps` lists only the model that
                # started it (a custom model after its base shows up as the base).
                runner.expires_ns = max(runner.expires_ns, expires)
                return runner, 15_000_000
            fresh = current is None or current.context_length != place.context_length
        if fresh and self.load_delay and self._stopping.wait(self.load_delay):
            raise Stopping()
        loaded = Loaded(key=inst.name.key, name=inst.name.short, size=place.size,
                         size_vram=place.size_vram, context_length=place.context_length,
                         expires_ns=expires, digest=inst.digest, details=inst.details(),
                         tokens_per_second=place.tokens_per_second,
                         weights=inst.weights.digest)
        with self._lock:
            self._loaded[inst.name.key] = loaded
        load_ns = int((0.25 + inst.weights.size / 2e9) * 1e9) if fresh else 15_000_000
        return loaded, load_ns

    def _unload(self, inst: Installed) -> None:
        with self._lock:
            if self._loaded.pop(inst.name.key, None) is None:
                runner = self._runner_for(inst)  # the runner that served it
                if runner is not None:
                    del self._loaded[runner.key]

    def _runner_for(self, inst: Installed) -> Loaded | None:
        """A loaded model holding `inst`'s weights (the caller holds the lock)."""
        weights = inst.weights.digest
        return next((m for m in self._loaded.values() if m.weights == weights), None)

    def _loaded_sorted(self) -> list[Loaded]:
        now = time.time_ns()
        with self._lock:
            for key, m in list(self._loaded.items()):
                if m.expires_ns <= now:
                    del self._loaded[key]
            return sorted(self._loaded.values(), key=lambda m: m.expires_ns, reverse=True)

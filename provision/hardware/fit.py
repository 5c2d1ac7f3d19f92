"""Will this model run on this machine, where, how fast, and if not, what would?

The estimate follows what the server does when it loads a model. Two engines:

- Ollama before 0.30 (`llm/memory.go`, `fs/ggml` GraphSize): the context it will actually
  use, a KV cache for that context, a compute graph by Ollama's per-architecture formula,
  a fixed minimum per GPU;
- Ollama 0.30 and later run every GGUF model in llama.cpp's `llama-server`, and
  `/api/ps` reports the buffers llama-server allocates (`llm/llama_server.go`
  memoryParsingWriter): the weights, the KV cache, an output buffer (one row of logits
  per sequence) and a compute buffer. The compute buffer is the attention mask (context x
  batch, f16 with flash attention) plus the largest set of activations alive at once
  for one batch, which for a transformer is the feed-forward step; the batch is 512
  tokens, 1024 above a 4096 context and 2048 above 32768 when memory allows
  (`server/sched.go` automaticGenerationBatch). Measured against the real 0.32.15 by
  `scripts/bench_memory_model.py`.

Then layers are offloaded one by one to the GPUs (largest free memory first, as few GPUs
as a full fit needs) until VRAM runs out; the rest runs on the CPU from system RAM.
Ollama refuses to load when that CPU share is more than free RAM + free swap; a pull
fails when the disk is full.

Two deliberate differences, both towards what the process really uses: the token
embeddings (kept in system RAM) and, for a CPU-only run, the compute graph count
against RAM; Ollama's own check leaves them out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from provision.hardware.gpus import GPU
from provision.hardware.machine import Machine
from provision.hardware.needs import ModelNeeds
from provision.hardware.speed import tokens_per_second
from provision.result import Status
from provision.versions import parse_version

MIB = 1 << 20
GIB = 1 << 30
BATCH = 512  # Ollama's default num_batch
GPU_MINIMUM = {"cuda": 457 * MIB, "rocm": 457 * MIB, "metal": 512 * MIB}
# From 0.30 llama-server places layers itself (`--fit`), leaving this much free per device.
LLAMA_SERVER_SINCE = (0, 30, 0)
LLAMA_SERVER_GPU_MARGIN = 1024 * MIB
# The automatic batch of 0.30+: (context above, batch, surcharge, most of memory predicted).
_AUTO_BATCH = ((32768, 2048, 2 * GIB, 0.60), (4096, 1024, 768 * MIB, 0.75))
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # per element, with block scales
# Default context by server version: 2048 before 0.6.7, 4096 from 0.6.7, and from 0.15.5
# chosen by total VRAM.
_CTX_4096_SINCE = (0, 6, 7)
_CTX_BY_VRAM_SINCE = (0, 15, 5)
_CTX_BY_VRAM = ((47 * GIB, 262144), (23 * GIB, 32768), (0, 4096))


class Verdict(Status):
    """Where a model would run here (stable: part of the `--json` schemas)."""

    GPU = "gpu"  # entirely on GPUs
    PARTIAL = "partial"  # some layers on GPUs, the rest on the CPU
    CPU = "cpu"  # on the CPU alone
    NO_FIT = "no-fit"  # not at all (see the reasons)
    UNKNOWN = "unknown"  # could not be judged


@dataclass(frozen=True)
class Settings:
    """What the server will use for this model: from flags, its environment and version."""

    num_ctx: int  # per request, after capping at the trained context
    num_ctx_source: str  # where it came from, for people
    parallel: int  # OLLAMA_NUM_PARALLEL
    kv_type: str  # "f16", "q8_0", "q4_0"
    flash_attention: bool
    gpu_overhead: int  # OLLAMA_GPU_OVERHEAD bytes, reserved on each GPU
    notes: tuple[str, ...] = ()
    engine: str = "ollama"  # "llama-server" (Ollama >= 0.30) or "ollama" (older)
    batch: int = BATCH  # tokens per batch, which sizes the compute buffer

    @property
    def kv_tokens(self) -> int:
        return self.num_ctx * self.parallel


@dataclass(frozen=True)
class Placement:
    gpu: int  # GPU index
    name: str
    layers: int  # of the model's layers (the output layer counts as one)
    vram: int  # bytes this model takes on the card
    free: int  # bytes the card had free


@dataclass(frozen=True)
class Reason:
    kind: str  # "ram", "vram", "disk"
    need: int
    have: int
    message: str


@dataclass(frozen=True)
class Fit:
    model: str
    verdict: Verdict
    layers_on_gpu: int
    layers_total: int  # blocks + the output layer, as Ollama counts ("offloaded 33/33")
    settings: Settings
    weights: int  # bytes
    kv_cache: int
    graph: int
    gpu_overhead: int  # per-GPU minimum + OLLAMA_GPU_OVERHEAD, summed over used GPUs
    vram: int  # bytes on GPUs
    ram: int  # bytes in system RAM
    placements: tuple[Placement, ...]
    headroom_vram: int | None  # free VRAM left on the used GPUs (None: no GPU used)
    headroom_ram: int  # available RAM (+ free swap) left
    headroom_disk: int | None  # free disk after the download (None: installed / unknown)
    reasons: tuple[Reason, ...]  # why it does not fit (empty when it does)
    tokens_per_second: tuple[float, float] | None
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return self.vram + self.ram

    @property
    def fits(self) -> bool:
        return self.verdict != Verdict.NO_FIT

    @property
    def where(self) -> str:
        if self.verdict == Verdict.GPU:
            return "GPU"
        if self.verdict == Verdict.PARTIAL:
            return f"{self.layers_on_gpu}/{self.layers_total} layers on GPU"
        if self.verdict == Verdict.CPU:
            return "CPU"
        return "-"


def server_settings(needs: ModelNeeds, machine: Machine, *, num_ctx: int | None = None,
                    server_version: str | None = None,
                    environ: dict[str, str] | None = None) -> Settings:
    """The context, parallelism and KV cache type the server will use for this model.

    Precedence as in Ollama: a request's num_ctx (`--num-ctx`), the model's own
    `PARAMETER num_ctx`, `OLLAMA_CONTEXT_LENGTH`, then the version's default.
    """
    env = os.environ if environ is None else environ
    notes: list[str] = []
    version = parse_version(server_version)
    asked = True  # a context someone set, as opposed to the version's default
    if num_ctx:
        ctx, source = num_ctx, "--num-ctx"
    elif needs.num_ctx_param:
        ctx, source = needs.num_ctx_param, "the model's PARAMETER num_ctx"
    elif _env_int(env, "OLLAMA_CONTEXT_LENGTH"):
        ctx, source = _env_int(env, "OLLAMA_CONTEXT_LENGTH"), "OLLAMA_CONTEXT_LENGTH"
    else:
        asked = False
        ctx, source = default_num_ctx(version, machine.vram_total)
        if version is None:
            source += " (server version unknown: newest rule)"
    if needs.arch.context_length and ctx > needs.arch.context_length:
        if asked:  # a default beyond it is capped by Ollama without a word: so here
            notes.append(f"num_ctx {ctx} is more than the model was trained for: Ollama "
                         f"uses {needs.arch.context_length}")
        ctx = needs.arch.context_length
    parallel = max(_env_int(env, "OLLAMA_NUM_PARALLEL") or 1, 1)
    if needs.arch.embedding_model:
        parallel = 1  # Ollama loads embedding models with one sequence
    engine = "llama-server" if version is None or version >= LLAMA_SERVER_SINCE else "ollama"
    flash_env = env.get("OLLAMA_FLASH_ATTENTION", "").strip().lower()
    flash = flash_env in ("1", "true", "yes", "on")
    if engine == "llama-server" and flash_env not in ("0", "false", "no", "off"):
        flash = True  # `--flash-attn auto`: on wherever the backend has it (the CPU does)
    if needs.arch.embedding_model:
        flash = False
    kv_type = env.get("OLLAMA_KV_CACHE_TYPE", "").strip().lower() or "f16"
    if kv_type not in KV_BYTES:
        notes.append(f"OLLAMA_KV_CACHE_TYPE={kv_type} is not one Ollama knows: f16 used")
        kv_type = "f16"
    elif kv_type != "f16" and not flash:
        notes.append(f"OLLAMA_KV_CACHE_TYPE={kv_type} needs flash attention: f16 used")
        kv_type = "f16"
    batch = BATCH
    if engine == "llama-server" and not needs.arch.embedding_model:
        batch = auto_batch(needs, machine, ctx * parallel)
    return Settings(num_ctx=ctx, num_ctx_source=source, parallel=parallel, kv_type=kv_type,
                    flash_attention=flash, gpu_overhead=_env_int(env, "OLLAMA_GPU_OVERHEAD"),
                    notes=tuple(notes), engine=engine, batch=batch)


def auto_batch(needs: ModelNeeds, machine: Machine, context: int) -> int:
    """The batch Ollama 0.30+ picks: larger for long contexts when memory allows it,
    judged against its own rough prediction (file size + an f16 KV cache)."""
    a = needs.arch
    heads_kv = min((h for h in a.head_count_kv if h), default=1)
    head_dim = a.embedding_length // a.head_count if a.head_count else 0
    predicted = (needs.disk_size or needs.weights) \
        + 2 * a.block_count * heads_kv * head_dim * context * 2
    available = sum(g.free for g in machine.usable_gpus) or machine.memory.available
    for above, batch, surcharge, share in _AUTO_BATCH:
        if context > above and available and predicted <= available * share \
                and surcharge <= available * 0.8 - predicted:
            return batch
    return BATCH


def default_num_ctx(version: tuple[int, int, int] | None, vram_total: int) -> tuple[int, str]:
    if version is not None and version < _CTX_4096_SINCE:
        return 2048, "default (Ollama < 0.6.7)"
    if version is not None and version < _CTX_BY_VRAM_SINCE:
        return 4096, "default (Ollama 0.6.7-0.15.4)"
    ctx = next(c for limit, c in _CTX_BY_VRAM if vram_total >= limit)
    return ctx, f"default for {vram_total / GIB:.0f} GiB VRAM (Ollama >= 0.15.5)"


# -- memory pieces ---------------------------------------------------------------------------


def kv_cache_per_layer(needs: ModelNeeds, settings: Settings) -> list[int]:
    """KV bytes per layer: (K + V head dims) x KV heads x tokens x bytes per element."""
    arch = needs.arch
    per_element = KV_BYTES[settings.kv_type]
    per_head = arch.key_length + arch.value_length
    tokens = settings.kv_tokens
    sizes = []
    for i, heads_kv in enumerate(arch.head_count_kv):
        layer_tokens = tokens
        if arch.name == "gemma3" and arch.sliding_window and (i + 1) % 6:
            # Five of every six layers attend to a sliding window only.
            layer_tokens = min(tokens, settings.parallel * arch.sliding_window + BATCH)
        sizes.append(int(per_head * heads_kv * layer_tokens * per_element))
    return sizes


def llama_server_buffers(needs: ModelNeeds, settings: Settings) -> int:
    """Output + compute buffer bytes llama-server allocates (Ollama >= 0.30), as measured.

    Per token of a batch, the activations alive at the widest point: the feed-forward
    step holds gate, up and their product (3 x FF) beside the residual stream and its
    norm (2 x E), plus two more E-sized tensors when FF leaves no room to reuse for them;
    attention holds about five E-sized tensors (or four and K, V when those are wider).
    The attention mask is context x batch in f16 (flash attention); without flash
    attention the scores (context x batch x heads, f32) come on top.
    """
    a = needs.arch
    e = a.embedding_length
    ff = a.feed_forward_length or 4 * e
    if a.expert_count and a.expert_used_count:
        ff = max(ff if not a.expert_feed_forward_length else 0,
                 (a.expert_feed_forward_length or ff) * a.expert_used_count)
    kv_dim = max(a.head_count_kv, default=1) * max(a.key_length, a.value_length)
    per_token = max(max(5 * e, 4 * e + 2 * kv_dim),
                    3 * ff + 2 * e + min(2 * e, max(ff - 2 * e, 0)))
    ubatch = min(settings.batch, settings.kv_tokens)
    mask = settings.num_ctx * ubatch * 2
    scores = 0 if settings.flash_attention else 2 * settings.num_ctx * ubatch * a.head_count * 4
    output = 0 if a.embedding_model else settings.parallel * a.vocab_size * 4
    return 4 * ubatch * per_token + mask + scores + output


def graph_size(needs: ModelNeeds, settings: Settings, kv_total: int) -> tuple[int, int]:
    """(partial offload, full offload) compute-graph bytes, by Ollama's formulas."""
    if settings.engine == "llama-server":
        buffers = llama_server_buffers(needs, settings)
        return buffers, buffers
    a = needs.arch
    c = settings.kv_tokens
    b = min(settings.num_ctx, BATCH)
    e, v, h = a.embedding_length, a.vocab_size, a.head_count
    hkv = max(a.head_count_kv, default=1)
    eh = e // h if h else 0
    ehk = a.key_length
    name = a.name
    if name in ("llama", "llama4"):
        full = max(4 * b * (1 + 4 * e + c * (1 + h)), 4 * b * (e + v))
        partial = 4 * b * e + max(
            4 * b * (1 + e + max(c, e)) + e * e * 9 // 16 + 4 * c * (b * h + eh * hkv),
            4 * b * (e + v) + e * v * 105 // 128)
    elif name == "qwen2":
        full = max(4 * b * (e + v), 4 * b * (1 + 2 * e + c + c * h))
        partial = max(4 * b * (e + v) + e * v * 105 // 128,
                      4 * (b * (1 + 2 * e + c * (1 + h)) + e * (1 + c)))
    elif name in ("gemma", "gemma2", "gemma3", "gemma3n"):
        full = max(4 * b * (e + v), 4 * b * (2 + c + c * h + 2 * e + 2 * ehk * h))
        partial = max(4 * e * b + e * v * 105 // 128 + 4 * v * b,
                      4 * b * (2 * e + 1 + 2 * ehk * h + c + c * h) + 4 * ehk * c * 8
                      + e * ehk * h * 9 // 16)
        if name == "gemma3n":
            full, partial = full * 4, partial * 4
    elif name == "command-r":
        full = max(4 * b * (e + v), 4 * b * (2 + 4 * e + c * (1 + h)))
        partial = max(4 * b * (e + v) + e * v * 105 // 128,
                      4 * b * (1 + 2 * e + c * (1 + h)) + 4 * e * c + e * e * 9 // 16)
    elif name == "phi2":
        full = max(4 * b * (e + v), 4 * b * (1 + 4 * e + c + c * h))
        partial = max(4 * b * (2 * e + v) + e * v * 105 // 128, 4 * b * (2 + 3 * e + c + c * h))
    else:  # Ollama's fallback for architectures without a formula
        partial = full = a.gqa * kv_total // 6
    return partial, max(full, 0) or partial


# -- placing layers on GPUs ------------------------------------------------------------------


@dataclass(frozen=True)
class _Offload:
    gpus: tuple[GPU, ...]
    layers: int  # placed, output layer included
    per_gpu_layers: tuple[int, ...]
    per_gpu_vram: tuple[int, ...]
    full: bool
    graph: int
    gpu_layers: frozenset[int]  # which blocks are on a GPU (-1: the output layer)


def gpu_minimum(library: str, engine: str = "ollama") -> int:
    """What the server leaves free on a GPU beyond the model: Ollama's fixed minimum per
    library, or llama-server's fit margin (0.30+)."""
    if engine == "llama-server":
        return LLAMA_SERVER_GPU_MARGIN
    return GPU_MINIMUM.get(library, 457 * MIB)


def _offload(gpus: list[GPU], layers: list[int], output: int, graph_partial: int,
             graph_full: int, overhead: int, projector: int,
             engine: str = "ollama") -> _Offload:
    """Ollama's layer placement over GPUs of one library (sorted by free memory)."""
    if gpus and gpus[0].library == "metal":
        graph_partial = graph_full  # no partial-offload overhead on Metal
    elif len(gpus) > 1:
        graph_full = graph_partial  # several GPUs always use the partial graph
    graph = max(graph_partial, graph_full)
    first_layer = layers[0] if layers else 0
    alloc = [0] * len(gpus)
    counts = [0] * len(gpus)
    with_space: list[int] = []
    for i, gpu in enumerate(gpus):
        extra = projector if not with_space else 0
        minimum = gpu_minimum(gpu.library, engine)
        if gpu.free < overhead + extra + graph + minimum + 2 * first_layer:
            continue  # cannot hold the graph, its minimum and a layer or two
        with_space.append(i)
        alloc[i] = overhead + minimum + first_layer + extra  # one layer's worth as buffer
    placed: set[int] = set()
    for index, size in enumerate(layers):
        for j in range(len(with_space), 0, -1):
            g = with_space[index % j]
            if gpus[g].free > alloc[g] + graph + size:
                alloc[g] += size
                counts[g] += 1
                placed.add(index)
                break
            with_space.remove(g)
    if output:
        for j in range(len(with_space), 0, -1):
            g = with_space[len(placed) % j]
            if gpus[g].free > alloc[g] + graph + output:
                alloc[g] += output
                counts[g] += 1
                placed.add(-1)
                break
    full = len(placed) == len(layers) + (1 if output else 0)
    used_graph = graph_full if full else graph_partial
    vram = tuple(a + used_graph if c else 0 for a, c in zip(alloc, counts))
    return _Offload(gpus=tuple(gpus), layers=len(placed), per_gpu_layers=tuple(counts),
                    per_gpu_vram=vram, full=full, graph=used_graph, gpu_layers=frozenset(placed))


def _best_offload(machine: Machine, layers: list[int], output: int, graph_partial: int,
                  graph_full: int, overhead: int, projector: int,
                  engine: str = "ollama") -> _Offload | None:
    libraries: dict[str, list[GPU]] = {}
    for gpu in machine.usable_gpus:
        libraries.setdefault(gpu.library, []).append(gpu)
    best: _Offload | None = None
    for group in libraries.values():
        ordered = sorted(group, key=lambda g: g.free, reverse=True)
        for n in range(1, len(ordered) + 1):  # as few GPUs as a full fit needs
            attempt = _offload(ordered[:n], layers, output, graph_partial, graph_full,
                               overhead, projector, engine)
            if attempt.full:
                return attempt
        attempt = _offload(ordered, layers, output, graph_partial, graph_full, overhead,
                           projector, engine)
        if best is None or sum(attempt.per_gpu_vram) > sum(best.per_gpu_vram):
            best = attempt
    return best if best is not None and best.layers > 0 else None


# -- the verdict -----------------------------------------------------------------------------


def fit_model(needs: ModelNeeds, machine: Machine, num_ctx: int | None = None,
          server_version: str | None = None, *, environ: dict[str, str] | None = None,
          settings: Settings | None = None) -> Fit:
    """Where the model runs on this machine with the context Ollama will use, or why not."""
    settings = settings or server_settings(needs, machine, num_ctx=num_ctx,
                                           server_version=server_version, environ=environ)
    kv = kv_cache_per_layer(needs, settings)
    kv_total = sum(kv)
    graph_partial, graph_full = graph_size(needs, settings, kv_total)
    layers = [size + kv_layer for size, kv_layer in zip(needs.layers, kv)]
    offload = _best_offload(machine, layers, needs.output, graph_partial, graph_full,
                            settings.gpu_overhead, needs.projector, settings.engine)
    notes = list(settings.notes)
    layers_total = needs.arch.block_count + 1
    placements: tuple[Placement, ...] = ()
    if offload is None:
        vram = 0
        graph = graph_partial
        ram = needs.weights + kv_total + graph + needs.projector
        on_gpu = 0
        gpu_min = 0
    else:
        vram = sum(offload.per_gpu_vram)
        graph = offload.graph
        on_gpu = offload.layers
        cpu_layers = sum(s for i, s in enumerate(layers) if i not in offload.gpu_layers)
        cpu_output = needs.output if -1 not in offload.gpu_layers else 0
        ram = cpu_layers + cpu_output + needs.cpu_only
        used = [g for g, c in zip(offload.gpus, offload.per_gpu_layers) if c]
        gpu_min = sum(gpu_minimum(g.library, settings.engine) + settings.gpu_overhead
                      for g in used)
        placements = tuple(Placement(gpu=g.index, name=g.name, layers=c, vram=v, free=g.free)
                           for g, c, v in zip(offload.gpus, offload.per_gpu_layers,
                                              offload.per_gpu_vram) if c)
    unified = any(g.unified for g in machine.usable_gpus)
    ram_free = machine.memory.available - (vram if unified else 0)
    swap = machine.memory.swap_free if machine.os != "darwin" else 0
    reasons: list[Reason] = []
    if ram > ram_free + swap:
        kinds = ("vram", "ram") if machine.usable_gpus else ("ram",)
        what = "the part that does not fit in VRAM" if offload else "it"
        for kind in kinds:
            have = sum(g.free for g in machine.usable_gpus) if kind == "vram" else ram_free + swap
            need = vram + ram if kind == "vram" else ram
            reasons.append(Reason(kind, need, have, (
                f"needs {_gib(vram + ram)} in all; the GPUs have {_gib(have)} free"
                if kind == "vram" else
                f"{what} needs {_gib(ram)} of system RAM; {_gib(ram_free)} available"
                + (f" + {_gib(swap)} swap" if swap else ""))))
    elif ram > ram_free:
        notes.append(f"uses {_gib(ram - ram_free)} of swap: expect it to be very slow")
    headroom_disk = None
    if not needs.installed and needs.download is not None and machine.disk.free is not None:
        headroom_disk = machine.disk.free - needs.download
        if headroom_disk < 0:
            reasons.append(Reason("disk", needs.download, machine.disk.free,
                                  f"the download is {_gib(needs.download)}; "
                                  f"{_gib(machine.disk.free)} free in {machine.disk.path}"))
    if reasons:
        verdict = Verdict.NO_FIT
    elif offload is None:
        verdict = Verdict.CPU
    elif offload.full:
        verdict = Verdict.GPU
    else:
        verdict = Verdict.PARTIAL
    if offload is None and machine.usable_gpus and verdict != Verdict.NO_FIT:
        notes.append("too little free VRAM for even one layer with the graph: runs on CPU")
    for gpu in machine.gpus:
        if not gpu.usable:
            notes.append(f"GPU {gpu.index} ({gpu.name}) not used: {gpu.why_unusable}")
    speed = _speed(needs, machine, offload)
    return Fit(
        model=needs.name, verdict=verdict, layers_on_gpu=on_gpu, layers_total=layers_total,
        settings=settings, weights=needs.weights, kv_cache=kv_total, graph=graph,
        gpu_overhead=gpu_min, vram=vram, ram=ram, placements=placements,
        headroom_vram=(sum(p.free - p.vram for p in placements) if placements else None),
        headroom_ram=ram_free + swap - ram, headroom_disk=headroom_disk,
        reasons=tuple(reasons), tokens_per_second=speed, notes=tuple(notes))


def _speed(needs: ModelNeeds, machine: Machine,
           offload: _Offload | None) -> tuple[float, float] | None:
    """Every active weight is read once per token: time = bytes / bandwidth, per device."""
    active = 1.0
    if needs.arch.expert_count and needs.arch.expert_used_count:
        # Expert FFNs are nearly all of an MoE's weights; only the used ones are read.
        active = 0.05 + 0.95 * needs.arch.expert_used_count / needs.arch.expert_count
    unified = next((g for g in machine.usable_gpus if g.unified), None)
    ram_bw = unified.bandwidth if unified and unified.bandwidth else machine.memory.bandwidth
    parts: list[tuple[int, float]] = []
    gpu_layers = offload.gpu_layers if offload else frozenset()
    cpu_bytes = sum(s for i, s in enumerate(needs.layers) if i not in gpu_layers)
    cpu_bytes += needs.output if -1 not in gpu_layers else 0
    parts.append((int(cpu_bytes * active), ram_bw))
    if offload is not None:
        for gpu, count in zip(offload.gpus, offload.per_gpu_layers):
            if not count:
                continue
            share = sum(s for i, s in enumerate(needs.layers) if i in gpu_layers)
            share += needs.output if -1 in gpu_layers else 0
            # Layers are spread over the used GPUs in proportion to their count.
            portion = share * count // max(offload.layers, 1)
            parts.append((int(portion * active), gpu.bandwidth or 0.0))
    return tokens_per_second(parts)


# -- what would fit --------------------------------------------------------------------------


def largest_context(needs: ModelNeeds, machine: Machine, fit: Fit, *,
                    server_version: str | None = None,
                    environ: dict[str, str] | None = None) -> tuple[int, Verdict] | None:
    """The largest num_ctx (a multiple of 256) that does better than `fit`: all on the GPU
    when it runs partly there or on the CPU beside a GPU; fits at all when it does not.
    None when no smaller context does."""
    if fit.verdict in (Verdict.PARTIAL, Verdict.CPU) and machine.usable_gpus:
        better = {Verdict.GPU}
    elif fit.verdict == Verdict.NO_FIT and not any(r.kind == "disk" for r in fit.reasons):
        better = {Verdict.GPU, Verdict.PARTIAL, Verdict.CPU}
    else:
        return None

    def verdict_at(ctx: int) -> Verdict:
        settings = replace(fit.settings, num_ctx=ctx, num_ctx_source="--num-ctx", notes=())
        return fit_model(needs, machine, settings=settings, environ=environ,
                     server_version=server_version).verdict

    # Memory grows with the context, so the contexts that do better form a prefix.
    low, high = 0, fit.settings.num_ctx // 256 - 1  # in units of 256 tokens
    while low < high:
        mid = (low + high + 1) // 2
        if verdict_at(mid * 256) in better:
            low = mid
        else:
            high = mid - 1
    if low < 1 or verdict_at(low * 256) not in better:
        return None
    return low * 256, verdict_at(low * 256)


def _env_int(env: dict[str, str] | os._Environ[str], key: str) -> int:
    try:
        return max(int(env.get(key, "").strip().strip("\"'")), 0)
    except ValueError:
        return 0


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"

"""What a model needs, from the best source there is, before anything is downloaded.

1. Installed: the server's `/api/show` (model_info and the tensor list: exact per-layer
   sizes) and `/api/tags` (size on disk).
2. Not pulled yet: the registry. The manifest gives the exact download and weights-blob
   size; the GGUF header, read with HTTP Range, gives the architecture. The budget is
   4 MiB and 4 requests per model: a header that fits in it (small vocabularies) is read
   whole and every tensor's size is known; a larger one (a Llama-3 header is ~8 MiB,
   almost all of it tokenizer strings that an estimate does not need) is read only up
   to the architecture keys and the vocabulary's length, which come first, and the
   per-layer split is derived from the exact blob size (`exact_layers=False`).
3. Offline: a rough estimate from the parameter count and quantization in the tag,
   labelled `rough`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provision.errors import ProvisionError
from provision.hardware.architecture import Architecture, MissingKey, from_metadata
from provision.hardware.gguf import (
    FILE_TYPES,
    GGML_TYPES,
    ArrayInfo,
    GGUFError,
    GGUFHeader,
    GGUFParser,
    tensor_bytes,
)
from provision.models.registry import ModelFiles, ModelManifest, RegistryClient, RegistryError
from provision.names import ModelName
from provision.server import InstalledModel, Inventory, ModelShow, OllamaServer, ServerError

log = logging.getLogger(__name__)

MIB = 1 << 20
FIRST_READ = 256 * 1024  # the architecture keys are in the first few KiB
HEADER_BUDGET = 4 * MIB  # bytes of header per model, all ranges together
REQUEST_BUDGET = 4  # registry requests per model: manifest, 1-2 ranges, params or config
MAX_RANGES = 2  # header ranges per model (the first, and the rest when it fits the budget)
PROJECTOR_MEDIA_TYPE = "application/vnd.ollama.image.projector"
PARAMS_MEDIA_TYPE = "application/vnd.ollama.image.params"

# Whole-file bits per weight of common quantizations (Llama-3.1-8B: the mixes keep the
# embeddings and output at higher precision): for rough estimates only.
AVERAGE_BPW = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.70,
    "Q5_K_S": 5.57, "Q5_1": 6.0, "Q5_0": 5.5, "Q4_K_M": 4.89, "Q4_K_S": 4.67, "Q4_1": 5.0,
    "Q4_0": 4.55, "IQ4_XS": 4.46, "IQ4_NL": 4.68, "Q3_K_L": 4.30, "Q3_K_M": 3.91,
    "Q3_K_S": 3.64, "Q2_K": 3.16, "MXFP4": 4.25,
}
# The ggml type of the output matrix and of the token embeddings, by file type
# (llama.cpp's quantizer keeps `output.weight` at Q6_K for every k-quant and legacy mix).
_OUTPUT_TYPE = {"F32": 0, "F16": 1, "BF16": 30, "Q8_0": 8}
_EMBED_TYPE = {"F32": 0, "F16": 1, "BF16": 30, "Q8_0": 8, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6,
               "Q5_1": 7, "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 11, "Q3_K_L": 11, "Q4_K_S": 12,
               "Q4_K_M": 12, "Q5_K_S": 13, "Q5_K_M": 13, "Q6_K": 14}
_TYPE_IDS = {name: type_id for type_id, (name, _, _) in GGML_TYPES.items()}


@dataclass(frozen=True)
class ModelNeeds:
    name: str  # short name, e.g. "llama3.1:8b"
    source: str  # "installed", "registry" or "rough"
    detail: str  # how it is known, for people
    arch: Architecture
    quantization: str  # "Q4_K_M"
    parameter_count: int | None
    weights: int  # bytes of tensor data (all of it)
    layers: tuple[int, ...]  # bytes of each repeating block (blk.N)
    output: int  # the output layer Ollama places last: output_norm + output (or tied embd)
    cpu_only: int  # token embeddings when a separate output exists: stay in system RAM
    exact_layers: bool  # per-layer sizes from the tensor list (else derived from totals)
    download: int | None  # bytes a pull fetches (0 when installed; None unknown)
    disk_size: int | None  # bytes on disk once pulled
    num_ctx_param: int | None = None  # the model's own PARAMETER num_ctx
    projector: int = 0  # a vision projector's weights (loaded with the model)
    requests: int = 0  # registry requests spent
    bytes_read: int = 0  # registry bytes received
    header_size: int | None = None  # GGUF header bytes (None: not read to the end)

    @property
    def installed(self) -> bool:
        return self.source == "installed"

    @property
    def parameter_size(self) -> str:
        return format_parameters(self.parameter_count)


def format_parameters(count: int | None) -> str:
    if not count:
        return ""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


# -- from the installed model -------------------------------------------------------------


def from_show(name: ModelName, show: ModelShow, installed: InstalledModel | None,
              verbose_show: ModelShow | None = None) -> ModelNeeds:
    """Needs of an installed model from its /api/show answer (and /api/tags entry).

    A server answering fields of the wrong type (model_info as a list) is a ProvisionError
    naming what is wrong, never a crash."""
    info = dict(_table(show, "model_info", name))
    if verbose_show:
        info.update({k: v for k, v in _table(verbose_show, "model_info", name).items()
                     if not k.startswith("tokenizer.")})
    tensors = [(str(t.get("name", "")), _shape(t.get("shape")),
                _TYPE_IDS.get(str(t.get("type", "")).upper()))
               for t in show.tensors]
    if tensors and not _int(info.get(f"{info.get('general.architecture')}.vocab_size")):
        embd = next((s for n, s, _ in tensors if n == "token_embd.weight" and len(s) == 2), None)
        if embd:
            info[f"{info.get('general.architecture')}.vocab_size"] = embd[1]
    try:
        arch = from_metadata(info)
    except (MissingKey, TypeError, ValueError, OverflowError) as exc:
        raise ProvisionError(f"{name.short}: the server's /api/show lacks {exc}"
                             if isinstance(exc, MissingKey) else
                             f"{name.short}: the server's /api/show has unusable "
                             f"model_info ({type(exc).__name__})") from exc
    details = _table(show, "details", name)
    quant = str(details.get("quantization_level") or
                FILE_TYPES.get(_int(info.get("general.file_type")), ""))
    size = installed.size if installed else None
    num_ctx = _num_ctx(show.parameters)
    if tensors and all(t is not None for _, _, t in tensors):
        split = _split_tensors([(n, s, int(t)) for n, s, t in tensors], arch.block_count)
        params = sum(_prod(s) for _, s, _ in tensors)
        return ModelNeeds(
            name=name.short, source="installed",
            detail="installed: /api/show tensor list (exact per-layer sizes)", arch=arch,
            quantization=quant, parameter_count=_int(info.get("general.parameter_count"))
            or params, weights=split[0], layers=split[1], output=split[2], cpu_only=split[3],
            exact_layers=True, download=0, disk_size=size, num_ctx_param=num_ctx)
    weights = size or 0
    derived = _derive(arch, quant, weights)
    return ModelNeeds(
        name=name.short, source="installed",
        detail="installed: /api/show model_info and the size on disk (layers derived)",
        arch=arch, quantization=quant,
        parameter_count=_int(info.get("general.parameter_count")) or None,
        weights=weights, layers=derived[0], output=derived[1], cpu_only=derived[2],
        exact_layers=False, download=0, disk_size=size, num_ctx_param=num_ctx)


def fetch_installed(server: OllamaServer, name: ModelName,
                    installed: InstalledModel | None) -> ModelNeeds:
    try:
        show = server.show(name)
        if show is None:
            raise ServerError("POST /api/show", "HTTP 404", status=404)
        verbose = None
        info = _table(show, "model_info", name)
        arch = info.get("general.architecture")
        if any(v in ([], None) for k, v in info.items()
               if k.startswith(f"{arch}.attention.head_count")):
            # Non-verbose /api/show empties arrays longer than 5 (per-layer head counts).
            verbose = server.show(name, verbose=True)
    except ServerError as exc:
        raise ProvisionError(f"{name.short}: /api/show failed: {exc.reason}") from exc
    return from_show(name, show, installed, verbose)


def _table(show: ModelShow, key: str, name: ModelName) -> Mapping[str, Any]:
    """An object-valued field of /api/show (absent: empty); anything else is an error."""
    if key in show.malformed:
        raise ProvisionError(f"{name.short}: the server's /api/show has {key} as a "
                             f"{show.malformed[key]}, not an object")
    return show.details if key == "details" else show.model_info


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _shape(value: Any) -> tuple[int, ...]:
    dims = _list(value)
    if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40
               for d in dims):
        return ()
    return tuple(dims)


# -- from the registry ----------------------------------------------------------------------


def from_registry(name: ModelName, registry: ModelFiles, *,
                  header_budget: int = HEADER_BUDGET) -> ModelNeeds:
    """Needs of a model not pulled yet: manifest + GGUF header by Range (+ params/config).

    Raises RegistryError (unknown model, unreachable registry) for the caller to decide.
    """
    requests0, bytes0 = registry.requests, registry.bytes_read
    manifest = registry.manifest(name)
    weights_layer = manifest.weights
    if weights_layer is None:
        raise ProvisionError(f"{name.short}: the manifest lists no model weights")
    parser = GGUFParser(max_array=1024)
    header = _read_header(registry, manifest, parser, header_budget)
    try:
        arch = from_metadata(header.metadata)
    except MissingKey as exc:
        raise ProvisionError(f"{name.short}: the GGUF header lacks {exc}") from exc
    quant = FILE_TYPES.get(_int(header.metadata.get("general.file_type")), "")
    params_count = _int(header.metadata.get("general.parameter_count")) or None
    num_ctx = None
    params_layer = next((x for x in manifest.layers if x.media_type == PARAMS_MEDIA_TYPE), None)
    if params_layer is not None and params_layer.size < 64 * 1024:
        try:
            num_ctx = _int(json.loads(registry.blob(name, params_layer.digest)).get("num_ctx"))
        except (ValueError, AttributeError):
            num_ctx = None
    projector = sum(x.size for x in manifest.layers if x.media_type == PROJECTOR_MEDIA_TYPE)
    blob_size = weights_layer.size
    if header.complete:
        data_size = blob_size - (header.data_offset or 0)
        split = _split_tensors([(t.name, t.shape, t.ggml_type) for t in header.tensors],
                               arch.block_count)
        layers, output, cpu_only = split[1], split[2], split[3]
        weights = split[0]
        params_count = params_count or sum(t.elements for t in header.tensors)
        if abs(weights - data_size) > max(data_size // 100, 1 << 20):
            log.debug("%s: tensor sizes add up to %d, blob data is %d", name, weights, data_size)
        detail = f"registry: manifest + whole GGUF header ({_mib(header.data_offset)})"
    else:
        if not params_count and registry.requests - requests0 < REQUEST_BUDGET:
            try:
                params_count = _parse_size(registry.config(manifest).model_type)
            except ProvisionError:
                params_count = None
        weights = max(blob_size - _header_estimate(header, parser), 0)
        layers, output, cpu_only = _derive(arch, quant, weights)
        detail = (f"registry: manifest + first {_mib(parser.bytes_fed)} of the GGUF header "
                  "(architecture; per-layer sizes derived from the blob size)")
    return ModelNeeds(
        name=name.short, source="registry", detail=detail, arch=arch, quantization=quant,
        parameter_count=params_count, weights=weights, layers=layers, output=output,
        cpu_only=cpu_only, exact_layers=header.complete, download=manifest.total_size,
        disk_size=manifest.total_size, num_ctx_param=num_ctx or None, projector=projector,
        requests=registry.requests - requests0, bytes_read=registry.bytes_read - bytes0,
        header_size=header.data_offset if header.complete else None)


def _read_header(registry: ModelFiles, manifest: ModelManifest, parser: GGUFParser,
                 budget: int) -> GGUFHeader:
    layer = manifest.weights
    assert layer is not None
    first = min(FIRST_READ, budget, layer.size)
    try:
        spent, ranges = first, 1
        parser.feed(0, registry.blob(manifest.name, layer.digest, start=0, end=first - 1))
        header = parser.parse()
        # --full-header lifts the budget: then as many ranges as the header takes.
        max_ranges = MAX_RANGES if budget <= HEADER_BUDGET else 64
        while not header.complete and header.wanted is not None and ranges < max_ranges:
            start = header.wanted
            if not _has_arch_keys(header):
                want = start + max(header.need_at_least, 256 * 1024)
            else:  # the rest, with slack for the guess
                want = max(start + int((_header_estimate(header, parser) - start) * 1.25),
                           start + header.need_at_least)
            want = min(want, layer.size)
            if want - start > budget - spent or start >= layer.size:
                break  # the whole header does not fit the budget: stop at the architecture
            parser.feed(start, registry.blob(manifest.name, layer.digest, start=start,
                                             end=want - 1))
            spent, ranges = spent + want - start, ranges + 1
            header = parser.parse()
    except GGUFError as exc:
        raise ProvisionError(f"{manifest.name.short}: the weights are not a readable GGUF "
                             f"file: {exc}") from exc
    if not _has_arch_keys(header):
        raise ProvisionError(f"{manifest.name.short}: the architecture keys are not in the "
                             f"first {_mib(parser.bytes_fed)} of the GGUF header")
    return header


def _has_arch_keys(header: GGUFHeader) -> bool:
    arch = header.metadata.get("general.architecture")
    return bool(arch) and f"{arch}.block_count" in header.metadata \
        and f"{arch}.embedding_length" in header.metadata


def _header_estimate(header: GGUFHeader, parser: GGUFParser) -> int:
    """Where the header probably ends, reading on from here (exact when complete).

    The rest of the array being walked, at its average item length so far; then the
    tokenizer arrays that usually follow the tokens: token types (4 bytes each), scores
    (4 bytes each) for SentencePiece/WordPiece vocabularies, or for a BPE ("gpt2")
    vocabulary about as many merges as tokens, each about two tokens long; a few KiB of
    other keys (the chat template); ~96 bytes per tensor info.
    """
    if header.complete:
        return header.data_offset or 0
    meta = header.metadata
    progress = parser.array_progress()
    remaining = 16 * 1024
    token_len = 8.0
    vocab = 0
    tokens = meta.get("tokenizer.ggml.tokens")
    if isinstance(tokens, (ArrayInfo, tuple)):
        vocab = tokens.count if isinstance(tokens, ArrayInfo) else len(tokens)
    if progress is not None:
        key, done, count, consumed = progress
        average = consumed / done if done else 16.0
        remaining += int((count - done) * average)
        if key == "tokenizer.ggml.tokens":
            vocab, token_len = count, max(average - 8, 1.0)
    if vocab:
        pending = {"tokenizer.ggml.token_type": 4 * vocab}
        if meta.get("tokenizer.ggml.model") == "gpt2":
            pending["tokenizer.ggml.merges"] = int(vocab * (8 + 2 * token_len + 1))
        else:
            pending["tokenizer.ggml.scores"] = 4 * vocab
        current = progress[0] if progress else None
        remaining += sum(v for k, v in pending.items() if k not in meta and k != current)
    remaining += (header.tensor_count - len(header.tensors)) * 96
    return (header.wanted or 0) + remaining


# -- offline --------------------------------------------------------------------------------

# Typical shapes by parameter count (Llama/Qwen-like, grouped-query attention):
# (up to billions of parameters, layers, embedding, heads, kv heads, head dim).
_ROUGH_SHAPES = ((1.5, 16, 2048, 32, 8, 64), (4, 28, 3072, 24, 8, 128),
                 (10, 32, 4096, 32, 8, 128), (16, 48, 5120, 40, 8, 128),
                 (40, 64, 5120, 40, 8, 128), (80, 80, 8192, 64, 8, 128),
                 (float("inf"), 126, 16384, 128, 8, 128))


def rough(name: ModelName, *, parameter_count: int | None = None,
          quantization: str | None = None, why: str = "offline") -> ModelNeeds | None:
    """A rough estimate from the tag (`8b`, `70b-instruct-q3_K_M`); None when it says nothing."""
    params = parameter_count or _parse_size(name.tag) or _parse_size(name.model)
    if not params:
        return None
    quant = quantization or _tag_quant(name.tag) or "Q4_K_M"  # the library's usual default
    billions = params / 1e9
    _, blocks, embd, heads, kv, head_dim = next(s for s in _ROUGH_SHAPES if billions <= s[0])
    # A Llama-like shape, so the graph is sized by the llama formula.
    arch = Architecture(name="llama", block_count=blocks, context_length=0,
                        embedding_length=embd, head_count=heads, head_count_kv=(kv,) * blocks,
                        key_length=head_dim, value_length=head_dim, vocab_size=128000)
    weights = int(params * AVERAGE_BPW.get(quant, 4.89) / 8)
    layers, output, cpu_only = _derive(arch, quant, weights)
    return ModelNeeds(
        name=name.short, source="rough",
        detail=f"rough ({why}): {format_parameters(params)} parameters at {quant}, "
        "a typical shape for that size", arch=arch, quantization=quant,
        parameter_count=params, weights=weights, layers=layers, output=output,
        cpu_only=cpu_only, exact_layers=False, download=weights, disk_size=weights)


def _parse_size(text: str) -> int | None:
    """'8b' -> 8e9, '1.5b' -> 1.5e9, '8x7b' -> 56e9, '135m' -> 135e6, '8.0B' -> 8e9."""
    match = re.search(r"(?:^|[-_:.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bmt])(?=$|[-_.])", text.lower())
    if not match:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([bmt])", text.strip().lower())
        if not match:
            return None
        experts, number, unit = None, match[1], match[2]
    else:
        experts, number, unit = match[1], match[2], match[3]
    scale = {"m": 1e6, "b": 1e9, "t": 1e12}[unit]
    return int(float(number) * scale * (int(experts) if experts else 1))


def _tag_quant(tag: str) -> str | None:
    match = re.search(r"(?:^|-)(q\d_k_[sml]|q\d_k|q\d_\d|iq\d_\w+|fp16|f16|bf16|fp32|f32)$",
                      tag.lower())
    if not match:
        return None
    return match[1].upper().replace("FP", "F")


# -- splitting weights into layers ----------------------------------------------------------


def _split_tensors(tensors: list[tuple[str, tuple[int, ...], int]],
                   blocks: int) -> tuple[int, tuple[int, ...], int, int]:
    """(all bytes, per-block bytes, output layer bytes, CPU-only bytes) from tensor infos."""
    per_block = [0] * blocks
    groups: dict[str, int] = {}
    total = 0
    for name, shape, ggml_type in tensors:
        size = tensor_bytes(ggml_type, shape)
        total += size
        match = re.match(r"blk\.(\d+)\.", name)
        if match and int(match[1]) < blocks:
            per_block[int(match[1])] += size
        else:
            key = name.split(".", 1)[0]
            groups[key] = groups.get(key, 0) + size
    # Ollama's output layer: output_norm + output, or the token embeddings when tied.
    output = groups.get("output_norm", 0)
    if "output" in groups:
        output += groups["output"]
        cpu_only = groups.get("token_embd", 0)
    else:
        output += groups.get("token_embd", 0)
        cpu_only = 0
    cpu_only += sum(v for k, v in groups.items()
                    if k not in ("output_norm", "output", "token_embd"))
    return total, tuple(per_block), output, cpu_only


def _derive(arch: Architecture, quant: str, weights: int) -> tuple[tuple[int, ...], int, int]:
    """Per-block, output and embedding bytes when only the total is known.

    The output matrix and the token embeddings are vocab x embedding each, at the types
    llama.cpp's quantizer gives them; the rest is split evenly over the blocks.
    """
    matrix = (arch.embedding_length, arch.vocab_size)
    output = _bytes_at(_OUTPUT_TYPE.get(quant, 14), matrix) + arch.embedding_length * 4
    embed = _bytes_at(_EMBED_TYPE.get(quant, 12), matrix)
    rest = weights - output - embed
    if rest <= 0 or not arch.block_count:  # tiny models: keep the total right at least
        embed, rest = 0, max(weights - output, 0)
    blocks = max(arch.block_count, 1)
    per_block, extra = divmod(rest, blocks)
    layers = tuple(per_block + (1 if i < extra else 0) for i in range(arch.block_count))
    return layers, output, embed


def _bytes_at(ggml_type: int, shape: tuple[int, int]) -> int:
    return tensor_bytes(ggml_type, shape)


def _num_ctx(parameters: str) -> int | None:
    for line in parameters.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "num_ctx" and parts[1].isdigit():
            return int(parts[1])
    return None


def _prod(shape: tuple[int, ...]) -> int:
    result = 1
    for d in shape:
        result *= d
    return result


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def _mib(n: int | None) -> str:
    return f"{(n or 0) / MIB:.1f} MiB"


# -- the best source there is -----------------------------------------------------------------


def model_needs(name: ModelName, server: OllamaServer | None = None,
                registry: ModelFiles | None = None, *, inventory: Inventory | None = None,
                offline: bool = False, header_budget: int = HEADER_BUDGET,
                environ: dict[str, str] | None = None) -> ModelNeeds:
    """Needs of one model: installed (`server` + its `inventory`), else the registry,
    else (registry unreachable or `offline`) a rough estimate.

    Raises ProvisionError when the registry does not know the model (exit 1) or when
    nothing can be said (offline, and the tag names no size).
    """
    installed = inventory.find(name) if inventory is not None else None
    if server is not None and installed is not None:
        return fetch_installed(server, name, installed)
    why, hint = "offline", "name a size (llama3.1:8b), or let the tool reach the registry"
    if not offline:
        own = registry is None
        registry = registry or RegistryClient(environ=environ)
        try:
            return from_registry(name, registry, header_budget=header_budget)
        except RegistryError as exc:
            if exc.status is not None:
                raise  # the registry answered: an unknown model is not a guess
            why = "registry unreachable"
            hint = exc.hint or hint  # e.g. a plain-HTTP registry: --insecure
            log.debug("registry unreachable for %s: %s", name, exc.message)
        finally:
            if own:
                registry.close()
    needs = rough(name, why=why)
    if needs is None:
        raise ProvisionError(f"{name.short}: cannot estimate ({why}): the tag names no size",
                             hint=hint)
    return needs

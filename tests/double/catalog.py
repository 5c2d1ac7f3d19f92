"""The models the double's registry can serve: shapes, quantization mixes, GGUF
metadata, and the artifacts (weights, small blobs, config, manifest) per revision."""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.double.blobs import (
    MT_LICENSE,
    MT_PARAMS,
    MT_SYSTEM,
    MT_TEMPLATE,
    Blob,
    BytesBlob,
    GGUFBlob,
    make_config_blob,
    manifest_bytes,
)
from tests.double.gguf import (
    FILE_TYPES,
    GGUF_BOOL,
    GGUF_F32,
    GGUF_STRING,
    GGUF_U32,
    GGUF_U64,
    GGUFWriter,
    fit_type,
    tensor_nbytes,
)
from tests.double.names import ModelName, parse_name
from tests.double.templates import (
    APACHE_LICENSE,
    CHAT_TEMPLATES,
    LLAMA3_PARAMS,
    LLAMA3_TEMPLATE,
    LLAMA31_LICENSE,
    LLAMA32_LICENSE,
    QWEN_PARAMS,
    QWEN_SYSTEM,
    QWEN_TEMPLATE,
)
from tests.double.tokenizers import TOKENIZERS, tokenizer_block, vocabulary
from tests.double.wire import F32, go_json, human_number, sha256_hex

EMBEDDING_ARCHS = {"nomic-bert", "bert"}


def _use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: which layers a _M mix gives more bits."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass(frozen=True)
class _Mix:
    base: str
    output: str  # output.weight, or token_embd when the embeddings are tied
    embd: str  # token_embd when untied
    more_bits: str | None = None  # attn_v / ffn_down in use_more_bits layers
    attn_v: str | None = None
    ffn_down: str | None = None
    attn_output: str | None = None


QUANT_MIXES: dict[str, _Mix] = {
    "F32": _Mix("F32", "F32", "F32"),
    "F16": _Mix("F16", "F16", "F16"),
    "BF16": _Mix("BF16", "BF16", "BF16"),
    "Q8_0": _Mix("Q8_0", "Q8_0", "Q8_0"),
    "Q4_0": _Mix("Q4_0", "Q6_K", "Q4_0"),
    "Q4_1": _Mix("Q4_1", "Q6_K", "Q4_1"),
    "Q5_0": _Mix("Q5_0", "Q6_K", "Q5_0"),
    "Q5_1": _Mix("Q5_1", "Q6_K", "Q5_1"),
    "Q2_K": _Mix("Q2_K", "Q6_K", "Q2_K", attn_v="Q3_K", ffn_down="Q3_K"),
    "Q3_K_S": _Mix("Q3_K", "Q6_K", "Q3_K"),
    "Q3_K_M": _Mix("Q3_K", "Q6_K", "Q3_K", more_bits="Q5_K", attn_v="Q4_K", ffn_down="Q4_K",
                   attn_output="Q4_K"),
    "Q3_K_L": _Mix("Q3_K", "Q6_K", "Q3_K", attn_v="Q5_K", ffn_down="Q5_K", attn_output="Q5_K"),
    "Q4_K_S": _Mix("Q4_K", "Q6_K", "Q4_K"),
    "Q4_K_M": _Mix("Q4_K", "Q6_K", "Q4_K", more_bits="Q6_K"),
    "Q5_K_S": _Mix("Q5_K", "Q6_K", "Q5_K"),
    "Q5_K_M": _Mix("Q5_K", "Q6_K", "Q5_K", more_bits="Q6_K"),
    "Q6_K": _Mix("Q6_K", "Q6_K", "Q6_K"),
    "IQ4_XS": _Mix("IQ4_XS", "Q6_K", "IQ4_XS"),
}



@dataclass(eq=False)
class CatalogModel:
    """A model the registry can serve: architecture, quantization, texts.

    `name` may be any spelling (`llama3.1:8b`); it is normalised with Ollama's rules. The
    weights blob (GGUF header + virtual tensor data), the small blobs, the config and the
    manifest are built lazily per revision and cached on the object (`artifacts`)."""

    name: str
    arch: str = "llama"
    block_count: int = 32
    context_length: int = 131072
    embedding_length: int = 4096
    feed_forward_length: int = 14336
    head_count: int = 32
    head_count_kv: int = 8
    vocab_size: int = 128256
    tokenizer: str = "llama3"
    quant: str = "Q4_K_M"
    key_length: int | None = None
    value_length: int | None = None
    tied_embeddings: bool = False
    rope_freqs: bool = False
    qkv_bias: bool = False
    rope_freq_base: float = 500000.0
    norm_eps: float = 1e-5
    title: str = ""  # general.name ("" = none, as in a GGUF without one)
    size_label: str = ""
    license_name: str = ""  # general.license
    template: str = "{{ .Prompt }}"
    system: str = ""
    license: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    capabilities: tuple[str, ...] | None = None  # None: derived from arch and template
    parameter_size: str | None = None  # None: human_number(parameter count)
    seed: str | None = None  # digest seed; aliases of one model share it
    gguf_parameter_count: bool = False  # real GGUFs have no general.parameter_count key
    extra_kv: list[tuple[str, int, Any]] = field(default_factory=list)
    modified: float = 0.0

    def __post_init__(self) -> None:
        self.model_name: ModelName = parse_name(self.name)
        self.name = self.model_name.full
        if self.quant not in QUANT_MIXES:
            raise ValueError(f"unknown quantization {self.quant!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {self.tokenizer!r}")
        self._artifacts: dict[int, Artifacts] = {}
        self._lock = threading.Lock()

    # ---- identity ------------------------------------------------------------------
    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.model_name.key

    @property
    def short(self) -> str:
        return self.model_name.short

    @property
    def family(self) -> str:
        return self.arch

    @property
    def head_dim_k(self) -> int:
        return self.key_length or self.embedding_length // self.head_count

    @property
    def head_dim_v(self) -> int:
        return self.value_length or self.embedding_length // self.head_count

    @property
    def is_embedding(self) -> bool:
        return self.arch in EMBEDDING_ARCHS

    def caps(self) -> list[str]:
        if self.capabilities is not None:
            return list(self.capabilities)
        if self.is_embedding:
            return ["embedding"]
        caps = ["completion"]
        if ".Tools" in self.template:
            caps.append("tools")
        if ".Thinking" in self.template or ".Think" in self.template:
            caps.append("thinking")
        return caps

    # ---- tensors -------------------------------------------------------------------
    @functools.cached_property
    def tensors(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape (ne0 first), ggml type) for every tensor, in file order."""
        mix = QUANT_MIXES[self.quant]
        e, f, v = self.embedding_length, self.feed_forward_length, self.vocab_size
        n = self.block_count
        out: list[tuple[str, tuple[int, ...], str]] = []

        def add(name: str, shape: tuple[int, ...], ggml_type: str) -> None:
            fitted = ggml_type if len(shape) == 1 else fit_type(ggml_type, shape[0])
            out.append((name, shape, fitted))

        if self.is_embedding:  # nomic-bert layout
            add("token_embd.weight", (e, v), mix.embd)
            add("token_types.weight", (e, 2), "F32")
            add("token_embd_norm.weight", (e,), "F32")
            add("token_embd_norm.bias", (e,), "F32")
            for i in range(n):
                p = f"blk.{i}."
                add(p + "attn_qkv.weight", (e, 3 * e), mix.base)
                add(p + "attn_output.weight", (e, e), mix.base)
                add(p + "attn_output_norm.weight", (e,), "F32")
                add(p + "attn_output_norm.bias", (e,), "F32")
                add(p + "ffn_up.weight", (e, f), mix.base)
                add(p + "ffn_gate.weight", (e, f), mix.base)
                add(p + "ffn_down.weight", (f, e), mix.base)
                add(p + "layer_output_norm.weight", (e,), "F32")
                add(p + "layer_output_norm.bias", (e,), "F32")
            return out
        q_dim = self.head_count * self.head_dim_k
        k_dim = self.head_count_kv * self.head_dim_k
        v_dim = self.head_count_kv * self.head_dim_v
        o_in = self.head_count * self.head_dim_v
        if self.rope_freqs:
            add("rope_freqs.weight", (self.head_dim_k // 2,), "F32")
        add("token_embd.weight", (e, v), mix.output if self.tied_embeddings else mix.embd)
        add("output_norm.weight", (e,), "F32")
        if not self.tied_embeddings:
            add("output.weight", (e, v), mix.output)
        for i in range(n):
            p = f"blk.{i}."
            more = mix.more_bits if (mix.more_bits and _use_more_bits(i, n)) else None
            add(p + "attn_norm.weight", (e,), "F32")
            add(p + "attn_q.weight", (e, q_dim), mix.base)
            add(p + "attn_k.weight", (e, k_dim), mix.base)
            add(p + "attn_v.weight", (e, v_dim), more or mix.attn_v or mix.base)
            if self.qkv_bias:
                add(p + "attn_q.bias", (q_dim,), "F32")
                add(p + "attn_k.bias", (k_dim,), "F32")
                add(p + "attn_v.bias", (v_dim,), "F32")
            add(p + "attn_output.weight", (o_in, e), mix.attn_output or mix.base)
            add(p + "ffn_norm.weight", (e,), "F32")
            add(p + "ffn_gate.weight", (e, f), mix.base)
            add(p + "ffn_up.weight", (e, f), mix.base)
            add(p + "ffn_down.weight", (f, e), more or mix.ffn_down or mix.base)
        return out

    @functools.cached_property
    def parameter_count(self) -> int:
        return sum(math.prod(shape) for _, shape, _ in self.tensors)

    @property
    def param_size(self) -> str:
        return self.parameter_size or human_number(self.parameter_count)

    @functools.cached_property
    def embd_out_bytes(self) -> int:
        """Bytes of token_embd + output (not part of the repeating layers)."""
        return sum(tensor_nbytes(s, t) for n, s, t in self.tensors
                   if n.startswith(("token_embd.", "output.")))

    # ---- GGUF metadata ---------------------------------------------------------------
    def kv_items(self, revision: int = 0) -> tuple[list[tuple[str, int, Any]],
                                                   list[tuple[str, int, Any]]]:
        """KV pairs before and after the shared tokenizer block: (key, type, value)."""
        a = self.arch
        before: list[tuple[str, int, Any]] = [("general.architecture", GGUF_STRING, a)]
        title = self.title + (f" (revision {revision})" if revision else "")
        if title:
            before.append(("general.type", GGUF_STRING, "model"))
            before.append(("general.name", GGUF_STRING, title))
        if self.size_label:
            before.append(("general.size_label", GGUF_STRING, self.size_label))
        if self.license_name:
            before.append(("general.license", GGUF_STRING, self.license_name))
        if self.gguf_parameter_count:
            before.append(("general.parameter_count", GGUF_U64, self.parameter_count))
        before += [
            (f"{a}.block_count", GGUF_U32, self.block_count),
            (f"{a}.context_length", GGUF_U32, self.context_length),
            (f"{a}.embedding_length", GGUF_U32, self.embedding_length),
            (f"{a}.feed_forward_length", GGUF_U32, self.feed_forward_length),
            (f"{a}.attention.head_count", GGUF_U32, self.head_count),
        ]
        if self.is_embedding:
            before += [
                (f"{a}.attention.layer_norm_epsilon", GGUF_F32, F32(self.norm_eps)),
                (f"{a}.attention.causal", GGUF_BOOL, False),
                (f"{a}.pooling_type", GGUF_U32, 1),
                (f"{a}.rope.freq_base", GGUF_F32, F32(self.rope_freq_base)),
                ("general.file_type", GGUF_U32, FILE_TYPES[self.quant]),
            ]
        else:
            before += [
                (f"{a}.attention.head_count_kv", GGUF_U32, self.head_count_kv),
                (f"{a}.rope.freq_base", GGUF_F32, F32(self.rope_freq_base)),
                (f"{a}.attention.layer_norm_rms_epsilon", GGUF_F32, F32(self.norm_eps)),
            ]
            if self.key_length:
                before.append((f"{a}.attention.key_length", GGUF_U32, self.key_length))
            if self.value_length:
                before.append((f"{a}.attention.value_length", GGUF_U32, self.value_length))
            before += [
                ("general.file_type", GGUF_U32, FILE_TYPES[self.quant]),
                (f"{a}.vocab_size", GGUF_U32, self.vocab_size),
                (f"{a}.rope.dimension_count", GGUF_U32, self.head_dim_k),
            ]
        before += list(self.extra_kv)
        spec = TOKENIZERS[self.tokenizer]
        after: list[tuple[str, int, Any]] = []
        if self.tokenizer == "bert":
            after.append(("tokenizer.ggml.token_type_count", GGUF_U32, 2))
        after += [(f"tokenizer.ggml.{k}", GGUF_U32, v) for k, v in spec.ids]
        if self.tokenizer == "llama-spm":
            after += [("tokenizer.ggml.add_bos_token", GGUF_BOOL, True),
                      ("tokenizer.ggml.add_eos_token", GGUF_BOOL, False)]
        if self.tokenizer in ("llama3", "qwen2"):
            after.append(("tokenizer.chat_template", GGUF_STRING, CHAT_TEMPLATES[self.tokenizer]))
        if self.title:
            after.append(("general.quantization_version", GGUF_U32, 2))
        return before, after

    def model_info(self, revision: int = 0, *, verbose: bool = False,
                   empty: list[Any] | None = None) -> dict[str, Any]:
        """`/api/show` model_info: the GGUF KVs (sorted), arrays longer than 5 emptied
        unless verbose, general.parameter_count added as Ollama does."""
        before, after = self.kv_items(revision)
        info: dict[str, Any] = {k: v for k, _, v in before + after}
        spec = TOKENIZERS[self.tokenizer]
        info["tokenizer.ggml.model"] = spec.model
        if spec.pre:
            info["tokenizer.ggml.pre"] = spec.pre
        vocab = vocabulary(self.tokenizer, self.vocab_size) if verbose else None
        arrays = {"tokenizer.ggml.tokens": vocab.tokens if vocab else None,
                  "tokenizer.ggml.token_type": vocab.token_type if vocab else None}
        if self.tokenizer in ("llama3", "qwen2"):
            arrays["tokenizer.ggml.merges"] = vocab.merges if vocab else None
        else:
            arrays["tokenizer.ggml.scores"] = (
                [F32(s) for s in vocab.scores or []] if vocab else None)
        for key, value in arrays.items():
            info[key] = value if verbose else empty
        info["general.parameter_count"] = self.parameter_count
        return dict(sorted(info.items()))

    # ---- blobs, config, manifest -----------------------------------------------------
    def artifacts(self, revision: int = 0) -> Artifacts:
        with self._lock:
            arts = self._artifacts.get(revision)
            if arts is None:
                arts = self._artifacts[revision] = Artifacts.build(self, revision)
            return arts



@dataclass(eq=False)
class Artifacts:
    """What the registry serves for one revision of a catalog model."""

    model: CatalogModel
    revision: int
    weights: GGUFBlob
    layers: list[Blob]
    config: BytesBlob
    manifest: bytes
    digest: str  # sha256 hex of the manifest bytes (what /api/tags shows)

    @property
    def blobs(self) -> dict[str, Blob]:
        return {b.digest: b for b in [*self.layers, self.config]}

    @property
    def size(self) -> int:
        return sum(b.size for b in self.layers) + self.config.size

    @staticmethod
    def build(m: CatalogModel, revision: int) -> Artifacts:
        w = GGUFWriter()
        before, after = m.kv_items(revision)
        for key, vtype, value in before:
            w.add(key, vtype, value)
        block, count = tokenizer_block(m.tokenizer, m.vocab_size)
        w.add_block(block, count)
        for key, vtype, value in after:
            w.add(key, vtype, value)
        for name, shape, ggml_type in m.tensors:
            w.add_tensor(name, shape, ggml_type)
        segments, header, size = w.build()
        seed = f"{m.seed or m.name}:{m.quant}:rev{revision}"
        weights = GGUFBlob(segments, header, size, seed)
        layers: list[Blob] = [weights]
        if m.template:
            layers.append(BytesBlob(m.template.encode(), MT_TEMPLATE))
        if m.system:
            layers.append(BytesBlob(m.system.encode(), MT_SYSTEM))
        if m.license:
            layers.append(BytesBlob(m.license.encode(), MT_LICENSE))
        if m.params:
            layers.append(BytesBlob((go_json(m.params) + "\n").encode(), MT_PARAMS))
        config = make_config_blob(m, layers)
        manifest = manifest_bytes(config, layers)
        return Artifacts(m, revision, weights, layers, config, manifest, sha256_hex(manifest))


# Shapes of real model families, by (arch, size label).
_PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("llama", "1B"): dict(block_count=16, embedding_length=2048, feed_forward_length=8192,
                          head_count=32, head_count_kv=8, key_length=64, value_length=64,
                          tied_embeddings=True, rope_freqs=True),
    ("llama", "3B"): dict(block_count=28, embedding_length=3072, feed_forward_length=8192,
                          head_count=24, head_count_kv=8, key_length=128, value_length=128,
                          tied_embeddings=True, rope_freqs=True),
    ("llama", "8B"): dict(block_count=32, embedding_length=4096, feed_forward_length=14336,
                          head_count=32, head_count_kv=8, rope_freqs=True),
    ("llama", "70B"): dict(block_count=80, embedding_length=8192, feed_forward_length=28672,
                           head_count=64, head_count_kv=8, rope_freqs=True),
    ("qwen2", "0.5B"): dict(block_count=24, embedding_length=896, feed_forward_length=4864,
                            head_count=14, head_count_kv=2, tied_embeddings=True),
    ("qwen2", "7B"): dict(block_count=28, embedding_length=3584, feed_forward_length=18944,
                          head_count=28, head_count_kv=4),
    ("qwen2", "14B"): dict(block_count=48, embedding_length=5120, feed_forward_length=13824,
                           head_count=40, head_count_kv=8),
    ("qwen2", "32B"): dict(block_count=64, embedding_length=5120, feed_forward_length=27648,
                           head_count=40, head_count_kv=8),
    ("nomic-bert", "137M"): dict(block_count=12, embedding_length=768, feed_forward_length=3072,
                                 head_count=12, head_count_kv=12),
}
_ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(tokenizer="llama3", vocab_size=128256, context_length=131072,
                  rope_freq_base=500000.0, norm_eps=1e-5, template=LLAMA3_TEMPLATE,
                  params=LLAMA3_PARAMS),
    "qwen2": dict(tokenizer="qwen2", vocab_size=152064, context_length=32768, qkv_bias=True,
                  rope_freq_base=1000000.0, norm_eps=1e-6, template=QWEN_TEMPLATE,
                  params=QWEN_PARAMS),
    "nomic-bert": dict(tokenizer="bert", vocab_size=30522, context_length=2048,
                       rope_freq_base=1000.0, norm_eps=1e-12, template="{{ .Prompt }}",
                       params={"num_ctx": 8192}, quant="F16"),
}


def _label_value(label: str) -> float:
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}
    return float(label[:-1]) * scale[label[-1].upper()]


def make_catalog_model(name: str, *, arch: str = "llama", params: str | float = "8B",
                       quant: str = "Q4_K_M", **overrides: Any) -> CatalogModel:
    """A catalog model with the shape of the real family closest to `params` ("8B", 8e9)
    for `arch` (llama, qwen2, nomic-bert; other names use the llama layout). Any
    CatalogModel field can be overridden (block_count=..., vocab_size=..., ...)."""
    layout = arch if arch in _ARCH_DEFAULTS else "llama"
    target = _label_value(params) if isinstance(params, str) else float(params)
    labels = [label for (a, label) in _PRESETS if a == layout]
    label = min(labels, key=lambda lb: abs(math.log(_label_value(lb) / target)))
    fields: dict[str, Any] = dict(_ARCH_DEFAULTS[layout])
    fields.update(_PRESETS[(layout, label)])
    fields.update(arch=arch, quant=quant, size_label=label, title=f"{name} (test double)")
    if layout == "nomic-bert" and "quant" not in overrides:
        fields["quant"] = quant if quant != "Q4_K_M" else "F16"
    fields.update(overrides)
    fields["params"] = dict(fields.get("params") or {})
    return CatalogModel(name=name, **fields)


def _builtin_catalog() -> dict[str, CatalogModel]:
    llama = _ARCH_DEFAULTS["llama"]
    models = [
        CatalogModel("llama3.2:1b", quant="Q8_0", title="Llama 3.2 1B Instruct", size_label="1B",
                     license_name="llama3.2", license=LLAMA32_LICENSE, **_PRESETS["llama", "1B"],
                     **{k: v for k, v in llama.items()}),
        CatalogModel("llama3.2:3b", quant="Q4_K_M", title="Llama 3.2 3B Instruct",
                     size_label="3B", license_name="llama3.2", license=LLAMA32_LICENSE,
                     **_PRESETS["llama", "3B"], **llama),
        CatalogModel("llama3.2:latest", quant="Q4_K_M", title="Llama 3.2 3B Instruct",
                     size_label="3B", license_name="llama3.2", license=LLAMA32_LICENSE,
                     seed="registry.ollama.ai/library/llama3.2:3b", **_PRESETS["llama", "3B"],
                     **llama),
        CatalogModel("llama3.1:8b", quant="Q4_K_M", title="Meta Llama 3.1 8B Instruct",
                     size_label="8B", license_name="llama3.1", license=LLAMA31_LICENSE,
                     **_PRESETS["llama", "8B"], **llama),
        CatalogModel("llama3.1:latest", quant="Q4_K_M", title="Meta Llama 3.1 8B Instruct",
                     size_label="8B", license_name="llama3.1", license=LLAMA31_LICENSE,
                     seed="registry.ollama.ai/library/llama3.1:8b", **_PRESETS["llama", "8B"],
                     **llama),
        CatalogModel("llama3.1:70b", quant="Q4_K_M", title="Meta Llama 3.1 70B Instruct",
                     size_label="70B", license_name="llama3.1", license=LLAMA31_LICENSE,
                     **_PRESETS["llama", "70B"], **llama),
        CatalogModel("qwen2.5:14b", arch="qwen2", quant="Q4_K_M", title="Qwen2.5 14B Instruct",
                     size_label="14B", license_name="apache-2.0", license=APACHE_LICENSE,
                     system=QWEN_SYSTEM, **_PRESETS["qwen2", "14B"], **_ARCH_DEFAULTS["qwen2"]),
        CatalogModel("qwen2.5:0.5b", arch="qwen2", quant="Q4_K_M", title="Qwen2.5 0.5B Instruct",
                     size_label="0.5B", license_name="apache-2.0", license=APACHE_LICENSE,
                     system=QWEN_SYSTEM, **_PRESETS["qwen2", "0.5B"],
                     **_ARCH_DEFAULTS["qwen2"]),
        CatalogModel("nomic-embed-text:latest", arch="nomic-bert", title="nomic-embed-text-v1.5",
                     size_label="137M", license_name="apache-2.0", license=APACHE_LICENSE,
                     parameter_size="137M", **_PRESETS["nomic-bert", "137M"],
                     **_ARCH_DEFAULTS["nomic-bert"]),
        CatalogModel("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", quant="Q4_K_M",
                     title="Llama 3.2 1B Instruct", size_label="1B", license_name="llama3.2",
                     **_PRESETS["llama", "1B"], **llama),
        # The 2-layer model of the 0.12.9 excerpts in tests/test_double.py (38240 parameters, F16).
        CatalogModel("tiny:latest", arch="llama", block_count=2, context_length=256,
                     embedding_length=32, feed_forward_length=64, head_count=4,
                     head_count_kv=4, vocab_size=275, tokenizer="llama-spm", quant="F16",
                     rope_freq_base=10000.0, template="", params={"num_ctx": 256}),
    ]
    return {m.name: m for m in models}


#: The built-in catalog: full name -> CatalogModel.
CATALOG: dict[str, CatalogModel] = _builtin_catalog()

"""A model's shape, as its GGUF metadata (or Ollama's `/api/show` model_info) states it.

Only what a memory estimate needs: layer count, attention heads (per layer where a model
varies them), head dimensions, trained context, vocabulary, sliding window, experts.
Read the way Ollama reads them (`fs/ggml`): `<arch>.attention.head_count_kv` absent
means equal to head_count; key/value lengths absent mean embedding_length / heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provision.hardware.gguf import ArrayInfo


@dataclass(frozen=True)
class Architecture:
    name: str  # general.architecture, e.g. "llama"
    block_count: int
    context_length: int  # trained context (0: unknown)
    embedding_length: int
    head_count: int  # the largest, when per layer
    head_count_kv: tuple[int, ...]  # one per layer
    key_length: int
    value_length: int
    vocab_size: int
    sliding_window: int = 0
    expert_count: int = 0
    expert_used_count: int = 0
    embedding_model: bool = False  # a pooling_type: an embedding model (no flash attention)
    feed_forward_length: int = 0  # the largest, when per layer (0: not stated)
    expert_feed_forward_length: int = 0  # one expert's (mixture-of-experts models)

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        """K and V for one token across every layer (before any sliding-window saving)."""
        per_head = self.key_length + self.value_length
        return sum(per_head * kv for kv in self.head_count_kv) * bytes_per_element

    @property
    def gqa(self) -> int:
        smallest = min((h for h in self.head_count_kv if h), default=1)
        return max(self.head_count // smallest, 1)


class MissingKey(ValueError):
    pass


def from_metadata(meta: dict[str, Any]) -> Architecture:
    """Build from GGUF metadata or /api/show model_info (same keys). Raise MissingKey."""
    arch = str(meta.get("general.architecture") or "")
    if not arch:
        raise MissingKey("general.architecture")

    def get(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    blocks = _int(get("block_count"))
    embedding = _int(get("embedding_length"))
    if not blocks or not embedding:
        raise MissingKey(f"{arch}.block_count / {arch}.embedding_length")
    heads_per_layer = _per_layer(get("attention.head_count"), blocks, 1)
    heads = max(heads_per_layer)
    kv_raw = get("attention.head_count_kv")
    kv_per_layer = _per_layer(kv_raw, blocks, 0) if kv_raw is not None else heads_per_layer
    if not any(kv_per_layer):
        kv_per_layer = heads_per_layer
    min_heads = min((h for h in heads_per_layer if h), default=1)
    head_dim = embedding // min_heads if min_heads else 0
    vocab = _int(get("vocab_size"))
    tokens = meta.get("tokenizer.ggml.tokens")
    if not vocab and isinstance(tokens, ArrayInfo):
        vocab = tokens.count
    elif not vocab and isinstance(tokens, (list, tuple)):
        vocab = len(tokens)
    return Architecture(
        name=arch,
        block_count=blocks,
        context_length=_int(get("context_length")),
        embedding_length=embedding,
        head_count=heads,
        head_count_kv=tuple(kv_per_layer),
        key_length=_int(get("attention.key_length")) or head_dim,
        value_length=_int(get("attention.value_length")) or head_dim,
        vocab_size=vocab,
        sliding_window=_int(get("attention.sliding_window")),
        expert_count=_int(get("expert_count")),
        expert_used_count=_int(get("expert_used_count")),
        embedding_model=f"{arch}.pooling_type" in meta,
        feed_forward_length=max(_per_layer(get("feed_forward_length"), blocks, 0)),
        expert_feed_forward_length=_int(get("expert_feed_forward_length")),
    )


def _per_layer(value: Any, blocks: int, default: int) -> list[int]:
    if isinstance(value, (list, tuple)) and value:
        values = [_int(v) for v in value][:blocks]
        return values + [values[-1]] * (blocks - len(values))
    if isinstance(value, ArrayInfo):
        return [default] * blocks  # too long to have been kept: cannot tell per layer
    number = _int(value)
    return [number if value is not None else default] * blocks


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0

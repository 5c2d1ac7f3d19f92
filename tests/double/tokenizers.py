"""Token arrays sized like the real vocabularies of a few families (llama3, qwen2,
bert, sentencepiece llama), deterministic, built once per process."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from tests.double.gguf import GGUF_ARRAY, GGUF_F32, GGUF_I32, GGUF_STRING, GGUFWriter

_ALPHA = "etaoinshrdlcumwfgypbvkjxqz"


def _piece(i: int, mean_len: int) -> str:
    """A deterministic, mostly unique lower-case piece whose length averages mean_len."""
    chars = []
    n = i
    while True:
        chars.append(_ALPHA[n % 26])
        n //= 26
        if n == 0:
            break
    want = 1 + (i * 7919) % (2 * mean_len - 1)
    k = 0
    while len(chars) < want:
        chars.append(_ALPHA[(i + 3 * k) % 26])
        k += 1
    return "".join(chars)


@functools.cache
def _gpt2_byte_chars() -> tuple[str, ...]:
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + n))
            n += 1
    return tuple(chars)


@dataclass(frozen=True)
class _TokenizerSpec:
    model: str  # tokenizer.ggml.model
    pre: str | None  # tokenizer.ggml.pre
    size: int  # standard vocabulary size
    merges: int  # standard merge count (BPE)
    ids: tuple[tuple[str, int], ...]  # special token id keys


TOKENIZERS: dict[str, _TokenizerSpec] = {
    "llama3": _TokenizerSpec("gpt2", "llama-bpe", 128256, 280147,
                             (("bos_token_id", 128000), ("eos_token_id", 128009))),
    "qwen2": _TokenizerSpec("gpt2", "qwen2", 152064, 151387,
                            (("bos_token_id", 151643), ("eos_token_id", 151645),
                             ("padding_token_id", 151643))),
    "bert": _TokenizerSpec("bert", None, 30522, 0,
                           (("bos_token_id", 101), ("eos_token_id", 102),
                            ("unknown_token_id", 100), ("seperator_token_id", 102),
                            ("padding_token_id", 0), ("cls_token_id", 101),
                            ("mask_token_id", 103))),
    "llama-spm": _TokenizerSpec("llama", None, 32000, 0,
                                (("bos_token_id", 1), ("eos_token_id", 2),
                                 ("unknown_token_id", 0))),
}

_LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                    "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
                    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                  "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                  "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                  "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                  "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|repo_name|>", "<|file_sep|>"]


@dataclass(frozen=True)
class Vocabulary:
    tokens: list[str]
    token_type: list[int]
    merges: list[str] | None
    scores: list[float] | None


@functools.cache
def vocabulary(kind: str, size: int) -> Vocabulary:
    """The token arrays of a tokenizer family, sized like the real vocabulary."""
    spec = TOKENIZERS[kind]
    if kind in ("llama3", "qwen2"):
        specials = _LLAMA3_SPECIALS if kind == "llama3" else _QWEN_SPECIALS
        n_special = 256 if kind == "llama3" else 22 + (size - 151665 if size > 151665 else 0)
        n_normal = max(size - n_special, 256)
        byte_chars = _gpt2_byte_chars()
        tokens = list(byte_chars)
        g = byte_chars[32]  # 'Ġ', GPT-2's space
        tokens += [(g if i % 2 else "") + _piece(i, 6) for i in range(256, n_normal)]
        types = [1] * len(tokens)
        for j in range(size - len(tokens)):
            if j < len(specials):
                tokens.append(specials[j])
                types.append(3)
            elif kind == "llama3":
                tokens.append(f"<|reserved_special_token_{j - len(specials) + 3}|>")
                types.append(3)
            else:
                tokens.append(f"[PAD{len(tokens)}]")
                types.append(4)
        standard = spec.merges * size // spec.size
        merges = [
            ((g if j % 3 == 0 else "") + _piece(j, 3) + " " + _piece(j * 31 + 7, 4))
            for j in range(standard)
        ]
        return Vocabulary(tokens, types, merges, None)
    if kind == "bert":
        tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]",
                                                                   "[MASK]"]
        types = [3] * len(tokens)
        while len(tokens) < size:
            i = len(tokens)
            tokens.append(("##" if i % 3 == 0 else "") + _piece(i, 5))
            types.append(1)
        return Vocabulary(tokens[:size], types[:size], None, [0.0] * size)
    # sentencepiece (llama): <unk> <s> </s>, 256 byte tokens, pieces
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    while len(tokens) < size:
        i = len(tokens)
        tokens.append(("\u2581" if i % 2 else "") + _piece(i, 4))
        types.append(1)
        scores.append(-float(i - 259))
    return Vocabulary(tokens[:size], types[:size], None, scores[:size])


@functools.cache
def tokenizer_block(kind: str, size: int) -> tuple[bytes, int]:
    """Pre-encoded KV pairs of a tokenizer (model, pre, tokens, token_type, merges or
    scores): shared by every model of the family."""
    spec = TOKENIZERS[kind]
    vocab = vocabulary(kind, size)
    w = GGUFWriter()
    w.add("tokenizer.ggml.model", GGUF_STRING, spec.model)
    if spec.pre:
        w.add("tokenizer.ggml.pre", GGUF_STRING, spec.pre)
    w.add("tokenizer.ggml.tokens", GGUF_ARRAY, vocab.tokens, GGUF_STRING)
    if vocab.scores is not None:
        w.add("tokenizer.ggml.scores", GGUF_ARRAY, vocab.scores, GGUF_F32)
    w.add("tokenizer.ggml.token_type", GGUF_ARRAY, vocab.token_type, GGUF_I32)
    if vocab.merges is not None:
        w.add("tokenizer.ggml.merges", GGUF_ARRAY, vocab.merges, GGUF_STRING)
    return bytes(w._current), w.kv_count

"""Llama-shaped GGUF files of any size, written with the `gguf` package (llama.cpp's own).

The metadata and tensor list are those of a real llama model of that shape; the tensor
data is zeros, left as a hole in a sparse file, so that a 2.5 GB model is written in
well under a second and takes no disk until something copies it. A real Ollama creates,
loads and runs such a model (it answers nonsense, like `tiny`). `fill` writes real
bytes instead (a pseudo-random pattern), where the bytes must travel (a registry).

`padded_tiny` is `tiny` itself grown by an unused tensor: a model large enough to
interrupt while it travels, that Ollama creates but cannot load.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tests.real.shared import shared_ollama

ALIGNMENT = 32  # GGUF's default


@dataclass(frozen=True)
class LlamaShape:
    name: str
    embedding: int  # n_embd
    layers: int
    heads: int
    heads_kv: int
    feed_forward: int
    vocab: int
    context: int = 32768  # trained context
    tied: bool = False  # no output.weight: the token embeddings are reused

    @property
    def head_dim(self) -> int:
        return self.embedding // self.heads

    def tensors(self) -> list[tuple[str, tuple[int, ...], bool]]:
        """(name, ggml shape ne0..., is a weight matrix) in llama.cpp's order."""
        e, f, kv = self.embedding, self.feed_forward, self.heads_kv * self.head_dim
        out: list[tuple[str, tuple[int, ...], bool]] = [("token_embd.weight", (e, self.vocab),
                                                         True)]
        for i in range(self.layers):
            out += [(f"blk.{i}.attn_norm.weight", (e,), False),
                    (f"blk.{i}.attn_q.weight", (e, e), True),
                    (f"blk.{i}.attn_k.weight", (e, kv), True),
                    (f"blk.{i}.attn_v.weight", (e, kv), True),
                    (f"blk.{i}.attn_output.weight", (e, e), True),
                    (f"blk.{i}.ffn_norm.weight", (e,), False),
                    (f"blk.{i}.ffn_gate.weight", (e, f), True),
                    (f"blk.{i}.ffn_up.weight", (e, f), True),
                    (f"blk.{i}.ffn_down.weight", (f, e), True)]
        out.append(("output_norm.weight", (e,), False))
        if not self.tied:
            out.append(("output.weight", (e, self.vocab), True))
        return out

    @property
    def parameters(self) -> int:
        total = 0
        for _, shape, _ in self.tensors():
            n = 1
            for d in shape:
                n *= d
            total += n
        return total


# Realistic shapes: Qwen2.5-0.5B's and Llama-3.2-1B's dimensions, as llama models.
SHAPES = {
    "0.5b": LlamaShape("synthetic-0.5b", embedding=896, layers=24, heads=14, heads_kv=2,
                       feed_forward=4864, vocab=151936, tied=True),
    "1b": LlamaShape("synthetic-1b", embedding=2048, layers=16, heads=32, heads_kv=8,
                     feed_forward=8192, vocab=128256, tied=True),
}


def write_gguf(path: Path, shape: LlamaShape, file_type: str = "F16", *,
               fill: bool = False) -> int:
    """Write the model to `path`; return its size in bytes."""
    import gguf
    import numpy as np

    qtype = {"F16": gguf.GGMLQuantizationType.F16,
             "Q8_0": gguf.GGMLQuantizationType.Q8_0}[file_type]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(shape.name)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.embedding)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.feed_forward)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.heads_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(shape.vocab)
    writer.add_file_type({"F16": 1, "Q8_0": 7}[file_type])
    writer.add_tokenizer_model("llama")
    tokens, scores, types = _vocabulary(shape.vocab)
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    data = 0
    for name, ne, matrix in shape.tensors():
        numpy_shape = tuple(reversed(ne))
        elements = 1
        for d in ne:
            elements *= d
        if matrix and file_type == "Q8_0":
            nbytes, raw = elements // 32 * 34, qtype
        elif matrix:
            nbytes, raw = elements * 2, gguf.GGMLQuantizationType.F16
        else:
            nbytes, raw = elements * 4, gguf.GGMLQuantizationType.F32
        dtype = np.float32 if raw == gguf.GGMLQuantizationType.F32 else np.float16
        writer.add_tensor_info(name, numpy_shape, np.dtype(dtype), nbytes, raw_dtype=raw)
        data += -(-nbytes // ALIGNMENT) * ALIGNMENT
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with path.open("r+b") as f:
        f.seek(0, os.SEEK_END)
        start = -(-f.tell() // ALIGNMENT) * ALIGNMENT
        f.truncate(start + data)  # zeros: a hole in the file
        if fill:
            f.seek(start)
            block = hashlib.sha256(shape.name.encode()).digest() * (1 << 15)  # 1 MiB
            left = data
            while left > 0:
                f.write(block[:left])
                left -= len(block)
    return path.stat().st_size


def _vocabulary(size: int) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [2, 3, 3] + [6] * 256
    i = 0
    while len(tokens) < size:
        tokens.append(f"\u2581t{i}")
        types.append(1)
        i += 1
    tokens, types = tokens[:size], types[:size]
    scores = [0.0] * 3 + [0.0] * 256 + [-float(n) for n in range(size - 259)]
    return tokens, scores[:size], types


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def padded_tiny(path: Path, extra_bytes: int, seed: int) -> Path:
    """`tiny`'s GGUF plus an unused tensor of `extra_bytes` (filled with `seed`): a model
    large enough to interrupt, that Ollama creates but cannot load (the extra tensor)."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(shared_ollama() / "tiny.gguf")
    writer = gguf.GGUFWriter(str(path), arch=reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    count = extra_bytes // 2
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype,
                               tensor.data.nbytes, tensor.tensor_type)
    writer.add_tensor_info("pad.weight", (count,), np.dtype(np.float16), count * 2,
                           gguf.GGMLQuantizationType.F16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data)
    # The padding tensor in 1 MiB pieces (a model of several GB is never in memory).
    out = writer.fout[0]
    writer.tensors[0].pop("pad.weight")
    writer.write_padding(out, out.tell())
    piece = np.full((1 << 19,), seed, dtype=np.float16).tobytes()
    left = count * 2
    while left > 0:
        out.write(piece[:left])
        left -= len(piece)
    writer.write_padding(out, count * 2)
    writer.close()
    return path

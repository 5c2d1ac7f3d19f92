"""The GGUF header parser: whole, in pieces, jumping over what it does not need, and
against the realistic headers the test server's registry serves."""

from __future__ import annotations

import random
import struct

import httpx
import pytest

from provision.hardware.gguf import (
    ArrayInfo,
    GGUFError,
    GGUFParser,
    encode_header,
    parse_gguf,
    tensor_bytes,
)
from tests.double import OllamaTestServer, tensor_nbytes

Q4_K, Q6_K, Q8_0, F16, F32 = 12, 14, 8, 1, 0

METADATA = {
    "general.architecture": "llama",
    "general.name": "Synthetic 3-layer",
    "general.file_type": 15,
    "llama.block_count": 3,
    "llama.context_length": 8192,
    "llama.embedding_length": 512,
    "llama.attention.head_count": 8,
    "llama.attention.head_count_kv": 2,
    "llama.rope.freq_base": 500000.0,
    "llama.attention.layer_norm_rms_epsilon": 1e-5,
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.tokens": [f"tok{i}" for i in range(5000)],
    "tokenizer.ggml.token_type": [1] * 5000,
    "tokenizer.ggml.merges": [f"t o{i}" for i in range(4000)],
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.add_bos_token": True,
    "tokenizer.chat_template": "{{ .Prompt }}",
    "general.alignment": 64,
}
TENSORS = [("token_embd.weight", (512, 5000), Q4_K), ("output_norm.weight", (512,), F32),
           ("output.weight", (512, 5000), Q6_K)] + [
    (f"blk.{i}.{part}", shape, kind) for i in range(3) for part, shape, kind in (
        ("attn_norm.weight", (512,), F32), ("attn_q.weight", (512, 512), Q4_K),
        ("attn_k.weight", (512, 128), Q4_K), ("attn_v.weight", (512, 128), Q6_K),
        ("ffn_down.weight", (1536, 512), Q8_0))]


@pytest.fixture(scope="module")
def header() -> tuple[bytes, int]:
    return encode_header(METADATA, TENSORS, alignment=64)


def test_whole_header(header: tuple[bytes, int]) -> None:
    data, data_size = header
    h = parse_gguf(data)
    assert h.complete and h.version == 3 and h.kv_count == len(METADATA)
    assert h.data_offset == len(data) and h.data_offset % 64 == 0
    assert h.metadata["llama.block_count"] == 3
    assert h.metadata["llama.rope.freq_base"] == 500000.0
    assert h.metadata["tokenizer.ggml.add_bos_token"] is True
    # Long arrays are counted, not kept; short ones are kept.
    assert h.metadata["tokenizer.ggml.tokens"] == ArrayInfo(8, 5000)
    assert h.metadata["tokenizer.ggml.merges"] == ArrayInfo(8, 4000)
    assert h.metadata["tokenizer.ggml.token_type"] == ArrayInfo(4, 5000)  # u32
    assert [t.name for t in h.tensors] == [t[0] for t in TENSORS]
    embd = h.tensors[0]
    assert (embd.shape, embd.type_name, embd.offset) == ((512, 5000), "Q4_K", 0)
    # 512 x 5000 at Q4_K: 2 blocks of 256 per row x 144 bytes x 5000 rows
    assert embd.nbytes == 2 * 144 * 5000
    assert h.tensors[1].offset == 1_440_000  # already a multiple of 64
    assert sum(t.nbytes for t in h.tensors) <= data_size


def test_fed_in_pieces_of_any_size_gives_the_same_header(header: tuple[bytes, int]) -> None:
    data, _ = header
    whole = parse_gguf(data)
    rng = random.Random(5)
    for _ in range(5):
        parser = GGUFParser()
        h = parser.parse()
        while not h.complete:
            assert h.wanted is not None and h.need_at_least >= 1
            size = rng.choice([1, 7, 100, 4096, 65536])
            parser.feed(h.wanted, data[h.wanted:h.wanted + size])
            h = parser.parse()
        assert (h.metadata, h.tensors, h.data_offset) == (
            whole.metadata, whole.tensors, whole.data_offset)


def test_says_what_it_needs_next() -> None:
    parser = GGUFParser()
    h = parser.parse()
    assert (h.wanted, h.need_at_least, h.complete) == (0, 24, False)
    data, _ = encode_header({"general.architecture": "llama"}, [])
    parser.feed(0, data[:40])  # the preamble and part of the first key
    h = parser.parse()
    assert h.tensor_count == 0 and h.kv_count == 1 and h.metadata == {}
    # The key is a u64 length and 20 bytes: it ends at 24 + 8 + 20.
    assert h.wanted == 40 and h.need_at_least == 24 + 8 + len("general.architecture") - 40
    with pytest.raises(ValueError):
        parser.feed(0, data)  # not where it asked


def test_jumps_over_fixed_size_arrays_without_reading_them() -> None:
    data, _ = encode_header({"a": 1, "tokenizer.ggml.scores": [0.5] * 100_000, "b": "x"}, [])
    parser = GGUFParser()
    parser.feed(0, data[:100])  # up to and just past the array's element count
    h = parser.parse()
    scores_start = data.index(b"tokenizer.ggml.scores") + len("tokenizer.ggml.scores") + 16
    assert h.wanted == scores_start + 400_000  # past the array
    parser.feed(h.wanted, data[h.wanted:])
    h = parser.parse()
    assert h.complete and h.metadata["b"] == "x"
    assert h.metadata["tokenizer.ggml.scores"] == ArrayInfo(6, 100_000)


@pytest.mark.parametrize("data, message", [
    (b"PK\x03\x04" + bytes(40), "not a GGUF file"),
    (b"GGUF" + struct.pack("<IQQ", 9, 0, 0), "unsupported GGUF version 9"),
    (b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 0), "implausible"),
])
def test_rejects_what_is_not_a_gguf_header(data: bytes, message: str) -> None:
    with pytest.raises(GGUFError, match=message):
        parse_gguf(data)


def test_big_endian_files_are_read() -> None:
    be = b"GGUF" + struct.pack(">IQQ", 3, 0, 1) + struct.pack(">Q", 1) + b"n" \
        + struct.pack(">II", 4, 7)
    h = parse_gguf(be)
    assert h.complete and h.metadata == {"n": 7}


def test_tensor_sizes_match_ggml() -> None:
    assert tensor_bytes(Q4_K, (4096, 4096)) == 4096 * 16 * 144  # 4.5 bits per weight
    assert tensor_bytes(Q6_K, (4096, 128256)) == 128256 * 16 * 210
    assert tensor_bytes(Q8_0, (4096, 14336)) == 14336 * 128 * 34
    assert tensor_bytes(F16, (7,)) == 14 and tensor_bytes(F32, (3, 5)) == 60
    # A row that is not a whole number of blocks still takes whole blocks.
    assert tensor_bytes(Q8_0, (33, 2)) == 2 * 2 * 34
    for shape, name, kind in ((4096, 4096), "Q4_K", Q4_K), ((1536, 512), "Q8_0", Q8_0):
        assert tensor_bytes(kind, shape) == tensor_nbytes(shape, name)


@pytest.mark.parametrize("model", ["llama3.1:8b", "qwen2.5:14b", "nomic-embed-text:latest"])
def test_parses_the_registrys_real_headers(ollama: OllamaTestServer, model: str) -> None:
    """The double's weights blobs carry a real header (full tokenizer): parse it by Range."""
    layer = ollama.manifest(model)["layers"][0]
    catalog = ollama.catalog_model(model)
    url = f"{ollama.url}/v2/library/{catalog.model_name.model}/blobs/{layer['digest']}"
    parser = GGUFParser()
    h = parser.parse()
    with httpx.Client() as client:
        while not h.complete:
            assert h.wanted is not None
            end = h.wanted + max(h.need_at_least, 1 << 20) - 1
            response = client.get(url, headers={"Range": f"bytes={h.wanted}-{end}"})
            parser.feed(h.wanted, response.content)
            h = parser.parse()
    expected = catalog.tensors
    assert [(t.name, t.shape, t.type_name) for t in h.tensors] == expected
    data_size = layer["size"] - (h.data_offset or 0)
    assert sum(t.nbytes for t in h.tensors) <= data_size
    assert h.tensors[-1].offset + h.tensors[-1].nbytes <= data_size
    assert h.metadata["tokenizer.ggml.tokens"].count == catalog.vocab_size

"""A GGUF v3 writer: the header of a model file (KV pairs, tensor infos), no data.

Tensor types and their block sizes as Ollama's `fs/ggml/type.go` lists them.
"""

from __future__ import annotations

import math
import struct
from typing import Any

# ggml tensor types: name -> (id, elements per block, bytes per block).
GGML_TYPES: dict[str, tuple[int, int, int]] = {
    "F32": (0, 1, 4),
    "F16": (1, 1, 2),
    "Q4_0": (2, 32, 18),
    "Q4_1": (3, 32, 20),
    "Q5_0": (6, 32, 22),
    "Q5_1": (7, 32, 24),
    "Q8_0": (8, 32, 34),
    "Q2_K": (10, 256, 84),
    "Q3_K": (11, 256, 110),
    "Q4_K": (12, 256, 144),
    "Q5_K": (13, 256, 176),
    "Q6_K": (14, 256, 210),
    "IQ4_NL": (20, 32, 18),
    "IQ4_XS": (23, 256, 136),
    "BF16": (30, 1, 2),
    "MXFP4": (39, 32, 17),
}
# A k-quant cannot take rows that are not a multiple of 256: llama.cpp falls back.
_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
             "IQ4_XS": "IQ4_NL"}

# general.file_type values.
FILE_TYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
    "Q5_K_M": 17, "Q6_K": 18, "IQ4_XS": 30, "BF16": 32,
}

# GGUF metadata value types.
GGUF_U8, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32 = 0, 1, 2, 3, 4, 5, 6
GGUF_BOOL, GGUF_STRING, GGUF_ARRAY, GGUF_U64, GGUF_I64, GGUF_F64 = 7, 8, 9, 10, 11, 12
_SCALAR_FMT = {GGUF_U8: "B", GGUF_I8: "b", GGUF_U16: "H", GGUF_I16: "h", GGUF_U32: "I",
               GGUF_I32: "i", GGUF_F32: "f", GGUF_BOOL: "?", GGUF_U64: "Q", GGUF_I64: "q",
               GGUF_F64: "d"}
GGUF_ALIGNMENT = 32


def _gguf_str(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _gguf_value(vtype: int, value: Any, elem: int | None = None) -> bytes:
    if vtype == GGUF_STRING:
        return _gguf_str(value)
    if vtype == GGUF_ARRAY:
        assert elem is not None
        head = struct.pack("<IQ", elem, len(value))
        if elem == GGUF_STRING:
            return head + b"".join(_gguf_str(v) for v in value)
        return head + struct.pack(f"<{len(value)}{_SCALAR_FMT[elem]}", *value)
    return struct.pack("<" + _SCALAR_FMT[vtype], value)


def tensor_nbytes(shape: tuple[int, ...], ggml_type: str) -> int:
    """ceil(elements / block) x bytes per block, per row (ne0 is the row)."""
    _, block, size = GGML_TYPES[ggml_type]
    rows = math.prod(shape[1:]) if len(shape) > 1 else 1
    return rows * (-(-shape[0] // block)) * size


def _align(n: int, alignment: int = GGUF_ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


class GGUFWriter:
    """Builds a GGUF v3 header (little-endian) as a list of byte segments.

    KV pairs are added one by one or as a pre-encoded block (a shared tokenizer, so that
    100 models of one family keep one copy of their ~7 MiB vocabulary)."""

    def __init__(self, alignment: int = GGUF_ALIGNMENT) -> None:
        self.alignment = alignment
        self._segments: list[bytes] = []
        self._current = bytearray()
        self.kv_count = 0
        self.tensors: list[tuple[str, tuple[int, ...], str]] = []

    def add(self, key: str, vtype: int, value: Any, elem: int | None = None) -> None:
        self._current += _gguf_str(key) + struct.pack("<I", vtype)
        self._current += _gguf_value(vtype, value, elem)
        self.kv_count += 1

    def add_block(self, block: bytes, count: int) -> None:
        if self._current:
            self._segments.append(bytes(self._current))
            self._current = bytearray()
        self._segments.append(block)
        self.kv_count += count

    def add_tensor(self, name: str, shape: tuple[int, ...], ggml_type: str) -> None:
        self.tensors.append((name, shape, ggml_type))

    def build(self) -> tuple[list[bytes], int, int]:
        """(segments, padded header length, total file size)."""
        infos = bytearray()
        offset = 0
        for name, shape, ggml_type in self.tensors:
            infos += _gguf_str(name) + struct.pack("<I", len(shape))
            infos += struct.pack(f"<{len(shape)}Q", *shape)
            infos += struct.pack("<IQ", GGML_TYPES[ggml_type][0], offset)
            offset += _align(tensor_nbytes(shape, ggml_type), self.alignment)
        prefix = b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), self.kv_count)
        segments = [prefix, *self._segments, bytes(self._current), bytes(infos)]
        unpadded = sum(len(s) for s in segments)
        header = _align(unpadded, self.alignment)
        segments.append(bytes(header - unpadded))
        return [s for s in segments if s], header, header + offset



def fit_type(ggml_type: str, ne0: int) -> str:
    block = GGML_TYPES[ggml_type][1]
    return ggml_type if ne0 % block == 0 else _FALLBACK.get(ggml_type, "F16")

"""A GGUF header parser that works on a partial file and says what it still needs.

The weights of an Ollama model are one GGUF file; its header (metadata key/values, then
one "tensor info" per tensor) is all a memory estimate needs, but its size is unknown
until it is parsed: the tokenizer vocabulary lives in it (a Llama-3 header is ~8 MiB).
The `gguf` package maps whole files only, so this parser is fed byte ranges as they
arrive over HTTP and says where the next byte it needs is (`wanted`).

Arrays longer than `max_array` are not kept: their element count is recorded
(`ArrayInfo`), which is all an estimate needs (the vocabulary size is the length of
`tokenizer.ggml.tokens`). Arrays of fixed-size elements are jumped over without being
read at all; arrays of strings have to be walked, one length prefix after the other.

Layout (little-endian, big-endian files detected by their version): magic `GGUF`,
version u32, tensor_count u64, kv_count u64 (u32 counts in version 1); KV pairs; tensor
infos (name, n_dims u32, dims u64 x n, ggml type u32, offset u64); padding to
`general.alignment`; tensor data.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
DEFAULT_MAX_ARRAY = 64  # like Ollama's own decoder: longer arrays are counted, not kept

# Metadata value types.
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)
_SCALAR = {_U8: "B", _I8: "b", _U16: "H", _I16: "h", _U32: "I", _I32: "i", _F32: "f",
           _BOOL: "?", _U64: "Q", _I64: "q", _F64: "d"}

# ggml tensor types: id -> (name, elements per block, bytes per block).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

# `general.file_type` -> the name Ollama shows as the quantization.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4",
}


class GGUFError(ValueError):
    """Not a GGUF file, or a header that cannot be right (corrupt or truncated wrongly)."""


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array too long to keep: its element type and length only."""

    elem_type: int
    count: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the tensor data

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def type_name(self) -> str:
        return GGML_TYPES.get(self.ggml_type, (f"type{self.ggml_type}", 0, 0))[0]

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.ggml_type, self.shape)


def tensor_bytes(ggml_type: int, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor: each row (the first dimension) is whole blocks of its type."""
    if ggml_type not in GGML_TYPES:
        raise GGUFError(f"unknown ggml tensor type {ggml_type}")
    _, block, size = GGML_TYPES[ggml_type]
    if not shape:
        return size
    return math.prod(shape[1:]) * -(-shape[0] // block) * size


@dataclass(frozen=True)
class GGUFHeader:
    """What the bytes seen so far say. `complete` once every tensor info is parsed."""

    version: int
    tensor_count: int
    kv_count: int
    metadata: dict[str, Any]  # in file order; long arrays as ArrayInfo
    tensors: tuple[TensorInfo, ...]  # those parsed so far (all when complete)
    kv_complete: bool
    complete: bool
    data_offset: int | None  # where tensor data starts (known when complete)
    wanted: int | None  # next file offset the parser needs (None when complete)
    need_at_least: int  # bytes from `wanted` that the next item needs at minimum

    @property
    def alignment(self) -> int:
        value = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        return value if isinstance(value, int) and value > 0 else DEFAULT_ALIGNMENT


class _Short(Exception):
    """Not enough bytes; `end` is the file offset the next item reaches at least."""

    def __init__(self, end: int):
        self.end = end


class GGUFParser:
    """Feed it byte ranges of one file, in order; parse as far as the bytes allow.

    `feed(offset, data)` takes the bytes at `offset`, which must be the `wanted` offset
    of the last `parse()` (or 0 at first). Bytes already parsed are let go, so memory
    stays at about one range even for a large header.
    """

    def __init__(self, *, max_array: int = DEFAULT_MAX_ARRAY) -> None:
        self.max_array = max_array
        self._base = 0  # file offset of self._buf[0]
        self._buf = b""
        self._pos = 0  # file offset of the next unparsed byte
        self._order = "<"
        self._wide = True  # u64 counts and lengths (GGUF v2+)
        self._version = 0
        self._tensor_count = -1
        self._kv_count = -1
        self._metadata: dict[str, Any] = {}
        self._tensors: list[TensorInfo] = []
        # An array being walked across ranges:
        # [key, elem_type, count, done, kept values (None: not kept), file offset of item 0]
        self._array: list[Any] | None = None
        self._short_end = 0
        self._data_offset: int | None = None

    @property
    def bytes_fed(self) -> int:
        return self._base + len(self._buf)

    def feed(self, offset: int, data: bytes) -> None:
        if offset != self._wanted():
            raise ValueError(f"GGUF bytes fed at {offset}, expected {self._wanted()}")
        if self._pos <= self._base + len(self._buf):
            self._buf = self._buf[self._pos - self._base:] + data
            self._base = self._pos
        else:
            self._base, self._buf = offset, data  # after a jump over a fixed-size array

    def array_progress(self) -> tuple[str, int, int, int] | None:
        """(key, items done, items in all, bytes they took) of an array cut by the range end."""
        if self._array is None:
            return None
        key, _, count, done, _, start = self._array
        return key, done, count, self._pos - start

    def _wanted(self) -> int:
        return max(self._pos, self._base + len(self._buf))

    # -- reading primitives: raise _Short when the bytes are not there yet --------------

    def _take(self, n: int) -> bytes:
        start = self._pos - self._base
        if start < 0 or start + n > len(self._buf):
            raise _Short(self._pos + n)
        self._pos += n
        return self._buf[start:start + n]

    def _unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        return struct.unpack(self._order + fmt, self._take(size))[0]

    def _count(self) -> int:
        return int(self._unpack("Q" if self._wide else "I"))

    def _string(self) -> str:
        start = self._pos
        length = self._count()
        if length > 1 << 30:
            raise GGUFError(f"implausible string length {length} at offset {start}")
        try:
            raw = self._take(length)
        except _Short as short:
            self._pos = start
            raise short from None
        return raw.decode("utf-8", errors="replace")

    def _skip_string(self) -> None:
        start = self._pos
        length = self._count()
        if self._pos + length > self._base + len(self._buf):
            self._pos = start
            raise _Short(start + (8 if self._wide else 4) + length)
        self._pos += length

    def _skip_strings(self, done: int, count: int) -> int:
        """Walk string items as far as the buffer goes (the hot loop: a vocabulary)."""
        buf, base = self._buf, self._base
        unpack = struct.Struct(self._order + ("Q" if self._wide else "I")).unpack_from
        width = 8 if self._wide else 4
        pos, end = self._pos - base, len(buf)
        while done < count and pos + width <= end:
            following = pos + width + unpack(buf, pos)[0]
            if following > end:
                break
            pos = following
            done += 1
        self._pos = base + pos
        return done

    def _value(self, vtype: int) -> Any:
        if vtype == _STR:
            return self._string()
        if vtype in _SCALAR:
            return self._unpack(_SCALAR[vtype])
        raise GGUFError(f"unknown GGUF value type {vtype}")

    # -- the parse ----------------------------------------------------------------------

    def parse(self) -> GGUFHeader:
        try:
            if self._tensor_count < 0:
                self._preamble()
            while len(self._metadata) < self._kv_count or self._array is not None:
                if self._array is not None:
                    self._continue_array()
                else:
                    self._kv_pair()
            while len(self._tensors) < self._tensor_count:
                self._tensor_info()
            if self._data_offset is None:
                self._data_offset = _align(self._pos, self._alignment())
        except _Short as short:
            self._short_end = short.end
        return self._snapshot()

    def _preamble(self) -> None:
        start = self._pos
        try:
            magic = self._take(4)
            if magic != MAGIC:
                raise GGUFError(f"not a GGUF file (starts with {magic!r})")
            version = struct.unpack("<I", self._take(4))[0]
            if version > 0xFFFF:  # written big-endian
                self._order, version = ">", struct.unpack(">I", struct.pack("<I", version))[0]
            if version not in (1, 2, 3):
                raise GGUFError(f"unsupported GGUF version {version}")
            self._version, self._wide = version, version >= 2
            self._tensor_count = self._count()
            self._kv_count = self._count()
        except _Short:
            self._pos = start
            self._tensor_count = -1
            raise _Short(24) from None
        if self._tensor_count > 1 << 24 or self._kv_count > 1 << 20:
            raise GGUFError("implausible tensor or key counts: not a GGUF header")

    def _kv_pair(self) -> None:
        start = self._pos
        try:
            key = self._string()
            vtype = self._unpack("I")
            if vtype != _ARR:
                self._metadata[key] = self._value(vtype)
                return
            elem_type = self._unpack("I")
            count = self._count()
        except _Short as short:
            self._pos = start
            raise short from None
        if elem_type not in _SCALAR and elem_type != _STR:
            raise GGUFError(f"unsupported array element type {elem_type} for {key}")
        self._array = [key, elem_type, count, 0, [] if count <= self.max_array else None,
                       self._pos]
        self._continue_array()

    def _continue_array(self) -> None:
        assert self._array is not None
        key, elem_type, count, done, kept, _ = self._array
        if kept is None and elem_type != _STR:
            # Fixed-size elements: jump over them without reading a byte.
            self._pos += (count - done) * struct.calcsize(_SCALAR[elem_type])
            done = count
        elif kept is None:
            done = self._skip_strings(done, count)
        while done < count:
            checkpoint = self._pos
            try:
                if kept is not None:
                    kept.append(self._value(elem_type))
                else:
                    self._skip_string()
            except _Short as short:
                self._pos = checkpoint
                self._array[3] = done
                raise short from None
            done += 1
        self._metadata[key] = tuple(kept) if kept is not None else ArrayInfo(elem_type, count)
        self._array = None

    def _tensor_info(self) -> None:
        start = self._pos
        try:
            name = self._string()
            n_dims = self._unpack("I")
            if n_dims > 8:
                raise GGUFError(f"tensor {name!r} has {n_dims} dimensions")
            shape = tuple(int(self._unpack("Q")) for _ in range(n_dims))
            ggml_type = self._unpack("I")
            offset = self._unpack("Q")
        except _Short as short:
            self._pos = start
            raise short from None
        self._tensors.append(TensorInfo(name, shape, ggml_type, offset))

    def _alignment(self) -> int:
        value = self._metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        return value if isinstance(value, int) and value > 0 else DEFAULT_ALIGNMENT

    def _snapshot(self) -> GGUFHeader:
        kv_complete = self._kv_count >= 0 and len(self._metadata) == self._kv_count \
            and self._array is None
        complete = kv_complete and len(self._tensors) == self._tensor_count
        wanted = None if complete else self._wanted()
        return GGUFHeader(
            version=self._version,
            tensor_count=max(self._tensor_count, 0),
            kv_count=max(self._kv_count, 0),
            metadata=dict(self._metadata),
            tensors=tuple(self._tensors),
            kv_complete=kv_complete,
            complete=complete,
            data_offset=self._data_offset if complete else None,
            wanted=wanted,
            need_at_least=0 if wanted is None else max(self._short_end - wanted, 1),
        )


def _align(offset: int, alignment: int) -> int:
    return offset + (-offset % alignment)


def parse_gguf(data: bytes, *, max_array: int = DEFAULT_MAX_ARRAY) -> GGUFHeader:
    """Parse a prefix of a GGUF file (the whole header, or as much of it as there is)."""
    parser = GGUFParser(max_array=max_array)
    parser.feed(0, data)
    return parser.parse()


# -- writing: tests and the test server synthesize realistic headers --------------------


def encode_header(metadata: dict[str, Any], tensors: list[tuple[str, tuple[int, ...], int]],
                  *, alignment: int = DEFAULT_ALIGNMENT) -> tuple[bytes, int]:
    """A GGUF v3 header for these metadata and (name, shape, ggml type) tensors.

    Returns the header bytes (padded to the alignment) and the total size of the tensor
    data that must follow it. Value types follow Python types: bool, int (u32, or u64
    when large; i32 when negative), float (f32), str, list/tuple (arrays of one type).
    """
    out = [MAGIC, struct.pack("<IQQ", 3, len(tensors), len(metadata))]
    for key, value in metadata.items():
        out.append(_encode_string(key))
        out.append(_encode_value(value))
    offset = 0
    for name, shape, ggml_type in tensors:
        out.append(_encode_string(name))
        out.append(struct.pack("<I", len(shape)))
        out.append(struct.pack(f"<{len(shape)}Q", *shape))
        out.append(struct.pack("<IQ", ggml_type, offset))
        offset = _align(offset + tensor_bytes(ggml_type, shape), alignment)
    header = b"".join(out)
    return header + b"\0" * (-len(header) % alignment), offset


def _encode_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _type_of(value: Any) -> tuple[int, str]:
    if isinstance(value, bool):
        return _BOOL, "?"
    if isinstance(value, int):
        if value < 0:
            return (_I32, "i") if value >= -(1 << 31) else (_I64, "q")
        return (_U32, "I") if value < 1 << 32 else (_U64, "Q")
    if isinstance(value, float):
        return _F32, "f"
    if isinstance(value, str):
        return _STR, ""
    raise TypeError(f"cannot encode {type(value).__name__} in GGUF")


def _encode_value(value: Any) -> bytes:
    if isinstance(value, (list, tuple)):
        elem_type, fmt = _type_of(value[0]) if value else (_U32, "I")
        if elem_type == _STR:
            body = b"".join(_encode_string(v) for v in value)
        else:
            body = struct.pack(f"<{len(value)}{fmt}", *value)
        return struct.pack("<IIQ", _ARR, elem_type, len(value)) + body
    vtype, fmt = _type_of(value)
    if vtype == _STR:
        return struct.pack("<I", vtype) + _encode_string(value)
    return struct.pack(f"<I{fmt}", vtype, value)

"""Blobs (content addressed by digest), the config blob and the manifest of a model.

Media types as Ollama's `server/images.go` and `server/layer.go` write them.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from tests.double.wire import MIB, go_json, sha256_hex

if TYPE_CHECKING:
    from tests.double.catalog import CatalogModel

MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_MODEL = "application/vnd.ollama.image.model"
MT_TEMPLATE = "application/vnd.ollama.image.template"
MT_SYSTEM = "application/vnd.ollama.image.system"
MT_PARAMS = "application/vnd.ollama.image.params"
MT_LICENSE = "application/vnd.ollama.image.license"


class Blob:
    """Content served by the registry / stored by the server, addressed by digest."""

    def __init__(self, digest: str, size: int, media_type: str) -> None:
        self.digest = digest
        self.size = size
        self.media_type = media_type

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def read(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def text(self) -> str:
        return self.read(0, self.size).decode()


class BytesBlob(Blob):
    def __init__(self, data: bytes, media_type: str) -> None:
        super().__init__("sha256:" + sha256_hex(data), len(data), media_type)
        self.data = data

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


class GGUFBlob(Blob):
    """A GGUF file whose header is real bytes and whose tensor data is virtual zeros."""

    def __init__(self, segments: list[bytes], header_size: int, size: int, seed: str) -> None:
        self.segments = segments
        self.starts = list(itertools.accumulate([0] + [len(s) for s in segments[:-1]]))
        self.header_size = header_size
        super().__init__("", size, MT_MODEL)
        if size <= 16 * MIB:  # small enough to hash honestly
            self.digest = "sha256:" + sha256_hex(self.read(0, size))
        else:  # deterministic fake digest: sha256 of something stable
            self.digest = "sha256:" + sha256_hex(f"ollama-test-double weights {seed}".encode())

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        out = bytearray()
        for start, seg in zip(self.starts, self.segments):
            seg_end = start + len(seg)
            if seg_end <= offset or start >= end:
                continue
            out += memoryview(seg)[max(offset, start) - start : min(end, seg_end) - start]
        out += bytes(end - offset - len(out))
        return bytes(out)


def make_config_blob(m: CatalogModel, layers: list[Blob]) -> BytesBlob:
    config = {
        "model_format": "gguf",
        "model_family": m.family,
        "model_families": [m.family],
        "model_type": m.param_size,
        "file_type": m.quant,
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]},
    }
    return BytesBlob(go_json(config).encode(), MT_CONFIG)


def manifest_bytes(config: Blob, layers: list[Blob]) -> bytes:
    return go_json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": b.media_type, "digest": b.digest, "size": b.size}
                   for b in layers],
    }).encode()

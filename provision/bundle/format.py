"""The bundle file format: an uncompressed tar with a fixed, computable layout.

```
index.json                                   what is inside (BundleIndex, as JSON)
manifests/<host>/<namespace>/<model>/<tag>   each model's registry manifest, byte for byte
blobs/sha256-<hex>                           each blob once, in the order the index lists
```

The members after `index.json` are exactly an Ollama models folder (`$OLLAMA_MODELS`
holds `manifests/...` and `blobs/sha256-...`), so `tar -x` of a bundle into an empty
folder gives a folder a server can use as it is.

Everything is deterministic (mode 0644, owner 0, mtime 0, no directory entries, models
sorted by name, blobs in first-use order), so the same models always give the same
bytes, and where every member starts follows from the index alone: a reader finds a
blob by arithmetic, tells a truncated file by its length before reading any blob, and
checks each header against the one the index implies.

Pure: bytes in, bytes out; no file or network access here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from provision.errors import EXIT_NOT_READY, ProvisionError
from provision.names import ModelName, parse_name

FORMAT = "ollama-provision.bundle/1"
INDEX_NAME = "index.json"
BLOCK = 512
RECORD = 20 * BLOCK  # tar pads the archive to whole records of 10 KiB, as GNU tar does
MAX_INDEX_BYTES = 64 << 20  # an index this large is not one we wrote
MAX_MANIFEST_BYTES = 4 << 20

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_USTAR_MAX_SIZE = 0o77777777777  # 8 GiB - 1: larger sizes go in a pax header


class BundleError(ProvisionError):
    """The bundle file is unusable: not a bundle, truncated, corrupt, or lacks something."""

    def __init__(self, message: str, *, hint: str | None = None,
                 exit_code: int = EXIT_NOT_READY) -> None:
        super().__init__(message, exit_code=exit_code, hint=hint)


@dataclass(frozen=True)
class BundleBlob:
    digest: str  # "sha256:<64 hex>"
    size: int

    @property
    def member(self) -> str:
        return blob_member(self.digest)


@dataclass(frozen=True)
class BundleModel:
    name: ModelName
    manifest_digest: str  # sha256 of the manifest bytes (what /api/tags shows, as sha256:)
    manifest_size: int

    @property
    def member(self) -> str:
        return manifest_member(self.name)


@dataclass(frozen=True)
class BundleIndex:
    models: tuple[BundleModel, ...]  # sorted by name
    blobs: tuple[BundleBlob, ...]  # archive order, each digest once

    def find(self, name: ModelName) -> BundleModel | None:
        return next((m for m in self.models if m.name.key == name.key), None)

    def blob(self, digest: str) -> BundleBlob | None:
        return next((b for b in self.blobs if b.digest == digest), None)

    @property
    def blob_bytes(self) -> int:
        return sum(b.size for b in self.blobs)

    def to_bytes(self) -> bytes:
        document = {
            "format": FORMAT,
            "models": [{"name": m.name.full, "manifest": m.member,
                        "digest": m.manifest_digest, "size": m.manifest_size}
                       for m in self.models],
            "blobs": [{"digest": b.digest, "size": b.size} for b in self.blobs],
        }
        return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def valid_digest(text: object) -> bool:
    return isinstance(text, str) and bool(_DIGEST.match(text))


def manifest_member(name: ModelName) -> str:
    """Where Ollama keeps a model's manifest, below its models folder."""
    return f"manifests/{name.host}/{name.namespace}/{name.model}/{name.tag}"


def blob_member(digest: str) -> str:
    return f"blobs/{digest.replace(':', '-', 1)}"


def build_index(models: Iterable[tuple[ModelName, bytes, Iterable[tuple[str, int]]]]
                ) -> BundleIndex:
    """The index of (name, manifest bytes, blobs (digest, size) in manifest order) per
    model: models sorted by name, each blob once in the order models first use it."""
    entries = sorted(models, key=lambda m: m[0].key)
    blobs: dict[str, BundleBlob] = {}
    listed = []
    for name, raw, model_blobs in entries:
        listed.append(BundleModel(name=name, manifest_digest=sha256_digest(raw),
                                  manifest_size=len(raw)))
        for digest, size in model_blobs:
            if not valid_digest(digest) or size < 0:
                raise BundleError(f"the manifest of {name.short} lists a malformed blob "
                                  f"({digest!r}, {size} bytes)")
            known = blobs.get(digest)
            if known is not None and known.size != size:
                raise BundleError(f"blob {digest} is listed with two sizes ({known.size} "
                                  f"and {size}): the registry's manifests disagree")
            blobs.setdefault(digest, BundleBlob(digest=digest, size=size))
    return BundleIndex(models=tuple(listed), blobs=tuple(blobs.values()))


def parse_index(data: bytes, *, where: str) -> BundleIndex:
    """Read and check an index; anything unexpected is a BundleError naming `where`."""
    def bad(why: str) -> BundleError:
        return BundleError(f"{where} is not a usable model bundle: {why}",
                           hint="make it again with `ollama-provision bundle create`")

    try:
        document = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        raise bad("its index is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise bad(f"unknown format {found!r} (this tool reads {FORMAT})")
    models, blobs = document.get("models"), document.get("blobs")
    if not isinstance(models, list) or not isinstance(blobs, list):
        raise bad("the index lacks its model or blob list")
    parsed_models: list[BundleModel] = []
    for entry in models:
        if not isinstance(entry, dict):
            raise bad("a model entry is not an object")
        try:
            name = parse_name(str(entry.get("name", "")))
        except ProvisionError as exc:
            raise bad(f"a model has an invalid name ({exc.message})") from None
        digest, size = entry.get("digest"), entry.get("size")
        if not valid_digest(digest) or not _size_ok(size) or size > MAX_MANIFEST_BYTES:
            raise bad(f"the entry of {name.short} is malformed")
        if entry.get("manifest") != manifest_member(name):
            raise bad(f"the manifest path of {name.short} is not where it belongs")
        parsed_models.append(BundleModel(name=name, manifest_digest=digest, manifest_size=size))
    parsed_blobs: list[BundleBlob] = []
    for entry in blobs:
        if not isinstance(entry, dict) or not valid_digest(entry.get("digest")) \
                or not _size_ok(entry.get("size")):
            raise bad("a blob entry is malformed")
        parsed_blobs.append(BundleBlob(digest=entry["digest"], size=entry["size"]))
    if len({m.name.key for m in parsed_models}) != len(parsed_models):
        raise bad("a model is listed twice")
    if len({b.digest for b in parsed_blobs}) != len(parsed_blobs):
        raise bad("a blob is listed twice")
    if [m.name.key for m in parsed_models] != sorted(m.name.key for m in parsed_models):
        raise bad("the models are not in order")
    return BundleIndex(models=tuple(parsed_models), blobs=tuple(parsed_blobs))


def _size_ok(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# --- tar headers --------------------------------------------------------------------------


def member_header(name: str, size: int) -> bytes:
    """The header block(s) of a regular-file member: ustar, preceded by a pax extended
    header when the name or size does not fit ustar (host names run to 350 characters,
    weights past 8 GiB)."""
    encoded = name.encode()
    records: list[tuple[str, str]] = []
    if len(encoded) > 100:
        records.append(("path", name))
    if size > _USTAR_MAX_SIZE:
        records.append(("size", str(size)))
    if not records:
        return _ustar(encoded, size, b"0")
    pax = b"".join(_pax_record(key, value) for key, value in records)
    header = _ustar(b"././@PaxHeader", len(pax), b"x") + _padded(pax)
    return header + _ustar(encoded[:100], 0 if size > _USTAR_MAX_SIZE else size, b"0")


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:  # the length counts its own digits
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _ustar(name: bytes, size: int, kind: bytes) -> bytes:
    fields = [
        name.ljust(100, b"\0"),
        b"0000644\0", b"0000000\0", b"0000000\0",  # mode, uid, gid
        b"%011o\0" % size,
        b"00000000000\0",  # mtime 0: the same models give the same bytes
        b" " * 8,  # checksum, computed below over the block with these spaces
        kind,
        b"\0" * 100,  # link name
        b"ustar\x0000",
        b"\0" * 32, b"\0" * 32,  # owner and group names
        b"\0" * 8, b"\0" * 8,  # device numbers
        b"\0" * 155,  # prefix
        b"\0" * 12,
    ]
    block = b"".join(fields)
    checksum = b"%06o\0 " % sum(block)
    return block[:148] + checksum + block[156:]


def _padded(data: bytes) -> bytes:
    return data + b"\0" * padding(len(data))


def padding(size: int) -> int:
    """Zero bytes after a member's data, up to the next 512-byte block."""
    return -size % BLOCK


def read_ustar_size(block: bytes) -> tuple[str, int]:
    """(name, size) of a plain ustar header block; ValueError when it is not one."""
    if len(block) != BLOCK or block[257:263] != b"ustar\0":
        raise ValueError("not a ustar header")
    stored = int(block[148:154].decode("ascii").strip("\0 ") or "0", 8)
    if stored != sum(block[:148]) + 8 * 32 + sum(block[156:]):
        raise ValueError("header checksum mismatch")
    name = block[:100].rstrip(b"\0").decode()
    return name, int(block[124:135].decode("ascii"), 8)


# --- layout -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    header: bytes  # the exact header bytes
    offset: int  # where the header starts in the file

    @property
    def data_offset(self) -> int:
        return self.offset + len(self.header)

    @property
    def end(self) -> int:
        """Where the next member starts."""
        return self.data_offset + self.size + padding(self.size)


def layout(index_size: int, index: BundleIndex) -> Iterator[Member]:
    """Every member, in file order, where the index says it must be."""
    offset = 0
    entries = [(INDEX_NAME, index_size)]
    entries += [(m.member, m.manifest_size) for m in index.models]
    entries += [(b.member, b.size) for b in index.blobs]
    for name, size in entries:
        member = Member(name=name, size=size, header=member_header(name, size), offset=offset)
        yield member
        offset = member.end


def archive_end(last: Member) -> bytes:
    """What follows the last member: two zero blocks, then zeros to a whole record."""
    end = last.end + 2 * BLOCK
    return b"\0" * (end + (-end % RECORD) - last.end)


def archive_size(index_size: int, index: BundleIndex) -> int:
    last = list(layout(index_size, index))[-1]  # the index at least: never empty
    return last.end + len(archive_end(last))

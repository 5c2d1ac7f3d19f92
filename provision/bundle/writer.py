"""Writing a bundle: `FILE.partial` first, renamed to FILE only when complete and synced.

Members go in the order the layout fixes, blobs streamed through an `ArchiveSink` (a
`BlobSink`: what a source fills) that hashes what it writes. An interrupted run leaves
`FILE.partial`; the next run with the same index (same models, same manifests) keeps
every blob already written (each checked again) and the written part of the blob it
stopped in, and continues there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Protocol

from provision.bundle.format import (
    BundleBlob,
    BundleError,
    BundleIndex,
    archive_end,
    layout,
    padding,
)
from provision.bundle.store import CHUNK
from provision.output import human_bytes

PARTIAL_SUFFIX = ".partial"


class BlobDigestMismatch(BundleError):
    """What was written for a blob is not the blob: the source sent other bytes."""


@dataclass(frozen=True)
class Resumed:
    """What an earlier, interrupted run had already written."""

    complete: frozenset[str]  # digests of blobs written in full (and checked)
    partial: tuple[str, int] | None  # (digest, bytes) of the blob it stopped in
    bytes_kept: int  # blob bytes not to fetch again


class BlobSink(Protocol):
    """Where a source copies one blob's bytes: a bundle member (`ArchiveSink`), a file of
    the seed cache (`cache.CacheSink`). Bounded by the blob's size, hashed as written."""

    blob: BundleBlob
    written: int  # bytes in place (a resumed blob starts past 0)

    @property
    def remaining(self) -> int: ...

    def write(self, data: bytes) -> None:
        """BlobDigestMismatch when more than the blob's size comes."""
        ...

    def restart(self) -> None:
        """Throw away what was written (it was not the blob)."""
        ...

    def finish(self) -> None:
        """BlobDigestMismatch unless the blob is complete and matches its digest."""
        ...


class HashingSink:
    """A blob's bytes into a file from `start` in it: bounded by the blob's size, hashed
    as written. Subclasses say what `finish()` does once the digest matched."""

    def __init__(self, handle: BinaryIO, blob: BundleBlob, start: int, written: int = 0,
                 hasher: hashlib._Hash | None = None) -> None:
        self.blob = blob
        self.written = written
        self._handle = handle
        self._start = start  # where the blob's first byte goes in the file
        self._hasher = hasher or hashlib.sha256()

    @property
    def remaining(self) -> int:
        return self.blob.size - self.written

    def write(self, data: bytes) -> None:
        if len(data) > self.remaining:
            raise BlobDigestMismatch(f"blob {self.blob.digest} is longer than the "
                                     f"{self.blob.size:,} bytes its manifest says")
        self._handle.write(data)
        self._hasher.update(data)
        self.written += len(data)

    def restart(self) -> None:
        """Throw away what was written for this blob (it was not the blob)."""
        self._handle.seek(self._start)
        self._handle.truncate()
        self.written = 0
        self._hasher = hashlib.sha256()

    def check(self) -> None:
        """BlobDigestMismatch unless the blob is complete and matches its digest."""
        got = f"sha256:{self._hasher.hexdigest()}"
        if self.written != self.blob.size or got != self.blob.digest:
            raise BlobDigestMismatch(
                f"blob {self.blob.digest} does not match its digest ({self.written:,} of "
                f"{self.blob.size:,} bytes, sha256 {got})")


class ArchiveSink(HashingSink):
    """One blob's member of a bundle being written."""

    def finish(self) -> None:
        self.check()
        self._handle.write(b"\0" * padding(self.blob.size))


class BundleWriter:
    """Writes one bundle: `start()`, then `sink(blob)` for each blob in index order,
    then `finish()`."""

    def __init__(self, path: Path, index: BundleIndex, manifests: Mapping[str, bytes]) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.index = index
        self.index_bytes = index.to_bytes()
        self.members = tuple(layout(len(self.index_bytes), index))
        self._by_name = {m.name: m for m in self.members}
        self._prefix = self._head(manifests)
        self._handle: BinaryIO | None = None
        self._kept: dict[str, int] = {}
        self._hashers: dict[str, hashlib._Hash] = {}

    @property
    def size(self) -> int:
        """Bytes of the finished file."""
        return self.members[-1].end + len(archive_end(self.members[-1]))

    def _head(self, manifests: Mapping[str, bytes]) -> bytes:
        """Index and manifests: everything before the first blob."""
        parts = []
        for member in self.members[: 1 + len(self.index.models)]:
            data = self.index_bytes if member.name == self.members[0].name \
                else manifests[member.name]
            parts += [member.header, data, b"\0" * padding(len(data))]
        return b"".join(parts)

    def start(self, on_checked: Callable[[int], None] | None = None) -> Resumed:
        """Open `FILE.partial`, keeping what an interrupted run with this index wrote."""
        kept = self._resume(on_checked) if self.partial.exists() else None
        if kept is None:
            handle = self.partial.open("wb")
            handle.write(self._prefix)
            self._handle = handle
            return Resumed(complete=frozenset(), partial=None, bytes_kept=0)
        return kept

    def _resume(self, on_checked: Callable[[int], None] | None) -> Resumed | None:
        handle = self.partial.open("r+b")
        try:
            if handle.read(len(self._prefix)) != self._prefix:
                handle.close()
                return None  # another index: other models or moved tags, start again
            length = os.fstat(handle.fileno()).st_size
            complete: set[str] = set()
            partial: tuple[str, int] | None = None
            cut = len(self._prefix)
            for blob in self.index.blobs:
                member = self._by_name[blob.member]
                handle.seek(member.offset)
                if length < member.data_offset or \
                        handle.read(len(member.header)) != member.header:
                    break
                present = min(blob.size, length - member.data_offset)
                hasher = hash_from(handle, present, on_checked)
                if present == blob.size:
                    if f"sha256:{hasher.hexdigest()}" != blob.digest:
                        cut = member.data_offset  # written wrong: write it again
                        partial = (blob.digest, 0)
                        self._kept[blob.digest] = 0
                        break
                    complete.add(blob.digest)
                    cut = member.end
                    handle.seek(member.data_offset + blob.size)
                    handle.write(b"\0" * padding(blob.size))
                    continue
                cut = member.data_offset + present
                partial = (blob.digest, present)
                self._kept[blob.digest] = present
                self._hashers[blob.digest] = hasher
                break
            handle.truncate(cut)
            handle.seek(cut)
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        kept = sum(b.size for b in self.index.blobs if b.digest in complete)
        return Resumed(complete=frozenset(complete), partial=partial,
                       bytes_kept=kept + (partial[1] if partial else 0))

    def sink(self, blob: BundleBlob) -> ArchiveSink:
        """The sink for the next blob; the file is positioned where its bytes go."""
        if self._handle is None:
            raise BundleError("the bundle writer was not started")
        member = self._by_name[blob.member]
        written = self._kept.pop(blob.digest, 0)
        if not written:
            self._handle.seek(member.offset)
            self._handle.truncate()
            self._handle.write(member.header)
        return ArchiveSink(self._handle, blob, member.data_offset, written,
                           self._hashers.pop(blob.digest, None))

    def finish(self) -> None:
        """Close the archive, sync it, and put it in place (atomically)."""
        if self._handle is None:
            raise BundleError("the bundle writer was not started")
        self._handle.write(archive_end(self.members[-1]))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._handle = None
        os.replace(self.partial, self.path)
        sync_dir(self.path.parent)

    def close(self) -> None:
        """Stop (an interrupt, an error): `FILE.partial` stays for the next run."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def check_free_space(folder: Path, need: int, what: str, hint: str) -> None:
    """BundleError (exit 1) when `folder`'s disk has less than `need` bytes free; `what`
    says it, with `{need}` for the bytes: "the bundle needs {need} more"."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell: the write itself will say
    if need > free:
        raise BundleError(f"not enough disk space at {folder}: "
                          f"{what.format(need=human_bytes(need))}, {human_bytes(free)} is "
                          "free", hint=hint)


def hash_from(handle: BinaryIO, length: int,
               on_checked: Callable[[int], None] | None) -> hashlib._Hash:
    hasher = hashlib.sha256()
    left = length
    while left > 0:
        data = handle.read(min(CHUNK, left))
        if not data:
            break
        hasher.update(data)
        left -= len(data)
        if on_checked is not None:
            on_checked(len(data))
    return hasher


def sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not every platform opens directories
    try:
        os.fsync(fd)
    except OSError:
        pass  # a file system without directory sync: the rename is still done
    finally:
        os.close(fd)

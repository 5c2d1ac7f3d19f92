"""Reading a bundle: the index from the start, then any member found where the layout
says it is, each header and digest checked. Blobs are streamed, never held whole.

A blob is checked while it streams and its last chunk is held back until the digest is
known to match: a consumer that forwards the chunks (an upload) never delivers a
complete corrupt blob, so a server never stores one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

from provision.bundle.format import (
    BLOCK,
    INDEX_NAME,
    MAX_INDEX_BYTES,
    BundleBlob,
    BundleError,
    BundleIndex,
    BundleModel,
    Member,
    archive_end,
    layout,
    parse_index,
    read_ustar_size,
    sha256_digest,
)
from provision.bundle.store import CHUNK, MAX_SMALL_LAYER
from provision.errors import EXIT_USAGE
from provision.models.registry import ModelManifest, parse_manifest
from provision.names import ModelName


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


@dataclass(frozen=True)
class VerifyResult:
    checked_bytes: int
    problems: tuple[str, ...] = field(default=())  # one line per fact, in file order

    @property
    def ok(self) -> bool:
        return not self.problems


class BundleReader:
    """One bundle file: its index, layout and members. Each read opens its own handle,
    so threads (one per server in a fleet) can share a reader. A `ModelStore`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.label = self.path.name
        try:
            self.file_size = self.path.stat().st_size
            with self.path.open("rb") as handle:
                first = handle.read(BLOCK)
                try:
                    name, size = read_ustar_size(first)
                except ValueError:
                    name, size = "", -1
                if name != INDEX_NAME or not 0 < size <= MAX_INDEX_BYTES:
                    raise BundleError(
                        f"{self.path} is not a model bundle (it does not start with "
                        f"{INDEX_NAME})", hint="make one with `ollama-provision bundle create`",
                        exit_code=EXIT_USAGE)
                raw_index = handle.read(size)
        except FileNotFoundError:
            raise BundleError(f"{self.path}: no such file", exit_code=EXIT_USAGE) from None
        except IsADirectoryError:
            raise BundleError(f"{self.path} is a directory, not a bundle file",
                              exit_code=EXIT_USAGE) from None
        except OSError as exc:
            raise BundleError(f"cannot read {self.path}: {exc.strerror or exc}",
                              exit_code=EXIT_USAGE) from None
        if len(raw_index) < size:
            raise self.truncated_error()
        self.index: BundleIndex = parse_index(raw_index, where=str(self.path))
        self.members: tuple[Member, ...] = tuple(layout(size, self.index))
        if self.members[0].header != first:
            raise BundleError(f"{self.path} is not a model bundle made by this tool "
                              "(its first header differs)", exit_code=EXIT_USAGE)
        self._by_name = {m.name: m for m in self.members}
        self._end = archive_end(self.members[-1])
        self.expected_size = self.members[-1].end + len(self._end)

    # --- whole-file checks ------------------------------------------------------------

    def truncated_error(self) -> BundleError:
        expected = getattr(self, "expected_size", None)
        of = f" of {expected:,}" if expected else ""
        return BundleError(
            f"{self.path} is truncated: {self.file_size:,}{of} bytes (a copy or download "
            "that did not finish?)", hint="copy the bundle again; `ollama-provision bundle "
            "verify` checks every digest")

    def check_length(self) -> None:
        """Refuse a truncated file before anything is read from it."""
        if self.file_size < self.expected_size:
            raise self.truncated_error()

    check = check_length  # the ModelStore check: a bundle is whole or unusable

    def select(self, names: Iterable[ModelName]) -> list[BundleModel]:
        """The named models (all when none are named); a name not in the bundle is an error."""
        wanted = list(names)
        if not wanted:
            return list(self.index.models)
        found = [m for m in map(self.index.find, wanted) if m is not None]
        missing = [n for n in wanted if self.index.find(n) is None]
        if missing:
            have = ", ".join(m.name.short for m in self.index.models) or "nothing"
            raise BundleError(
                f"{self.path} has no model {', '.join(n.short for n in missing)} "
                f"(it has: {have})", exit_code=EXIT_USAGE,
                hint="`ollama-provision bundle inspect FILE` lists what a bundle holds")
        return found

    # --- members ----------------------------------------------------------------------

    def unreadable(self, exc: OSError) -> BundleError:
        return BundleError(f"cannot read {self.path}: {exc.strerror or exc}")

    def _open_member(self, name: str) -> tuple[BinaryIO, Member]:
        member = self._by_name[name]
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise self.unreadable(exc) from None
        try:
            handle.seek(member.offset)
            header = handle.read(len(member.header))
        except OSError as exc:
            handle.close()
            raise self.unreadable(exc) from None
        if header != member.header:
            handle.close()
            if len(header) < len(member.header):
                raise self.truncated_error()
            raise BundleError(f"{self.path} is corrupt: the header of {name} is not where "
                              "its index says", hint="copy or make the bundle again")
        return handle, member

    def _read_member(self, name: str, limit: int) -> bytes:
        handle, member = self._open_member(name)
        with handle:
            if member.size > limit:
                raise BundleError(f"{self.path}: {name} is {member.size:,} bytes, more than "
                                  f"the {limit:,} a member of its kind may have")
            try:
                data = handle.read(member.size)
            except OSError as exc:
                raise self.unreadable(exc) from None
        if len(data) < member.size:
            raise self.truncated_error()
        return data

    def manifest(self, model: BundleModel) -> ModelManifest:
        """A model's manifest, checked against its digest and against the index."""
        raw = self._read_member(model.member, model.manifest_size)
        if sha256_digest(raw) != model.manifest_digest:
            raise self.corrupt(f"the manifest of {model.name.short}")
        manifest = parse_manifest(model.name, raw)
        if manifest is None:
            raise BundleError(f"{self.path}: the manifest of {model.name.short} is unreadable")
        for layer in (manifest.config, *manifest.layers):
            blob = self.index.blob(layer.digest)
            if blob is None or blob.size != layer.size:
                raise BundleError(
                    f"{self.path} lacks blob {layer.digest} of {model.name.short} "
                    f"({layer.media_type.rsplit('.', 1)[-1]})",
                    hint="make the bundle again with `ollama-provision bundle create`")
        return manifest

    def corrupt(self, what: str) -> BundleError:
        return BundleError(
            f"{self.path} is corrupt: {what} does not match its sha256 digest",
            hint="run `ollama-provision bundle verify` on it; copy or make it again")

    def blob(self, digest: str) -> BundleBlob | None:
        return self.index.blob(digest)

    def read_range(self, blob: BundleBlob, start: int, length: int) -> bytes:
        """`length` bytes of a blob from `start` (fewer at its end), unchecked: a GGUF
        header read to judge the hardware, as the registry serves a Range."""
        handle, member = self._open_member(blob.member)
        with handle:
            start = max(0, min(start, member.size))
            try:
                handle.seek(member.data_offset + start)
                data = handle.read(max(0, min(length, member.size - start)))
            except OSError as exc:
                raise self.unreadable(exc) from None
        return data

    def read_blob(self, blob: BundleBlob, limit: int = MAX_SMALL_LAYER) -> bytes:
        """A small blob (template, parameters, ...), whole and checked."""
        data = self._read_member(blob.member, limit)
        if sha256_digest(data) != blob.digest:
            raise self.corrupt(f"blob {_short(blob.digest)}")
        return data

    def stream_blob(self, blob: BundleBlob, *, chunk: int = CHUNK) -> Iterator[bytes]:
        """A blob's bytes in chunks; the last one only once the digest has matched."""
        handle, member = self._open_member(blob.member)
        with handle:
            digest = hashlib.sha256()
            left = member.size
            held = b""
            while left > 0:
                try:
                    data = handle.read(min(chunk, left))
                except OSError as exc:
                    raise self.unreadable(exc) from None
                if not data:
                    raise self.truncated_error()
                digest.update(data)
                left -= len(data)
                if held:
                    yield held
                held = data
            if f"sha256:{digest.hexdigest()}" != blob.digest:
                raise self.corrupt(f"blob {_short(blob.digest)}")
            if held:
                yield held

    # --- verify -----------------------------------------------------------------------

    def verify(self, on_bytes: Callable[[int], None] | None = None) -> VerifyResult:
        """Read everything once, in file order: every header, every digest, the end."""
        try:
            return self._verify(on_bytes)
        except OSError as exc:
            raise self.unreadable(exc) from None

    def _verify(self, on_bytes: Callable[[int], None] | None) -> VerifyResult:
        problems: list[str] = []
        checked = 0
        manifests = {m.member: m for m in self.index.models}
        blobs = {b.member: b for b in self.index.blobs}
        referenced: set[str] = set()
        with self.path.open("rb") as handle:
            for member in self.members:
                header = handle.read(len(member.header))
                if len(header) < len(member.header):
                    problems.append(f"truncated: {self.file_size:,} of "
                                    f"{self.expected_size:,} bytes, {member.name} and what "
                                    "follows are missing")
                    return VerifyResult(checked, tuple(problems))
                if header != member.header:
                    problems.append(f"the header of {member.name} is not where the index "
                                    "says: the file is corrupt from there on")
                    return VerifyResult(checked, tuple(problems))
                digest = hashlib.sha256()
                kept = bytearray() if member.name in manifests else None
                left = member.size
                while left > 0:
                    data = handle.read(min(CHUNK, left))
                    if not data:
                        break
                    digest.update(data)
                    if kept is not None:
                        kept += data
                    left -= len(data)
                    checked += len(data)
                    if on_bytes is not None:
                        on_bytes(len(data))
                if left > 0:
                    problems.append(f"truncated: {self.file_size:,} of "
                                    f"{self.expected_size:,} bytes, {member.name} is cut "
                                    "short")
                    return VerifyResult(checked, tuple(problems))
                handle.seek(member.end)
                got = f"sha256:{digest.hexdigest()}"
                if member.name in manifests:
                    model = manifests[member.name]
                    if got != model.manifest_digest:
                        problems.append(f"the manifest of {model.name.short} does not match "
                                        "its digest")
                        continue
                    referenced |= self._manifest_blobs(model, bytes(kept or b""), problems)
                elif member.name in blobs and got != blobs[member.name].digest:
                    problems.append(f"blob {blobs[member.name].digest} does not match its "
                                    f"digest (sha256 of its bytes: {got})")
            tail = handle.read(len(self._end) + 1)
        if len(tail) < len(self._end):
            problems.append(f"truncated: {self.file_size:,} of {self.expected_size:,} bytes "
                            "(the end of the archive is missing)")
        elif tail[:len(self._end)] != self._end or len(tail) > len(self._end):
            problems.append(f"unexpected bytes after the last member ({self.file_size:,} "
                            f"bytes, {self.expected_size:,} expected)")
        unused = [b.digest for b in self.index.blobs if b.digest not in referenced]
        problems += [f"blob {d} is in no model's manifest" for d in unused]
        return VerifyResult(checked, tuple(problems))

    def _manifest_blobs(self, model: BundleModel, raw: bytes, problems: list[str]) -> set[str]:
        manifest = parse_manifest(model.name, raw)
        if manifest is None:
            problems.append(f"the manifest of {model.name.short} is unreadable")
            return set()
        for layer in (manifest.config, *manifest.layers):
            blob = self.index.blob(layer.digest)
            if blob is None or blob.size != layer.size:
                problems.append(f"{model.name.short} needs blob {layer.digest}, which the "
                                "bundle lacks")
        return {layer.digest for layer in (manifest.config, *manifest.layers)}

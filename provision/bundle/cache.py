"""The seed cache: models this machine downloads once from the registry for a whole fleet
(`fleet --seed`) and uploads to every host that needs them, kept for the next run within
a byte budget.

```
<cache dir>/                  $XDG_CACHE_HOME/ollama-provision, ~/.cache/ollama-provision
  CACHEDIR.TAG                so that backup tools skip it
  lock                        held (flock) only while evicting
  blobs/sha256-<hex>          complete: its sha256 matched when written; mtime = last use
  blobs/sha256-<hex>.partial  a download that stopped: taken up again with HTTP Range
```

Blobs only, content-addressed; manifests are read from the registry on every run (tags
move). Within a run each blob is downloaded once (single flight: the first thread that
needs it downloads, the others wait for it); across runs on this machine, a blob being
downloaded is locked (flock) and a second run waits for it. A blob being uploaded is
*pinned* (and share-locked, for other runs) and never evicted; eviction takes the least
recently used blobs first, the ones this run still wants last, and a download waits for
room while others' uploads hold it. A model larger than the whole budget passes through
(downloaded, uploaded, removed at the end). At the end the cache is brought back within
its budget.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from provision.bundle.format import BundleBlob, BundleError, BundleModel, blob_member, sha256_digest
from provision.bundle.sources import Source
from provision.bundle.store import CHUNK, MAX_SMALL_LAYER
from provision.bundle.writer import HashingSink, check_free_space, hash_from, sync_dir
from provision.errors import EXIT_NOT_READY, EXIT_USAGE, ProvisionError
from provision.models.pull import (
    DOWNLOADING,
    BlobProgress,
    ModelStarted,
    Notice,
    NullReporter,
    Reporter,
    Resumed,
)
from provision.models.registry import Layer, ModelManifest
from provision.names import ModelName

try:  # POSIX: other runs on this machine are kept off blobs in use
    import fcntl
except ImportError:  # Windows: one run at a time (no lock between runs)
    fcntl = None  # type: ignore[assignment]

DEFAULT_CACHE_SIZE = 100 * 10**9
PARTIAL = ".partial"
LABEL = "the seed cache"
_TAG = (b"Signature: 8a477f597d28d172789f06886806bc55\n"
        b"# This folder is a cache of model blobs made by ollama-provision (fleet --seed).\n"
        b"# For information about cache directory tags see https://bford.info/cachedir/\n")
_WAIT = 0.5  # seconds between looks for room while others' uploads hold it


def default_cache_dir(environ: Mapping[str, str], platform: str = sys.platform) -> Path:
    """$XDG_CACHE_HOME/ollama-provision, else the platform's user cache folder."""
    xdg = environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "ollama-provision"
    home = Path(environ.get("HOME") or Path.home())
    if platform == "darwin":
        return home / "Library" / "Caches" / "ollama-provision"
    if platform == "win32":
        local = environ.get("LOCALAPPDATA")
        base = Path(local) if local else home / "AppData" / "Local"
        return base / "ollama-provision" / "cache"
    return home / ".cache" / "ollama-provision"


@dataclass(frozen=True)
class CacheStats:
    registry_bytes: int  # taken from the registry by this run (a resumed blob: the rest)
    registry_blobs: int  # blobs downloaded
    cached_bytes: int  # served from blobs already complete in the cache
    resumed_bytes: int  # partial downloads of an earlier run, kept
    evicted_bytes: int


def _lock(handle: BinaryIO, *, shared: bool = False, wait: bool = True) -> bool:
    """flock the file (False: another run holds it and `wait` is off)."""
    if fcntl is None:
        return True
    flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(handle.fileno(), flags)
    except BlockingIOError:
        return False
    return True


class CacheSink(HashingSink):
    """A `BlobSink` over `blobs/<digest>.partial`; `finish()` checks size and digest,
    syncs, and renames it to its final name, so a file with that name is always one
    that matched."""

    def __init__(self, handle: BinaryIO, blob: BundleBlob, partial: Path, final: Path,
                 written: int, hasher: hashlib._Hash) -> None:
        super().__init__(handle, blob, 0, written, hasher)
        self._partial = partial
        self._final = final

    def finish(self) -> None:
        self.check()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        os.replace(self._partial, self._final)


class SeedCache:
    """One run's use of the cache folder at `root`, shared by every host's thread."""

    def __init__(self, root: Path, budget: int, source: Source) -> None:
        self.root = Path(root)
        self.budget = budget
        self.source = source
        self.blobs = self.root / "blobs"
        self._cond = threading.Condition()
        self._flights: dict[str, threading.Lock] = {}
        self._downloading: set[str] = set()
        self._holds: Counter[str] = Counter()  # blobs of a model being downloaded
        self._pins: Counter[str] = Counter()  # blobs being uploaded
        self._wants: Counter[str] = Counter()  # blobs hosts will upload later in this run
        self._served: set[str] = set()  # counted in cached_bytes already
        self._failed: dict[str, BundleError] = {}  # downloads that gave up: not again
        self._passed: set[str] = set()  # over the budget: removed at the end
        self._stats = dict.fromkeys(("registry_bytes", "registry_blobs", "cached_bytes",
                                     "resumed_bytes", "evicted_bytes"), 0)
        self._opened = False

    def open(self) -> None:
        """Make the folder (nothing is touched before): ProvisionError (exit 1) naming it
        when it cannot be made or written."""
        if self._opened:
            return
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            tag = self.root / "CACHEDIR.TAG"
            if not tag.exists():
                tag.write_bytes(_TAG)
            (self.root / "lock").touch()
        except OSError as exc:
            raise ProvisionError(f"cannot use the seed cache at {self.root}: "
                                 f"{exc.strerror or exc}", exit_code=EXIT_NOT_READY,
                                 hint="--cache-dir puts it elsewhere") from None
        self._opened = True

    @property
    def stats(self) -> CacheStats:
        with self._cond:
            return CacheStats(**self._stats)

    def _count(self, key: str, amount: int) -> None:
        with self._cond:
            self._stats[key] += amount

    def _path(self, digest: str) -> Path:
        return self.root / blob_member(digest)

    def _complete(self, blob: Layer | BundleBlob) -> bool:
        try:
            return self._path(blob.digest).stat().st_size == blob.size
        except OSError:
            return False

    # --- what the run will need ---------------------------------------------------------

    def want(self, manifests: Iterable[ModelManifest]) -> None:
        """Hosts will upload these: evicted only when nothing else makes room."""
        with self._cond:
            for manifest in manifests:
                self._wants.update(_digests(manifest))

    def unwant(self, manifest: ModelManifest) -> None:
        with self._cond:
            self._wants.subtract(_digests(manifest))
            self._wants += Counter()  # drop the zeros
            self._cond.notify_all()

    def cached(self, manifest: ModelManifest) -> bool:
        """Is every blob of the model complete in the cache (no download needed)?"""
        return all(self._complete(x) for x in _layers(manifest))

    # --- a model to upload --------------------------------------------------------------

    @contextlib.contextmanager
    def pinned(self, manifest: ModelManifest,
               reporter: Reporter | None = None) -> Iterator[CachedModel]:
        """Download what the cache lacks of the model, then hold its blobs while the
        caller uploads them from the store yielded. Raises BundleError (exit 1) when a
        download fails or the disk is too small, KeyboardInterrupt as it comes."""
        report = reporter or NullReporter()
        layers = _layers(manifest)
        self.open()
        for _attempt in range(3):
            held: list[str] = []  # this model's blobs, kept from eviction meanwhile
            try:
                self._download(manifest, layers, report, held)
                with contextlib.ExitStack() as pins:
                    handles = self._pin(layers, pins)
                    self._release(held)
                    if handles is not None:
                        yield CachedModel(self, manifest, handles)
                        return
            finally:
                self._release(held)
        raise BundleError(f"the blobs of {manifest.name.short} keep disappearing from "
                          f"{LABEL} at {self.root}: another run evicts them",
                          hint="give the runs a larger --cache-size, or run them one at a time")

    def _download(self, manifest: ModelManifest, layers: Sequence[Layer], report: Reporter,
                  held: list[str]) -> None:
        todo = [x for x in layers if not self._complete(x)]
        if todo:
            self._check_space(todo)
            report.handle(ModelStarted(manifest.name.short, sum(x.size for x in todo),
                                       DOWNLOADING))
        for layer in layers:
            self._ensure(manifest.name, layer, report)
            held.append(layer.digest)

    def _release(self, held: list[str]) -> None:
        if not held:
            return
        with self._cond:
            self._holds.subtract(held)
            self._holds += Counter()
            self._cond.notify_all()
        held.clear()

    def _pin(self, layers: Sequence[Layer], held: contextlib.ExitStack
             ) -> dict[str, BinaryIO] | None:
        """Pin every blob and share-lock it for other runs; None when one has gone."""
        handles: dict[str, BinaryIO] = {}
        with self._cond:
            for layer in layers:
                path = self._path(layer.digest)
                try:
                    handle = path.open("rb")
                except OSError:
                    return None  # evicted by another run meanwhile: fetch it again
                held.callback(handle.close)
                _lock(handle, shared=True)
                if os.fstat(handle.fileno()).st_size != layer.size:
                    return None
                handles[layer.digest] = handle
            self._pins.update(list(handles))
        held.callback(self._unpin, list(handles))
        for layer in layers:  # last use: what eviction goes by
            with contextlib.suppress(OSError):
                os.utime(self._path(layer.digest))
        return handles

    def _unpin(self, digests: list[str]) -> None:
        with self._cond:
            self._pins.subtract(digests)
            self._pins += Counter()
            self._cond.notify_all()

    # --- one blob -----------------------------------------------------------------------

    def _ensure(self, name: ModelName, layer: Layer, report: Reporter) -> None:
        """The blob complete in the cache and held for this model: downloaded once."""
        with self._cond:
            flight = self._flights.setdefault(layer.digest, threading.Lock())
        with flight:
            with self._cond:
                if self._complete(layer):
                    self._holds[layer.digest] += 1
                    if layer.digest not in self._served:
                        self._served.add(layer.digest)
                        self._stats["cached_bytes"] += layer.size
                    return
                if layer.digest in self._failed:  # told once; every host's model fails
                    raise self._failed[layer.digest]
                self._downloading.add(layer.digest)
            try:
                self._fetch(name, BundleBlob(layer.digest, layer.size), report)
            except BundleError as exc:
                with self._cond:
                    self._failed[layer.digest] = exc
                raise
            finally:
                with self._cond:
                    self._downloading.discard(layer.digest)
            with self._cond:
                self._holds[layer.digest] += 1
                self._served.add(layer.digest)

    def _fetch(self, name: ModelName, blob: BundleBlob, report: Reporter) -> None:
        final = self._path(blob.digest)
        partial = final.with_name(final.name + PARTIAL)
        short = name.short
        while True:
            handle = _open_partial(partial)
            try:
                if not _lock(handle, wait=False):
                    report.handle(Notice(short, f"waiting for another run to finish "
                                                f"downloading blob {blob.digest[7:19]}"))
                    _lock(handle)
                if self._complete(blob):  # that run finished it
                    if _same_file(handle, partial) and not os.fstat(handle.fileno()).st_size:
                        partial.unlink()  # the empty file this open made
                    return
                if not _same_file(handle, partial):
                    continue  # that run renamed it meanwhile: open the file there now
                kept = os.fstat(handle.fileno()).st_size
                if kept > blob.size:
                    handle.truncate(0)
                    kept = 0
                self._make_room(blob.size - kept, blob.digest)
                hasher = hash_from(handle, kept, None)
                handle.seek(kept)
                if kept:
                    self._count("resumed_bytes", kept)
                    report.handle(Resumed(short, blob.digest, kept, blob.size))
                sink = CacheSink(handle, blob, partial, final, kept, hasher)

                def progress(count: int, sink: CacheSink = sink, start: int = kept) -> None:
                    report.handle(BlobProgress(short, blob.digest, blob.size, sink.written,
                                               start))

                try:
                    fetched = self.source.copy(name, sink, progress,
                                               lambda text: report.handle(Notice(short, text)))
                except OSError as exc:
                    raise BundleError(f"cannot write {partial}: {exc.strerror or exc}",
                                      hint="free space there, or give --cache-dir another "
                                      "folder") from None
                finally:
                    self._count("registry_bytes", max(0, sink.written - kept))
                # copy counted what it fetched; a stream that re-sent bytes is a retry
                self._count("registry_bytes", max(0, fetched - (sink.written - kept)))
                self._count("registry_blobs", 1)
                sync_dir(final.parent)
                return
            finally:
                handle.close()

    def _check_space(self, layers: Sequence[Layer]) -> None:
        need = 0
        for layer in layers:
            partial = self._path(layer.digest).with_name(
                self._path(layer.digest).name + PARTIAL)
            try:
                have = partial.stat().st_size
            except OSError:
                have = 0
            need += max(0, layer.size - have)
        check_free_space(self.root, need, f"{LABEL} needs {{need}} for what it downloads",
                         "free space there, or give --cache-dir another folder")

    # --- room ---------------------------------------------------------------------------

    def _make_room(self, need: int, digest: str) -> None:
        """Evict until `need` more bytes fit the budget: blobs nobody uses now, least
        recently used first, those this run still wants last; while others' uploads
        hold what would make room, wait for them. Past that, the blob passes through."""
        with self._cond:
            while True:
                fits, waiting = self._evict(need, keep=frozenset({digest}))
                if fits or not waiting:
                    break
                self._cond.wait(_WAIT)
            if not fits:
                self._passed.add(digest)

    def _evict(self, need: int, *, keep: frozenset[str] = frozenset()) -> tuple[bool, bool]:
        """(it fits now, worth waiting for others' uploads). Called under the condition."""
        files = _files(self.blobs)
        used = sum(size for _, size, _ in files)
        if used + need <= self.budget:
            return True, False
        busy = set(self._pins) | set(self._holds) | self._downloading | keep
        candidates = [(path, size, mtime) for path, size, mtime in files
                      if _digest_of(path) not in busy]
        wanted = [c for c in candidates if _digest_of(c[0]) in self._wants]
        unwanted = [c for c in candidates if _digest_of(c[0]) not in self._wants]
        order = sorted(unwanted, key=lambda c: (c[0].name.endswith(PARTIAL), c[2]))
        used = self._remove(order, used, need)
        if used + need <= self.budget:
            return True, False
        others_upload = any(d not in keep for d in self._pins)
        if others_upload:
            return False, True  # their uploads end: then what they hold may go
        used = self._remove(sorted(wanted, key=lambda c: c[2]), used, need)
        return used + need <= self.budget, False

    def _remove(self, candidates: list[tuple[Path, int, float]], used: int, need: int) -> int:
        if not candidates:
            return used
        with _cache_lock(self.root / "lock"):
            for path, size, _ in candidates:
                if used + need <= self.budget:
                    break
                if _remove_unused(path):
                    used -= size
                    self._stats["evicted_bytes"] += size
        return used

    def close(self, *, interrupted: bool = False) -> int:
        """Bring the cache within its budget (nothing is in use any more); the bytes
        freed. After an interrupt, keep everything for the next run."""
        if interrupted or not self._opened:
            return 0
        with self._cond:
            before = self._stats["evicted_bytes"]
            for digest in self._passed:
                path = self._path(digest)
                with contextlib.suppress(OSError):
                    size = path.stat().st_size
                    if _remove_unused(path):
                        self._stats["evicted_bytes"] += size
            self._evict(0)
            return self._stats["evicted_bytes"] - before

    def corrupt(self, blob: BundleBlob) -> BundleError:
        """A cached blob no longer matches its digest (the disk): it is removed, and the
        next run downloads it again."""
        with contextlib.suppress(OSError):
            self._path(blob.digest).unlink()
        return BundleError(
            f"blob {blob.digest[7:19]} in {LABEL} at {self.root} does not match its sha256 "
            "digest (a disk error?): removed", hint="run the same command again: it is "
            "downloaded again")


class CachedModel:
    """One model's blobs in the cache, pinned: the `ModelStore` a host uploads from."""

    label = LABEL

    def __init__(self, cache: SeedCache, manifest: ModelManifest,
                 handles: Mapping[str, BinaryIO]) -> None:
        self.cache = cache
        self._manifest = manifest
        self._handles = handles
        self._model = BundleModel(name=manifest.name, manifest_digest=sha256_digest(
            manifest.raw), manifest_size=len(manifest.raw))

    def select(self, names: Iterable[ModelName]) -> list[BundleModel]:
        wanted = list(names)
        missing = [n.short for n in wanted if n.key != self._model.name.key]
        if missing:
            raise BundleError(f"{LABEL} holds no model {', '.join(missing)} for this upload "
                              f"(it holds {self._model.name.short})", exit_code=EXIT_USAGE)
        return [self._model]

    def check(self) -> None:
        pass  # every blob was checked when it was written, and is again while it streams

    def manifest(self, model: BundleModel) -> ModelManifest:
        return self._manifest

    def blob(self, digest: str) -> BundleBlob | None:
        for layer in _layers(self._manifest):
            if layer.digest == digest:
                return BundleBlob(layer.digest, layer.size)
        return None

    def _read(self, blob: BundleBlob, start: int, length: int) -> bytes:
        handle = self._handles[blob.digest]  # this host's own: one thread reads it
        try:
            handle.seek(start)
            return handle.read(length)
        except OSError as exc:
            raise BundleError(f"cannot read {self.cache._path(blob.digest)}: "
                              f"{exc.strerror or exc}") from None

    def read_range(self, blob: BundleBlob, start: int, length: int) -> bytes:
        return self._read(blob, start, max(0, min(length, blob.size - start)))

    def read_blob(self, blob: BundleBlob, limit: int = MAX_SMALL_LAYER) -> bytes:
        if blob.size > limit:
            raise BundleError(f"blob {blob.digest[7:19]} is {blob.size:,} bytes, more than "
                              f"the {limit:,} a layer of its kind may have")
        data = self._read(blob, 0, blob.size)
        if len(data) != blob.size or sha256_digest(data) != blob.digest:
            raise self.cache.corrupt(blob)
        return data

    def stream_blob(self, blob: BundleBlob, *, chunk: int = CHUNK) -> Iterator[bytes]:
        """The blob in chunks, hashed; the last chunk only once the digest matched."""
        digest = hashlib.sha256()
        offset, held = 0, b""
        while offset < blob.size:
            data = self._read(blob, offset, min(chunk, blob.size - offset))
            if not data:
                raise self.cache.corrupt(blob)
            digest.update(data)
            offset += len(data)
            if held:
                yield held
            held = data
        if f"sha256:{digest.hexdigest()}" != blob.digest:
            raise self.cache.corrupt(blob)
        if held:
            yield held


# --- files --------------------------------------------------------------------------------


def _layers(manifest: ModelManifest) -> list[Layer]:
    """The model's blobs, each once, config first."""
    seen: dict[str, Layer] = {}
    for layer in (manifest.config, *manifest.layers):
        seen.setdefault(layer.digest, layer)
    return list(seen.values())


def _digests(manifest: ModelManifest) -> list[str]:
    return [x.digest for x in _layers(manifest)]


def _digest_of(path: Path) -> str:
    return path.name.removesuffix(PARTIAL).replace("-", ":", 1)


def _files(folder: Path) -> list[tuple[Path, int, float]]:
    """(path, size, mtime) of the blob files, complete and partial."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith("sha256-"):
            continue
        with contextlib.suppress(OSError):
            info = entry.stat()
            found.append((Path(entry.path), info.st_size, info.st_mtime))
    return found


def _remove_unused(path: Path) -> bool:
    """Delete a blob file no other run holds (a share lock: an upload; an exclusive
    one: a download)."""
    try:
        with path.open("rb") as handle:
            if not _lock(handle, wait=False):
                return False
            path.unlink()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _cache_lock(path: Path) -> Iterator[None]:
    """The whole cache's lock: one run evicts at a time."""
    try:
        handle = path.open("a+b")
    except OSError:
        yield  # cannot lock: evictions still skip locked blobs
        return
    with handle:
        _lock(handle)
        yield


def _open_partial(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    return os.fdopen(fd, "r+b")


def _same_file(handle: BinaryIO, path: Path) -> bool:
    try:
        here, there = os.fstat(handle.fileno()), path.stat()
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


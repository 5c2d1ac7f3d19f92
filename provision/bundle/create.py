"""`bundle create`: named models, from a source, into one bundle file.

Manifests first (so the index, and with it the whole layout, is known before any blob
is fetched), then every blob once, streamed into `FILE.partial`, checked, and the file
renamed into place. A run that stops (Ctrl-C, a failure) leaves `FILE.partial`; the same
command continues it. An existing FILE with the same index is left alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from provision.bundle.format import (
    BundleBlob,
    BundleError,
    BundleIndex,
    build_index,
    manifest_member,
)
from provision.bundle.reader import BundleReader
from provision.bundle.recipe import check_recreatable
from provision.bundle.sources import Source
from provision.bundle.writer import ArchiveSink, BundleWriter, Resumed, check_free_space
from provision.errors import EXIT_NOT_READY, EXIT_USAGE, ProvisionError
from provision.models.pull import (
    DOWNLOADING,
    BlobProgress,
    ModelFinished,
    ModelStarted,
    Notice,
    NullReporter,
    Reporter,
    StatusChanged,
)
from provision.models.pull import Resumed as ResumedBlob
from provision.models.registry import ModelManifest
from provision.names import ModelName
from provision.output import human_bytes
from provision.result import Status


class BundleStatus(Status):
    """What `bundle create` did to the file (stable: part of the `--json` schema)."""

    CREATED = "created"
    UNCHANGED = "unchanged"  # it held these models already


@dataclass(frozen=True)
class CreateResult:
    path: Path
    status: BundleStatus
    index: BundleIndex
    size: int  # bytes of the bundle file
    fetched: int  # bytes this run took from the source
    kept: int  # blob bytes an interrupted run had written and this one kept
    duration: float


def create_bundle(names: list[ModelName], source: Source, path: Path, *,
                  force: bool = False, reporter: Reporter | None = None) -> CreateResult:
    """Bundle `names` from `source` into `path`. Raises BundleError / ProvisionError on a
    failure (the partial file stays for the next run) and KeyboardInterrupt on Ctrl-C."""
    report = reporter or NullReporter()
    started = time.monotonic()
    path = Path(path)
    if not path.parent.is_dir():
        raise ProvisionError(f"cannot write {path}: {path.parent} is not a directory",
                             exit_code=EXIT_USAGE)
    manifests = _manifests(names, source, report)
    index = build_index((m.name, m.raw, [(x.digest, x.size) for x in (m.config, *m.layers)])
                        for m in manifests)
    writer = BundleWriter(path, index, {manifest_member(m.name): m.raw for m in manifests})
    if _same_bundle(path, index, force=force):
        return CreateResult(path=path, status=BundleStatus.UNCHANGED, index=index, size=writer.size,
                            fetched=0, kept=0, duration=time.monotonic() - started)
    _check_disk(path, writer)
    owners = _first_users(index, manifests)
    try:
        resumed = writer.start()
        fetched = 0
        sizes = {m.name.key: m.total_size for m in manifests}
        for model in index.models:
            began = time.monotonic()
            moved = _fetch_model(model.name, index, owners, resumed, writer, source, report)
            fetched += moved
            report.handle(ModelFinished(
                model.name.short, True, f"bundled ({human_bytes(sizes[model.name.key])})",
                moved=moved, duration=time.monotonic() - began, shown_whole=moved > 0))
        report.handle(StatusChanged("", f"writing {path.name}", slow=True))
        writer.finish()
    except OSError as exc:  # the disk filled up, the folder is read-only, ...
        raise ProvisionError(f"cannot write {writer.partial}: {exc.strerror or exc}",
                             exit_code=EXIT_NOT_READY,
                             hint="run the same command again once that is fixed: it "
                             "continues where it stopped") from None
    finally:
        writer.close()
    return CreateResult(path=path, status=BundleStatus.CREATED, index=index, size=writer.size,
                        fetched=fetched, kept=resumed.bytes_kept,
                        duration=time.monotonic() - started)


def _fetch_model(name: ModelName, index: BundleIndex, owners: dict[str, ModelName],
                 resumed: Resumed, writer: BundleWriter, source: Source,
                 report: Reporter) -> int:
    """Fetch the blobs this model is the first to use; the bytes fetched."""
    short = name.short
    todo = [b for b in index.blobs
            if owners[b.digest].key == name.key and b.digest not in resumed.complete]
    kept = resumed.partial[1] if resumed.partial and any(
        b.digest == resumed.partial[0] for b in todo) else 0
    report.handle(ModelStarted(short, sum(b.size for b in todo), DOWNLOADING))
    if kept and resumed.partial:
        blob_size = next(b.size for b in todo if b.digest == resumed.partial[0])
        report.handle(ResumedBlob(short, resumed.partial[0], kept, blob_size))
    fetched = 0
    for blob in todo:
        sink = writer.sink(blob)
        first = sink.written

        def progress(count: int, blob: BundleBlob = blob, sink: ArchiveSink = sink,
                     first: int = first) -> None:
            report.handle(BlobProgress(short, blob.digest, blob.size, sink.written, first))

        fetched += source.copy(name, sink, progress, lambda text: report.handle(
            Notice(short, text)))
    return fetched


def _manifests(names: list[ModelName], source: Source, report: Reporter) -> list[ModelManifest]:
    manifests = []
    for name in names:
        report.handle(StatusChanged(name.short, f"reading the manifest from {source.label}"))
        manifest = source.manifest(name)
        problem = check_recreatable(manifest)
        if problem:
            raise BundleError(f"{name.short} cannot be bundled: {problem}",
                              exit_code=EXIT_NOT_READY)
        manifests.append(manifest)
    return manifests


def _same_bundle(path: Path, index: BundleIndex, *, force: bool) -> bool:
    """True when `path` is already this bundle; an error when it is something else."""
    if not path.exists():
        return False
    try:
        existing = BundleReader(path)
        same = existing.index == index and existing.file_size == existing.expected_size
    except BundleError:
        same = False
    if same:
        return True
    if not force:
        raise ProvisionError(f"{path} exists and is not this bundle (other models or "
                             "versions)", exit_code=EXIT_USAGE,
                             hint="--force replaces it, or choose another file with -o")
    return False


def _check_disk(path: Path, writer: BundleWriter) -> None:
    have = writer.partial.stat().st_size if writer.partial.exists() else 0
    check_free_space(path.parent, writer.size - have, "the bundle needs {need} more",
                     "free space there, or write the bundle elsewhere with -o")


def _first_users(index: BundleIndex, manifests: list[ModelManifest]) -> dict[str, ModelName]:
    """The model each blob is fetched for (a registry serves blobs per repository)."""
    by_key = {m.name.key: m for m in manifests}
    owners: dict[str, ModelName] = {}
    for model in index.models:
        manifest = by_key[model.name.key]
        for layer in (manifest.config, *manifest.layers):
            owners.setdefault(layer.digest, manifest.name)
    return owners



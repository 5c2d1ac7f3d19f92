"""Where a bundle's models come from: the registry, or a local server's models folder.

Both give a model's manifest (the exact bytes: a bundle keeps them so that a server
provisioned from it lists the same manifest digest as one that pulled) and copy a blob
into a `BlobSink` from wherever the sink stopped. The registry is read with HTTP Range,
so a dropped connection or an interrupted run continues instead of starting over.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Protocol

import httpx

from provision.bundle.format import MAX_MANIFEST_BYTES, BundleError, manifest_member
from provision.bundle.store import CHUNK
from provision.bundle.transfer import Pace, TooSlow, TransferOptions
from provision.bundle.writer import BlobDigestMismatch, BlobSink
from provision.errors import EXIT_USAGE
from provision.models.registry import (
    ModelManifest,
    RegistryClient,
    RegistryError,
    parse_manifest,
    registry_base_url,
)
from provision.names import ModelName
from provision.server import OllamaServer, ServerError

Progress = Callable[[int], None]  # bytes just moved
Say = Callable[[str], None]  # a notice: a retry, a resume


class Source(Protocol):
    label: str  # for messages: "the registry https://...", "the server at http://..."

    def manifest(self, name: ModelName) -> ModelManifest: ...

    def copy(self, name: ModelName, sink: BlobSink, progress: Progress, say: Say) -> int:
        """Fill the sink from where it stopped, check it; the bytes fetched."""
        ...

    def close(self) -> None: ...


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class _Retryable(Exception):
    pass


class RegistrySource:
    """Manifests and blobs straight from the registry (`--insecure`,
    `OLLAMA_PROVISION_REGISTRY` and Bearer tokens as for `pull`)."""

    def __init__(self, registry: RegistryClient, options: TransferOptions | None = None,
                 *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.registry = registry
        self.options = options or TransferOptions()
        self.sleep = sleep
        self.label = "the registry"

    def manifest(self, name: ModelName) -> ModelManifest:
        return self.registry.manifest(name)

    def close(self) -> None:
        self.registry.close()

    def copy(self, name: ModelName, sink: BlobSink, progress: Progress, say: Say) -> int:
        base = registry_base_url(name, insecure=self.registry.insecure,
                                 environ=self.registry.environ)
        fetched = 0
        failures = 0
        while True:
            try:
                fetched += self._attempt(name, sink, progress)
                sink.finish()
                return fetched
            except BlobDigestMismatch:
                sink.restart()
                why = "the download did not match its digest"
            except TooSlow as exc:
                why = f"the download was {exc}"
            except (_Retryable, RegistryError) as exc:
                why = str(exc)
            except httpx.HTTPError as exc:
                why = f"the connection failed ({type(exc).__name__})"
            failures += 1
            if failures > self.options.retries:
                raise BundleError(
                    f"cannot download blob {_short(sink.blob.digest)} of {name.short} from "
                    f"{base}: {why} ({self.options.retries} retries)",
                    hint="run the same command again: it continues where it stopped")
            delay = self.options.delay(failures)
            say(f"{why}; retry {failures}/{self.options.retries} in {delay:.2g}s")
            self.sleep(delay)
            if sink.written:
                say(f"resuming blob {_short(sink.blob.digest)} at "
                    f"{sink.written:,}/{sink.blob.size:,} bytes")

    def _attempt(self, name: ModelName, sink: BlobSink, progress: Progress) -> int:
        blob = sink.blob
        start = sink.written
        with self.registry.stream_blob(name, blob.digest, start=start) as response:
            status = response.status_code
            skip = 0
            if status == 206:
                if not response.headers.get("content-range", "").startswith(f"bytes {start}-"):
                    raise _Retryable("the registry answered another range than asked")
            elif status == 200:
                skip = start  # Range ignored: the whole blob comes again
            elif status == 416 and start:
                sink.restart()
                raise _Retryable("the registry refused to resume the blob")
            elif status in (404, 401, 403):
                raise BundleError(
                    f"the registry answered HTTP {status} for blob {_short(blob.digest)} of "
                    f"{name.short}: it lists the blob in the manifest but does not serve it")
            else:
                raise _Retryable(f"the registry answered HTTP {status}")
            pace = Pace(sink.remaining + skip, self.options.limit_rate)
            fetched = 0
            for chunk in response.iter_raw(CHUNK):
                self.registry.bytes_read += len(chunk)
                fetched += len(chunk)
                if skip:
                    dropped = min(skip, len(chunk))
                    skip -= dropped
                    chunk = chunk[dropped:]
                    if not chunk:
                        continue
                sink.write(chunk)
                progress(len(chunk))
                pace.moved_bytes(len(chunk))
        if sink.remaining:
            raise _Retryable("the registry's stream ended early")
        return fetched


class ServerSource:
    """Models a server on this machine has: read from its models folder, which the
    server itself names (the weights path in `/api/show`'s modelfile)."""

    def __init__(self, server: OllamaServer, options: TransferOptions | None = None) -> None:
        self.server = server
        self.options = options or TransferOptions()
        self.label = f"the server at {server.url}"
        self._folders: dict[tuple[str, str, str, str], Path] = {}

    def close(self) -> None:
        self.server.close()

    def manifest(self, name: ModelName) -> ModelManifest:
        installed = self.server.tags().find(name)
        if installed is None:
            raise BundleError(f"{self.label} has no model {name.short}",
                              hint="`ollama list` there shows what it has", exit_code=EXIT_USAGE)
        try:
            show, error = self.server.show(installed.name), None
        except ServerError as exc:
            show, error = None, exc.reason
        weights_file = show.weights_file if show is not None else None
        if weights_file is None or show is None or show.weights is None:
            raise BundleError(f"{self.label} shows no weights file for {name.short} "
                              f"({error or 'a model without local weights, such as a cloud one'})")
        folder = Path(weights_file).parent.parent
        if not (folder / "blobs").is_dir():
            raise BundleError(
                f"{self.label} keeps {name.short} in {folder}, which is not on this machine",
                hint="--from-server reads the models folder directly: run this where the "
                "server runs, or bundle from the registry", exit_code=EXIT_USAGE)
        raw = _read_manifest(folder, installed.name)
        manifest = parse_manifest(installed.name, raw)
        weights = manifest.weights if manifest is not None else None
        if weights is None or weights.digest != show.weights:
            raise BundleError(f"the manifest of {name.short} in {folder} does not name the "
                              "weights the server uses: the models folder changed meanwhile?")
        self._folders[installed.name.key] = folder
        return manifest

    def copy(self, name: ModelName, sink: BlobSink, progress: Progress, say: Say) -> int:
        folder = self._folders[name.key]
        path = folder / "blobs" / sink.blob.digest.replace(":", "-", 1)
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, 2)
                if size != sink.blob.size:
                    raise BundleError(f"{path} is {size:,} bytes where its manifest says "
                                      f"{sink.blob.size:,}: the models folder is damaged",
                                      hint=f"pull {name.short} again on that server")
                handle.seek(sink.written)
                pace = Pace(sink.remaining, self.options.limit_rate)
                copied = 0
                while sink.remaining:
                    data = handle.read(min(CHUNK, sink.remaining))
                    if not data:
                        break
                    sink.write(data)
                    copied += len(data)
                    progress(len(data))
                    pace.moved_bytes(len(data))
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
        except TooSlow as exc:
            raise BundleError(f"reading {path} was {exc}") from None
        try:
            sink.finish()
        except BlobDigestMismatch:
            raise BundleError(f"{path} does not match its digest: the models folder is "
                              "damaged", hint=f"pull {name.short} again on that server") from None
        return copied


def _read_manifest(folder: Path, name: ModelName) -> bytes:
    """The manifest file; names compare case-insensitively, as Ollama's do."""
    path = folder / manifest_member(name)
    if not path.is_file():
        path = _find_ignoring_case(folder / "manifests",
                                   (name.host, name.namespace, name.model, name.tag))
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"cannot read the manifest of {name.short} in {folder}: "
                          f"{exc.strerror or exc}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"the manifest of {name.short} in {folder} is too large to be one")
    return raw


def _find_ignoring_case(folder: Path, parts: tuple[str, ...]) -> Path:
    current = folder
    for part in parts:
        try:
            match = next((p for p in current.iterdir() if p.name.lower() == part.lower()), None)
        except OSError:
            match = None
        if match is None:
            return folder.joinpath(*parts)  # missing: the read reports it
        current = match
    return current

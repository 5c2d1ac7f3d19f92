"""`/api/pull` and `/api/push`: the progress stream as Ollama's `server/download.go`
writes it, downloads shared between pulls of one blob, resumable partial blobs, and
the faults that fire at a byte position."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from tests.double.blobs import MT_MODEL, Blob
from tests.double.catalog import Artifacts, CatalogModel
from tests.double.faults import DEFAULT_GARBAGE, DEFAULT_PULL_ERROR, POSITIONAL_KINDS, Fault
from tests.double.names import ModelName
from tests.double.registry import RegistryStore
from tests.double.state import Download, Event, Installed
from tests.double.store import BLOBS_DIR
from tests.double.transport import BaseHandler, Stopping
from tests.double.wire import sha256_hex


class PullRoutes(BaseHandler):
    """`/api/pull` and `/api/push`."""

    def api_pull(self) -> None:
        req = self._json()
        _, name = self._request_name(req)
        self._stream_or_single(self.d._pull_events(name, self.rec.path), req)

    def api_push(self) -> None:
        d = self.d
        req = self._json()
        _, name = self._request_name(req)
        inst = d._get_installed(name)

        def events() -> Iterator[Event]:
            yield {"status": "retrieving manifest"}
            if inst is None:
                yield {"status": "couldn't retrieve manifest"}
                yield {"error": f"open {BLOBS_DIR[:-6]}/manifests/{name.host}/{name.namespace}/"
                                f"{name.model}/{name.tag}: no such file or directory"}
                return
            assert inst.layers is not None and inst.config is not None
            for b in [*inst.layers, inst.config]:
                yield {"status": f"pushing {b.hex[:12]}", "digest": b.digest, "total": b.size,
                       "completed": b.size}
            yield {"status": "pushing manifest"}
            yield {"status": "success"}

        self._stream_or_single(events(), req)


class PullEngine(RegistryStore):
    """A pull as events: the manifest, each blob downloading at `download_rate`, verify,
    write, prune; the faults that fire at a byte position."""

    def _unreachable(self, name: ModelName) -> str:
        hostname = name.host.split(":")[0] if not name.host.startswith("[") else name.host
        return (f'pull model manifest: Get "https://{name.host}/v2/{name.namespace}/{name.model}'
                f'/manifests/{name.tag}": dial tcp: lookup {hostname}: no such host')

    def _pull_events(self, name: ModelName, path: str) -> Iterator[Event]:
        yield {"status": "pulling manifest"}
        for f in self._matching_faults(("registry_unreachable",), path, name):
            if self._consume(f):
                yield {"error": f.message or self._unreachable(name)}
                return
        for f in self._matching_faults(("garbage",), path, name):
            if f.after_bytes is None and self._consume(f):
                yield ("garbage", f.message or DEFAULT_GARBAGE)
        with self._lock:
            model = self._catalog.get(name.key)
            revision = self._revisions.get(model.key, 0) if model else 0
        if model is None:
            yield {"error": "pull model manifest: file does not exist"}
            return
        arts = model.artifacts(revision)
        self._index(arts)
        self._materialize_all()
        downloaded: list[Blob] = []
        for blob in [*arts.layers, arts.config]:
            result = yield from self._pull_blob(blob, name, path)
            if result is None:
                return
            if result:
                downloaded.append(blob)
        yield {"status": "verifying sha256 digest"}
        for f in self._matching_faults(("error_line",), path, name):
            if not f.is_digest_mismatch():
                continue
            targets = [b for b in downloaded if f.blob and f.matches_blob(b.digest)] or (
                [] if f.blob else [b for b in downloaded if b.media_type == MT_MODEL])
            if targets and self._consume(f):
                bad = targets[0]
                with self._lock:
                    self._present.discard(bad.digest)
                    self._local.pop(bad.digest, None)
                    self.partial.pop(bad.digest, None)
                message = f.message or "digest mismatch"
                if message.strip() == "digest mismatch":
                    got = sha256_hex(f"corrupt {bad.digest}".encode())
                    message = (f"digest mismatch, file must be downloaded again: want "
                               f"{bad.digest}, got sha256:{got}")
                yield {"error": self._fmt(message, bad, name)}
                return
        yield {"status": "writing manifest"}
        removed = self._install_artifacts(name, model, revision, arts)
        if removed:
            yield {"status": "removing unused layers"}
        yield {"status": "success"}

    def _install_artifacts(self, name: ModelName, model: CatalogModel, revision: int,
                           arts: Artifacts) -> bool:
        with self._lock:
            old = self._models.get(name.key)
            display = old.name if old else name
            self._models[name.key] = Installed(
                name=display, source=model, revision=revision, modified_ns=time.time_ns(),
                layers=list(arts.layers), config=arts.config, manifest=arts.manifest,
                digest=arts.digest)
            for blob in [*arts.layers, arts.config]:
                self._present.add(blob.digest)
                self._local[blob.digest] = blob
            if old is None or old.layers is None:
                return False
            old_digests = {b.digest for b in old.layers} | ({old.config.digest} if old.config
                                                            else set())
            stale = old_digests - set(arts.blobs)
            if stale:
                self._loaded.pop(name.key, None)
                self._prune(stale)
            return bool(stale)

    def _fmt(self, message: str, blob: Blob, name: ModelName) -> str:
        return (message.replace("{hex}", blob.hex).replace("{digest}", blob.digest)
                .replace("{model}", name.short))

    def _position_faults(self, path: str, name: ModelName, blob: Blob,
                         fired: set[int]) -> list[tuple[Fault, int]]:
        out = []
        for f in self._matching_faults(POSITIONAL_KINDS, path, name):
            if id(f) in fired or f.is_digest_mismatch():
                continue
            if f.kind == "garbage" and f.after_bytes is None:
                continue
            if not f.matches_blob(blob.digest):
                continue
            if f.kind == "backwards":
                back = f.after_bytes or blob.size // 4
                point = max(back, blob.size // 2)
            else:
                point = f.after_bytes or 0
            if not f.blob and point and blob.size <= point:
                continue
            out.append((f, point))
        return out

    def _advance(self, dl: Download, limit: float) -> None:
        now = time.monotonic()
        if dl.hold:
            dl.last = now
            return
        if self.download_rate is None:
            dl.completed = max(dl.completed, limit)
        else:
            dl.completed = min(limit, dl.completed + self.download_rate * (now - dl.last))
        dl.last = now
        if dl.completed < dl.total:
            self.partial[dl.digest] = int(dl.completed)

    def _pull_blob(self, blob: Blob, name: ModelName,
                   path: str) -> Iterator[Event]:  # returns True/False/None via StopIteration
        digest, total = blob.digest, blob.size
        status = f"pulling {blob.hex[:12]}"

        def line(completed: int) -> dict[str, Any]:
            obj: dict[str, Any] = {"status": status, "digest": digest, "total": total}
            if completed:
                obj["completed"] = completed
            return obj

        with self._lock:
            present = digest in self._present
        if present:
            for _ in range(max(1, self.cached_lines)):
                yield line(total)
            return False
        with self._lock:
            dl = self._downloads.get(digest)
            if dl is None:
                dl = self._downloads[digest] = Download(digest, total,
                                                         float(self.partial.get(digest, 0)))
            if dl.refs == 0:
                dl.last = time.monotonic()
            dl.refs += 1
        fired: set[int] = set()
        # 0.30+ reports a download only on its 60 ms tick, and not once it has finished:
        # a blob that arrives between two ticks has no line at all (a real 0.32.15).
        ticked = self.llama_server
        try:
            if not ticked:
                yield line(int(dl.completed))
            while True:
                for f, point in self._position_faults(path, name, blob, fired):
                    if dl.completed < point or not self._consume(f):
                        continue
                    fired.add(id(f))
                    if f.kind == "backwards":
                        back = f.after_bytes or total // 4
                        with self._lock:
                            dl.completed = max(0.0, dl.completed - back)
                            self.partial[digest] = int(dl.completed)
                        yield line(int(dl.completed))
                    elif f.kind == "garbage":
                        yield ("garbage", f.message or DEFAULT_GARBAGE)
                    elif f.kind == "stall":
                        with self._lock:
                            dl.hold += 1
                        try:
                            yield ("stall", f.seconds)
                        finally:
                            with self._lock:
                                dl.hold -= 1
                                dl.last = time.monotonic()
                    elif f.kind == "stuck":
                        # --- added for the pull tests (issue 3): a stuck download as real
                        # Ollama shows it, the same numbers every tick, no silence.
                        until = None if f.seconds is None else time.monotonic() + f.seconds
                        with self._lock:
                            dl.hold += 1
                        try:
                            while until is None or time.monotonic() < until:
                                if self._stopping.wait(self.tick):
                                    raise Stopping()
                                yield line(int(dl.completed))
                        finally:
                            with self._lock:
                                dl.hold -= 1
                                dl.last = time.monotonic()
                        # --- end of the addition
                    elif f.kind == "error_line":
                        yield {"error": self._fmt(f.message or DEFAULT_PULL_ERROR, blob, name)}
                        return None
                    elif f.kind == "drop":
                        yield ("drop",)
                        return None
                if dl.completed >= total:
                    break
                if self.download_rate is not None and self._stopping.wait(self.tick):
                    raise Stopping()
                points = [p for _, p in self._position_faults(path, name, blob, fired)
                          if p > dl.completed]
                with self._lock:
                    self._advance(dl, min([total, *points]))
                if not ticked or dl.completed < total:
                    yield line(int(dl.completed))
        finally:
            with self._lock:
                dl.refs -= 1
                if dl.completed >= total:
                    self._present.add(digest)
                    self._local[digest] = blob
                    self.partial.pop(digest, None)
                    self._downloads.pop(digest, None)
                else:
                    self.partial[digest] = int(dl.completed)
                    if dl.refs <= 0:
                        self._downloads.pop(digest, None)
        return True

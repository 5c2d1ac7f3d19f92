"""`/api/create` (from an installed or pullable model, with template, system,
parameters, licence), `/api/copy`, `/api/delete`, `/api/blobs`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from tests.double.blobs import (
    MT_LICENSE,
    MT_PARAMS,
    MT_SYSTEM,
    MT_TEMPLATE,
    Blob,
    BytesBlob,
    make_config_blob,
    manifest_bytes,
)
from tests.double.faults import DEFAULT_GARBAGE
from tests.double.names import InvalidName, ModelName, parse_name
from tests.double.pull import PullEngine
from tests.double.state import Event, Installed
from tests.double.transport import ApiError, BaseHandler
from tests.double.wire import go_json, sha256_hex


class ModelRoutes(BaseHandler):
    """`/api/create`, `/api/delete`, `/api/copy`, `/api/blobs/<digest>`."""

    def api_create(self) -> None:
        req = self._json()
        _, name = self._request_name(req)
        if not req.get("from") and not req.get("files"):
            raise ApiError(400, "neither 'from' or 'files' was specified")
        if req.get("files") and not req.get("from"):
            raise ApiError(400, "creating from 'files' is not supported by the test double")
        self._stream_or_single(self.d._create_events(name, req, self.rec.path), req)

    def api_delete(self) -> None:
        req = self._json()
        raw, name = self._request_name(req)
        if not self.d.remove(name.full):
            raise ApiError(404, f"model '{raw}' not found")
        self.send_bytes(200, b"", None)

    def api_copy(self) -> None:
        d = self.d
        req = self._json()
        source, dest = req.get("source") or "", req.get("destination") or ""
        src_name, dst_name = self._valid_name(source), self._valid_name(dest)
        if not d._copy(src_name, dst_name):
            raise ApiError(404, f"model {json.dumps(source)} not found")
        self.send_bytes(200, b"", None)

    def api_blobs(self, method: str, digest: str, body: bytes) -> None:
        d = self.d
        if method == "HEAD":
            self.send_bytes(200 if d._has_blob(digest) else 404, b"", None)
            return
        if "sha256:" + sha256_hex(body) != digest:
            raise ApiError(400, "digest mismatch")
        d._store_blob(BytesBlob(body, "application/octet-stream"))
        self.send_bytes(201, b"", None)


class CreateEngine(PullEngine):
    """A create as events (pulling the base first when it is missing), and copies."""

    def _create_events(self, name: ModelName, req: dict[str, Any], path: str) -> Iterator[Event]:
        raw_from = str(req.get("from") or "")
        try:
            from_name = parse_name(raw_from)
        except InvalidName:
            yield {"error": "invalid model name"}
            return
        base = self._get_installed(from_name)
        if base is None:
            with self._lock:
                pullable = from_name.key in self._catalog
            if not pullable:
                yield {"status": "pulling manifest"}
                yield {"error": "pull model manifest: file does not exist"}
                return
            for ev in self._pull_events(from_name, path):
                if isinstance(ev, dict) and ev.get("status") == "success":
                    continue
                yield ev
                if isinstance(ev, dict) and "error" in ev:
                    return
            base = self._get_installed(from_name)
            assert base is not None
        assert base.layers is not None
        layers = list(base.layers)
        new_blobs: list[Blob] = []

        def replace(media_type: str, texts: list[str]) -> None:
            nonlocal layers
            layers = [b for b in layers if b.media_type != media_type]
            for text in texts:
                blob = BytesBlob(text.encode(), media_type)
                layers.append(blob)
                new_blobs.append(blob)

        if req.get("template") is not None:
            replace(MT_TEMPLATE, [str(req["template"])] if req["template"] else [])
        if req.get("system") is not None:
            replace(MT_SYSTEM, [str(req["system"])] if req["system"] else [])
        if req.get("license") is not None:
            lic = req["license"]
            replace(MT_LICENSE, [str(x) for x in lic] if isinstance(lic, list) else [str(lic)])
        if req.get("parameters") or any(b.media_type == MT_PARAMS for b in layers):
            # Ollama merges and writes the parameters again, after the other layers.
            params = base.params()
            params.update(req.get("parameters") or {})
            replace(MT_PARAMS, [go_json(params) + "\n"])
        faults = self._matching_faults(("error_line", "garbage"), path, name)
        first = True
        for blob in layers:
            with self._lock:
                exists = blob.digest in self._present
            verb = "using existing layer" if exists else "creating new layer"
            yield {"status": f"{verb} {blob.digest}"}
            if first:
                first = False
                for f in faults:
                    if self._consume(f):
                        if f.kind == "garbage":
                            yield ("garbage", f.message or DEFAULT_GARBAGE)
                        else:
                            yield {"error": f.message or "create failed"}
                            return
        config = make_config_blob(base.source, layers)
        manifest = manifest_bytes(config, layers)
        yield {"status": "writing manifest"}
        with self._lock:
            for blob in [*new_blobs, config]:
                self._present.add(blob.digest)
                self._local[blob.digest] = blob
            old = self._models.get(name.key)
            self._models[name.key] = Installed(
                name=name, source=base.source, revision=base.revision,
                modified_ns=time.time_ns(), layers=layers, config=config, manifest=manifest,
                digest=sha256_hex(manifest), parent=base.name.short)
            if old is not None and old.layers is not None:
                self._loaded.pop(name.key, None)
                self._prune({b.digest for b in old.layers} - {b.digest for b in layers})
        yield {"status": "success"}

    def _copy(self, src: ModelName, dst: ModelName) -> bool:
        inst = self._get_installed(src)
        if inst is None:
            return False
        with self._lock:
            self._models[dst.key] = Installed(
                name=dst, source=inst.source, revision=inst.revision,
                modified_ns=time.time_ns(), layers=list(inst.layers or []), config=inst.config,
                manifest=inst.manifest, digest=inst.digest, parent=inst.parent)
        return True

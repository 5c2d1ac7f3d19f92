"""The registry the double also is (registry.ollama.ai and its CDN on the same port):
manifests and blobs by tag or digest, byte ranges, redirects, bearer tokens."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.double.blobs import MT_MANIFEST, Blob
from tests.double.catalog import Artifacts, CatalogModel
from tests.double.store import ModelStore
from tests.double.transport import BaseHandler
from tests.double.wire import MIB, rfc3339

REGISTRY_SERVICE = "test-registry"
REGISTRY_RE = re.compile(r"^/v2/(?P<repo>.+)/(?P<what>manifests|blobs)/(?P<ref>[^/]+)$")
CDN_RE = re.compile(r"^/cdn/blobs/sha256/[0-9a-f]{2}/(?P<hex>[0-9a-f]{64})/data$")


class RegistryRoutes(BaseHandler):
    """`/v2/...` manifests and blobs, `/cdn/...` redirect targets, `/token`."""

    def _registry_error(self, status: int, code: str, message: str, detail: Any = None,
                        extra: dict[str, str] | None = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if detail is not None:
            error["detail"] = detail
        self.send_json(status, {"errors": [error]}, extra)

    def registry(self, path: str) -> None:
        d = self.d
        match = REGISTRY_RE.match(path)
        repo = None
        if match:
            parts = match["repo"].split("/")
            repo = "/".join(parts[-2:]) if len(parts) > 1 else f"library/{parts[0]}"
        if d.registry_auth and not d._token_ok(self.headers.get("Authorization"), repo):
            scope = f',scope="repository:{repo}:pull"' if repo else ""
            challenge = f'Bearer realm="{d.url}/token",service="{REGISTRY_SERVICE}"{scope}'
            detail = [{"Type": "repository", "Name": repo, "Action": "pull"}] if repo else None
            self._registry_error(401, "UNAUTHORIZED", "authentication required", detail,
                                 {"WWW-Authenticate": challenge})
            return
        if match is None:
            self.send_json(200, {}, {"Docker-Distribution-Api-Version": "registry/2.0"})
            return
        assert repo is not None
        namespace, model = repo.split("/")
        ref = match["ref"]
        if match["what"] == "manifests":
            arts = d._registry_manifest(namespace, model, ref)
            if arts is None:
                self._registry_error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Tag": ref})
                return
            digest = "sha256:" + arts.digest
            self.send_bytes(200, arts.manifest, MT_MANIFEST,
                            {"Docker-Content-Digest": digest, "Etag": f'"{digest}"'})
            return
        blob = d._registry_blob(namespace, model, ref)
        if blob is None:
            self._registry_error(404, "BLOB_UNKNOWN", "blob unknown to registry", ref)
            return
        if d.blob_redirect:
            hexd = blob.hex
            location = f"{d.url}/cdn/blobs/sha256/{hexd[:2]}/{hexd}/data?X-Amz-Expires=1200"
            self.send_bytes(307, b"", None, {"Location": location})
            return
        self._serve_blob(blob)

    def cdn(self, path: str) -> None:
        match = CDN_RE.match(path)
        assert match is not None
        blob = self.d._find_blob("sha256:" + match["hex"])
        if blob is None:
            self.send_bytes(404, b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey"
                                 b"</Code></Error>", "application/xml")
            return
        self._serve_blob(blob)

    def _serve_blob(self, blob: Blob) -> None:
        d = self.d
        size = blob.size
        start, end, status = 0, size, 200
        extra = {"Accept-Ranges": "bytes", "Docker-Content-Digest": blob.digest,
                 "Etag": f'"{blob.digest}"'}
        header = self.headers.get("Range")
        if header:
            match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
            if match and (match[1] or match[2]):
                if match[1]:
                    start = int(match[1])
                    end = min(int(match[2]) + 1, size) if match[2] else size
                else:
                    start, end = max(0, size - int(match[2])), size
                if start >= size or start >= end:
                    self.send_bytes(416, b"", None, {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
                extra["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        self._head(status, "application/octet-stream", end - start, extra)
        if self.command == "HEAD":
            return
        name = self._request_model(self.rec.path, None)
        faults = [f for f in d._matching_faults(("drop", "stall"), self.rec.path, name)
                  if f.matches_blob(blob.digest)]
        fired: set[int] = set()
        pos = start
        while pos < end:
            sent = pos - start
            n = min(MIB, end - pos)
            for f in faults:
                point = f.after_bytes or 0
                if id(f) in fired or f.spent:
                    continue
                if sent >= point:
                    if not d._consume(f):
                        continue
                    fired.add(id(f))
                    if f.kind == "drop":
                        self.drop()
                    self.wait(f.seconds)
                elif sent + n > point:
                    n = point - sent
            self._write(blob.read(pos, n))
            pos += n

    def token(self) -> None:
        d = self.d
        scopes = [v for k, v in parse_qsl(urlsplit(self.path).query) if k == "scope"]
        repos: set[str] = set()
        for scope in " ".join(scopes).split():
            kind, _, rest = scope.partition(":")
            if kind == "repository" and ":" in rest:
                repos.add(rest.rsplit(":", 1)[0].lower())
        token = d._issue_token(repos)
        self.send_json(200, {"token": token, "access_token": token, "expires_in": 300,
                             "issued_at": rfc3339(time.time_ns())})


class RegistryStore(ModelStore):
    """What the registry serves: catalog models by repository, every revision's blobs,
    and the bearer tokens it issued."""

    def _issue_token(self, repos: set[str]) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = repos
        return token

    def _token_ok(self, header: str | None, repo: str | None) -> bool:
        if not header or not header.lower().startswith("bearer "):
            return False
        with self._lock:
            repos = self._tokens.get(header.split(None, 1)[1].strip())
        if repos is None:
            return False
        return repo is None or repo.lower() in repos

    def _catalog_for_repo(self, namespace: str, model: str) -> list[CatalogModel]:
        ns, mo = namespace.lower(), model.lower()
        with self._lock:
            found = [m for m in self._catalog.values()
                     if m.model_name.namespace.lower() == ns and m.model_name.model.lower() == mo]
        found.sort(key=lambda m: m.model_name.host.lower() != "registry.ollama.ai")
        return found

    def _registry_manifest(self, namespace: str, model: str, ref: str) -> Artifacts | None:
        for m in self._catalog_for_repo(namespace, model):
            current = self._revisions.get(m.key, 0)
            if ref.startswith("sha256:"):
                for revision in range(current, -1, -1):
                    arts = m.artifacts(revision)
                    if "sha256:" + arts.digest == ref:
                        self._index(arts)
                        return arts
            elif m.model_name.tag.lower() == ref.lower():
                arts = m.artifacts(current)
                self._index(arts)
                return arts
        return None

    def _index(self, arts: Artifacts) -> None:
        with self._lock:
            self._registry_index.update(arts.blobs)

    def _registry_blob(self, namespace: str, model: str, digest: str) -> Blob | None:
        for m in self._catalog_for_repo(namespace, model):
            for revision in range(self._revisions.get(m.key, 0), -1, -1):
                arts = m.artifacts(revision)
                blob = arts.blobs.get(digest)
                if blob is not None:
                    self._index(arts)
                    return blob
        return None

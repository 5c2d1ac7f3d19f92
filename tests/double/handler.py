"""The request handler: record, apply the faults that fire before an answer, route;
and the plain Ollama endpoints (`/`, version, tags, ps, show)."""

from __future__ import annotations

import json
import re
import sys
import traceback
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from tests.double.create import ModelRoutes
from tests.double.generate import RunRoutes
from tests.double.names import InvalidName, ModelName, parse_name
from tests.double.openai import V1_MODEL_RE, OpenAIRoutes
from tests.double.pull import PullRoutes
from tests.double.registry import CDN_RE, REGISTRY_RE, RegistryRoutes
from tests.double.state import RecordedRequest
from tests.double.transport import (
    TEXT_CT,
    ApiError,
    ClientGone,
    Dropped,
    Stopping,
)
from tests.double.wire import rfc3339

_BLOBS_API_RE = re.compile(r"^/api/blobs/(?P<digest>sha256[:-][0-9a-f]{64})$")


class Handler(PullRoutes, RunRoutes, ModelRoutes, OpenAIRoutes, RegistryRoutes):
    """One request: recorded, faults that fire before an answer applied, then routed to
    the endpoint (each group of endpoints is a base class from its own module)."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        d = self.d
        self._headers_sent = False
        url = urlsplit(self.path)
        path = url.path or "/"
        body = self._read_body()
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        self.rec = RecordedRequest(
            method=method, path=path, query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()}, body=body, json=parsed)
        d._record(self.rec)
        try:
            if d._stopping.is_set():
                raise Stopping()
            if self._faults_before(method, path, parsed):
                return
            self._route(method, path, body, parsed)
        except ApiError as e:
            self.send_json(e.status, {"error": e.message})
        except Dropped:
            self.close_connection = True
            raise
        except (ClientGone, Stopping):
            self.close_connection = True
            raise
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            raise ClientGone() from None
        except Exception as e:  # a bug in the double: say so loudly, answer 500
            traceback.print_exc(file=sys.stderr)
            if not self._headers_sent:
                self.send_json(500, {"error": f"test double bug: {e!r}"})
            self.close_connection = True

    # ---- faults before routing ----------------------------------------------------------
    def _request_model(self, path: str, parsed: Any) -> ModelName | None:
        raw = None
        if isinstance(parsed, dict):
            raw = parsed.get("model") or parsed.get("name") or parsed.get("source")
        match = REGISTRY_RE.match(path)
        if match and raw is None and match["what"] == "manifests":
            parts = match["repo"].split("/")
            ref = match["ref"]
            raw = f"{'/'.join(parts[-2:])}:{ref}" if not ref.startswith("sha256:") else None
        if not isinstance(raw, str):
            return None
        try:
            return parse_name(raw)
        except InvalidName:
            return None

    def _faults_before(self, method: str, path: str, parsed: Any) -> bool:
        d = self.d
        name = self._request_model(path, parsed)
        for f in d._matching_faults(("slow_headers",), path, name):
            if d._consume(f):
                self.wait(1.0 if f.seconds is None else f.seconds)
        for f in d._matching_faults(("http_500",), path, name):
            if d._consume(f):
                self.send_json(500, {"error": f.message or "internal server error"})
                return True
        # In a pull and on a blob GET, drop/stall fire at a byte position (later).
        positional_here = path == "/api/pull" or (
            method == "GET" and (("/blobs/" in path and path.startswith("/v2/"))
                                 or path.startswith("/cdn/")))
        if positional_here:
            return False
        for f in d._matching_faults(("drop", "stall"), path, name):
            if d._consume(f):
                if f.kind == "drop":
                    self.drop()
                self.wait(f.seconds)
        return False

    # ---- routing -----------------------------------------------------------------------
    def _route(self, method: str, path: str, body: bytes, parsed: Any) -> None:
        d = self.d
        get = method in ("GET", "HEAD")
        if path.startswith(("/v2/", "/v2")) and get and (path in ("/v2", "/v2/")
                                                         or REGISTRY_RE.match(path)):
            self.registry(path)
            return
        if path.startswith("/cdn/") and get and CDN_RE.match(path):
            self.cdn(path)
            return
        if path == "/token" and method == "GET":
            self.token()
            return
        simple: dict[tuple[str, str], Callable[[], None]] = {
            ("GET", "/"): self.root,
            ("HEAD", "/"): self.root,
            ("GET", "/api/version"): self.api_version,
            ("HEAD", "/api/version"): self.api_version,
            ("GET", "/api/tags"): self.api_tags,
            ("HEAD", "/api/tags"): self.api_tags,
            ("GET", "/api/ps"): self.api_ps,
            ("POST", "/api/show"): self.api_show,
            ("POST", "/api/pull"): self.api_pull,
            ("POST", "/api/push"): self.api_push,
            ("POST", "/api/generate"): self.api_generate,
            ("POST", "/api/chat"): self.api_chat,
            ("POST", "/api/embed"): self.api_embed,
            ("POST", "/api/embeddings"): self.api_embeddings,
            ("POST", "/api/create"): self.api_create,
            ("DELETE", "/api/delete"): self.api_delete,
            ("POST", "/api/copy"): self.api_copy,
            ("GET", "/v1/models"): self.v1_models,
            ("POST", "/v1/chat/completions"): self.v1_chat,
        }
        handler = simple.get((method, path))
        if handler is not None:
            if path not in ("/", "/api/version"):
                d._materialize_all()
            handler()
            return
        if method == "POST" and path == "/v1/responses" and d.supports_responses:
            d._materialize_all()
            self.v1_responses()
            return
        match = _BLOBS_API_RE.match(path)
        if match and method in ("HEAD", "POST"):
            self.api_blobs(method, match["digest"].replace("-", ":"), body)
            return
        match = V1_MODEL_RE.match(path)
        if match and method == "GET":
            d._materialize_all()
            self.v1_model(match["name"])
            return
        self.send_not_found()

    # ---- Ollama: basics ------------------------------------------------------------------
    def root(self) -> None:
        self.send_bytes(200, b"Ollama is running", TEXT_CT)

    def api_version(self) -> None:
        self.send_json(200, {"version": self.d.version})

    def api_tags(self) -> None:
        models = []
        for m in self.d._installed_sorted():
            entry = {"name": m.name.short, "model": m.name.short,
                     "modified_at": rfc3339(m.modified_ns), "size": m.size, "digest": m.digest,
                     "details": m.details()}
            if self.d.llama_server:  # 0.30 added these (a real 0.32.15 sends them)
                entry["details"].update(context_length=m.source.context_length,
                                        embedding_length=m.source.embedding_length)
                entry["capabilities"] = self.d._caps(m)
            models.append(entry)
        self.send_json(200, {"models": models})

    def api_ps(self) -> None:
        self.send_json(200, {"models": [{
            "name": m.name,
            "model": m.name,
            "size": m.size,
            "digest": m.digest,
            "details": m.details,
            "expires_at": rfc3339(m.expires_ns),
            "size_vram": m.size_vram,
            "context_length": m.context_length,
        } for m in self.d._loaded_sorted()]})

    def api_show(self) -> None:
        d = self.d
        req = self._json()
        if not (req.get("model") or req.get("name")):
            raise ApiError(400, "model is required")
        raw, name = self._request_name(req)
        inst = d._get_installed(name)
        if inst is None:
            raise ApiError(404, f"model '{name.short if d.llama_server else raw}' not found")
        self.send_json(200, d._show(inst, verbose=bool(req.get("verbose"))))
